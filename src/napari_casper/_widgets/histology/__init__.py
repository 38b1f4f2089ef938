"""The Histology dock widget and its panels."""
