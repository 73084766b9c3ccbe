"""Codecs: the :class:`Codec` contract, the registry of shipped models, and the models."""

from .base import Codec
from .registry import available, build, load, register_architecture, save

from .quantizers import FSQ, GroupedResidualVQ, ResidualVQ, VectorQuantizer
from .walloc import WaLLoC  # noqa: F401  (registers the 'walloc' architecture)
from .walloc_audio import WaLLoCAudio  # noqa: F401  (registers the 'walloc-audio' architecture)
from .hyperprior import HyperpriorCodec  # noqa: F401  (registers the 'hyperprior' architecture)
from .walloc_video import WaLLoCVideo  # noqa: F401  (registers the 'walloc-video' architecture)
from .walloc_audio_rvq import WaLLoCAudioRVQ  # noqa: F401  (registers the 'walloc-audio-rvq' architecture)

__all__ = ["Codec", "available", "build", "load", "register_architecture", "save"]
__all__ += ["VectorQuantizer", "ResidualVQ", "GroupedResidualVQ", "FSQ"]
