"""Media I/O, training datasets, compressed shards and latent datasets."""

from .distributed import pack_distributed
from .latent import LatentDataset, decode_latents
from .shards import pack, read_index, read_shard, unpack

__all__ = ["LatentDataset", "decode_latents", "pack", "pack_distributed", "read_index", "read_shard", "unpack"]
