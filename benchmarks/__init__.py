"""Benchmarks of the scoring paths, the feature build, training and Dask scale-out (`make bench`)."""
