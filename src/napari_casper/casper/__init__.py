"""CASPER engine: preprocessing, centroids, network, training, checkpoints, imputation, results."""
