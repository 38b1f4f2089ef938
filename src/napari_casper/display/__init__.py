"""Qt-free layer data: SpatialData elements, spot rasters, value layers, gene display."""
