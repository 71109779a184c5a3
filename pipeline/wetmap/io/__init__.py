"""Reading and writing rasters and vectors: the only place that touches files."""
