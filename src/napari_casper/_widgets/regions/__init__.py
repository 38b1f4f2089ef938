"""The Tumour regions dock widget and its panels."""
