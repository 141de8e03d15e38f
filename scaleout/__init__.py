"""Scale-out on Dask: lead partitions and batch scoring on a cluster."""
