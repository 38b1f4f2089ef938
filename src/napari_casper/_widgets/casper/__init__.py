"""The CASPER imputation dock widget and its panels."""
