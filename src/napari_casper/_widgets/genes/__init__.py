"""The Genes dock widget."""
