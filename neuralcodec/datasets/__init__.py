"""Media I/O, training datasets, compressed shards and latent datasets."""

from .audio import AudioCropDataset
from .distributed import pack_distributed
from .images import ImageCropDataset
from .latent import LatentDataset, decode_latents
from .shards import pack, read_index, read_shard, unpack
from .video import VideoCropDataset

__all__ = ["AudioCropDataset", "ImageCropDataset", "LatentDataset", "VideoCropDataset", "decode_latents", "pack",
           "pack_distributed", "read_index", "read_shard", "unpack"]
