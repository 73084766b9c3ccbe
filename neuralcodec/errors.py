"""Error types shared by every part of neuralcodec.

Every malformed bitstream raises :class:`BitstreamError`, a :class:`ValueError`,
so callers can catch one type whatever went wrong inside a file.
"""

from __future__ import annotations


class NeuralCodecError(Exception):
    """Base class of every error raised on purpose by neuralcodec."""


class BitstreamError(NeuralCodecError, ValueError):
    """A bitstream or ``.ncf`` file is truncated, corrupted, foreign or malformed."""


class ModelMismatchError(BitstreamError):
    """A bitstream was made by a different model (or different weights) than the one decoding it."""


class ModelNotFoundError(NeuralCodecError, KeyError):
    """No model of that name is registered or shipped."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "model not found"


class MediaError(NeuralCodecError, ValueError):
    """A media file cannot be read or written (unknown format, unreadable, unsupported layout)."""
