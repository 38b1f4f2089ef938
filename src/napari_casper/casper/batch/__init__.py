"""Out-of-core CASPER imputation: chunked, resumable, distributed zarr output."""
