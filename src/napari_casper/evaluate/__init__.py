"""Imputation evaluation: Li et al. 2022 metrics (:mod:`.metrics`), the strict K-fold-over-genes
protocol and its method registry (:mod:`.protocol`), and the baselines (:mod:`.baselines`)."""
