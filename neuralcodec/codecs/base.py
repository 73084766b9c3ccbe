"""The :class:`Codec` base class: the contract every codec of the toolkit follows.

A codec is a ``torch.nn.Module`` with two paths:

* the continuous path for training, ``forward(x)`` (reconstruction, likelihoods, latent),
  and ``analysis(x)`` / ``synthesis(y)`` without entropy coding;
* the coding path, ``compress(x) -> bytes``, ``decompress(blob) -> Tensor`` and
  ``latents(blob) -> Tensor`` (entropy decoding only, no synthesis network).

Batched inputs give batched outputs (a list of ``bytes``); a single item (no batch
dimension) gives a single ``bytes``.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import torch
from torch import nn


class Codec(nn.Module):
    """Base class of every neuralcodec codec.

    Subclasses set :attr:`architecture` (the registry key of the class) and
    :attr:`modality`, keep the constructor arguments in :attr:`config` (so the
    registry can rebuild the model from a JSON model card), and implement the
    methods below.
    """

    architecture: ClassVar[str] = ""
    modality: ClassVar[str] = ""

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.config: dict[str, Any] = dict(config)
        # The registry sets this to the shipped model's name ("walloc-image-16x").
        self.name: str = self.architecture
        self._hash_cache: str | None = None  # weights_hash() in eval mode (see there)

    # -- continuous path -------------------------------------------------
    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        """Media tensor -> continuous latent (no quantization, no entropy coding)."""
        raise NotImplementedError

    def synthesis(self, y: torch.Tensor) -> torch.Tensor:
        """Latent -> reconstructed media tensor."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        """Training pass: ``{"x_hat": ..., "likelihoods": {...}, "y": ...}``."""
        raise NotImplementedError

    # -- coding path ------------------------------------------------------
    def compress(self, x: torch.Tensor) -> bytes | list[bytes]:
        """Media tensor (batched or single) -> ``.ncf`` bytes (a list for a batch)."""
        raise NotImplementedError

    def decompress(self, blob: bytes | list[bytes]) -> torch.Tensor | list[torch.Tensor]:
        """``.ncf`` bytes -> reconstructed media tensor."""
        raise NotImplementedError

    def latents(self, blob: bytes | list[bytes]) -> torch.Tensor | list[torch.Tensor]:
        """``.ncf`` bytes -> quantized latent, by entropy decoding only."""
        raise NotImplementedError

    # -- identity -----------------------------------------------------------
    def weights_hash(self) -> str:
        """Short hex hash of the parameters and buffers; written into every bitstream.

        Decoding a file with different weights is then a clear error, not garbage. In eval
        mode the hash is computed once and cached (every compress/decompress asks for it);
        ``train()``/``eval()`` and loading a state dict forget it, and a subclass whose
        ``update()`` rebuilds buffers must reset ``self._hash_cache`` too.
        """
        if self._hash_cache is not None and not self.training:
            return self._hash_cache
        h = hashlib.sha256()
        for key, value in sorted(self.state_dict().items()):
            t = value.detach().to("cpu").contiguous()
            h.update(key.encode())
            h.update(str(t.dtype).encode())
            h.update(str(tuple(t.shape)).encode())
            # reshape(-1): a 0-d tensor cannot be viewed as bytes directly
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        digest = h.hexdigest()[:16]
        if not self.training:
            self._hash_cache = digest
        return digest

    def train(self, mode: bool = True) -> "Codec":
        self._hash_cache = None
        return super().train(mode)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._hash_cache = None
        super()._load_from_state_dict(*args, **kwargs)

    def check_origin(self, container: Any) -> None:
        """Raise :class:`~neuralcodec.ModelMismatchError` unless ``container`` was made by this model."""
        if container.codec != self.name or container.weights_hash != self.weights_hash():
            from ..errors import ModelMismatchError

            raise ModelMismatchError(
                f"this file was made by {container.codec!r} (weights {container.weights_hash}); "
                f"this model is {self.name!r} (weights {self.weights_hash()})"
            )

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")
