"""Reading and writing SpatialData stores, converting AnnData + images, packaged samples."""
