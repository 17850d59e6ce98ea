"""The neighbor graph of the mined neighbors and its algorithms: search and mining (search), the number of clusters
and graph partitions (num_clusters), where clustering heads start (head_init)."""
