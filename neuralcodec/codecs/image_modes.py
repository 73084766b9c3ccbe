"""Gray / RGB / RGBA handling and ``.ncf`` header checks shared by the image codecs.

The image networks see RGB only: gray goes through as RGB and comes back as the channel
mean; RGBA sends RGB through the network and keeps its alpha plane losslessly (zlib of the
8-bit values) in a section named ``alpha``. An RGB(A) image whose three colour planes are
identical (a black-and-white photo saved as RGB) is marked ``"gray": true`` in the header and
decodes to identical planes too (the channel mean), like a gray image: the network's small
colour errors on such an image are pure distortion.

>>> import torch
>>> rgb, alpha, mode = split_image_modes(torch.rand(2, 4, 5, 6))
>>> rgb.shape, alpha.shape, mode
(torch.Size([2, 3, 5, 6]), torch.Size([2, 5, 6]), 'RGBA')
"""

from __future__ import annotations

import zlib
from typing import Any, Callable

import torch
from torch import Tensor

from ..entropy.container import Container
from ..errors import BitstreamError

MAX_PIXELS = 1 << 28  # largest image we agree to decode (about 268 MP)
CHANNELS_OF_MODE = {"L": 1, "RGB": 3, "RGBA": 4}


def split_image_modes(x: Tensor) -> tuple[Tensor, Tensor | None, str]:
    """``(B, C, H, W)`` in [0, 1] with C in {1, 3, 4} -> (RGB for the network, alpha or None, mode)."""
    c = x.shape[1]
    if c == 1:
        return x.expand(-1, 3, -1, -1), None, "L"
    if c == 3:
        return x, None, "RGB"
    if c == 4:
        return x[:, :3], x[:, 3], "RGBA"
    raise ValueError(f"expected 1 (gray), 3 (RGB) or 4 (RGBA) channels, got {c}")


def gray_content(rgb: Tensor) -> list[bool]:
    """Per item of ``(B, 3, H, W)``: are the three colour planes exactly equal?

    >>> gray_content(torch.rand(1, 1, 2, 2).expand(2, 3, 2, 2)), gray_content(torch.rand(1, 3, 2, 2))
    ([True, True], [False])
    """
    same = (rgb[:, 0] == rgb[:, 1]) & (rgb[:, 1] == rgb[:, 2])
    return [bool(v) for v in same.flatten(1).all(1)]


def image_header(mode: str, latent: list[int], digest: str, gray: bool) -> dict[str, Any]:
    """The image codecs' metadata entry; ``gray`` is written only when true (colour files are unchanged)."""
    info: dict[str, Any] = {"mode": mode, "latent": latent, "digest": digest}
    if gray and mode != "L":
        info["gray"] = True
    return info


def alpha_section(alpha: Tensor) -> bytes:
    """One image's ``(H, W)`` alpha plane in [0, 1] -> the lossless ``alpha`` section (zlib of uint8)."""
    a8 = torch.round(alpha.clamp(0, 1) * 255).to(torch.uint8).cpu().numpy().tobytes()
    return zlib.compress(a8, 9)


def restore_image_mode(rgb: Tensor, mode: str, container: Container, gray: bool = False) -> Tensor:
    """Decoded ``(3, H, W)`` RGB -> the encoder input's mode (gray: channel mean; RGBA: add alpha).

    ``gray``: the encoder's RGB planes were identical, so the output's are too (their mean).
    """
    if mode == "L":
        return rgb.mean(0, keepdim=True)
    if gray:
        rgb = rgb.mean(0, keepdim=True).expand(3, -1, -1)
    if mode != "RGBA":
        return rgb
    h, w = rgb.shape[1:]
    try:
        raw = zlib.decompressobj().decompress(container.sections["alpha"], h * w + 1)
    except zlib.error as e:
        raise BitstreamError(f"corrupted alpha section: {e}") from None
    if len(raw) != h * w:
        raise BitstreamError("alpha section has the wrong size")
    alpha = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(1, h, w).to(rgb.device).float() / 255
    return torch.cat([rgb, alpha], 0)


def open_image_container(
    codec: Any, blob: bytes, key: str, label: str, latent_size: Callable[[int, int], list[int]]
) -> tuple[Container, dict[str, Any]]:
    """Parse an image ``.ncf`` made by ``codec`` and check its header before any decoding.

    ``key`` names the codec's metadata entry (``{"mode", "latent", "digest"}`` and an optional
    ``"gray": true``), ``label`` is
    the codec family for messages, ``latent_size(h, w)`` the latent size the image implies.
    Raises :class:`~neuralcodec.ModelMismatchError` for another model's file and
    :class:`~neuralcodec.BitstreamError` for anything inconsistent.
    """
    c = Container.from_bytes(blob)
    codec.check_origin(c)
    info = c.metadata.get(key) if isinstance(c.metadata, dict) else None
    shape = tuple(c.shape)
    if c.modality != "image" or not isinstance(info, dict) or len(shape) != 3:
        raise BitstreamError(f"not a {label} image file (missing or malformed '{key}' metadata)")
    mode, latent, digest = info.get("mode"), info.get("latent"), info.get("digest")
    if set(info) - {"mode", "latent", "digest", "gray"} or info.get("gray", True) is not True:
        raise BitstreamError(f"malformed '{key}' metadata")
    # the header is untrusted JSON: a list or object as the mode must not reach the dict lookup
    chans = CHANNELS_OF_MODE.get(mode) if isinstance(mode, str) else None
    if chans is None or shape[0] != chans or (mode == "L" and "gray" in info):
        raise BitstreamError(f"bad image mode {mode!r} for shape {shape}")
    h, w = shape[1], shape[2]
    if h * w > MAX_PIXELS:
        raise BitstreamError(f"image of {h}x{w} pixels is larger than this decoder accepts")
    if latent != latent_size(h, w) or not isinstance(digest, str):
        raise BitstreamError(f"latent size {latent!r} does not match the image size {h}x{w}")
    return c, info
