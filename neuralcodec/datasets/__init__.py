"""Media I/O, training datasets, compressed shards and latent datasets."""
