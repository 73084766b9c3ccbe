"""neuralcodec: neural compression of images, audio and video for compressed-domain learning.

>>> import neuralcodec
>>> isinstance(neuralcodec.available(), list)
True
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (
    BitstreamError,
    MediaError,
    ModelMismatchError,
    ModelNotFoundError,
    NeuralCodecError,
)


def available() -> list[str]:
    """Names of the shipped models that :func:`load` can build offline."""
    from .codecs.registry import available as _available

    return _available()


def load(name: str, device: str | None = None):
    """Build the shipped model ``name`` with its trained weights, offline.

    >>> import neuralcodec
    >>> # codec = neuralcodec.load("walloc-image-16x")   # once that model is shipped
    """
    from .codecs.registry import load as _load

    return _load(name, device=device)


__all__ = [
    "__version__",
    "available",
    "load",
    "BitstreamError",
    "MediaError",
    "ModelMismatchError",
    "ModelNotFoundError",
    "NeuralCodecError",
]
