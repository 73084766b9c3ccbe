"""Input layouts shared by the quantizers.

Every quantizer accepts two layouts and answers in the layout it was given:

* channel-last ``(b, ..., d)``: sequences ``(b, n, d)`` (the default, as in vector-quantize-pytorch);
* channel-first ``(b, d, ...)``: feature maps of convolutional codecs, ``(b, d, t)``,
  ``(b, d, h, w)`` or ``(b, d, t, h, w)``.

Internally everything is a sequence ``(b, n, d)``; indices keep the spatial shape ``(b, ...)``.
"""

from __future__ import annotations

from einops import pack, rearrange, unpack
from torch import Tensor

PackedShape = list  # what einops.pack returns to undo the flattening


def resolve_channel_last(channel_last: bool, accept_image_fmap: bool) -> bool:
    """``accept_image_fmap=True`` (vector-quantize-pytorch's flag) means channel-first input."""
    return channel_last and not accept_image_fmap


def to_sequence(x: Tensor, dim: int, channel_last: bool, name: str) -> tuple[Tensor, PackedShape]:
    """``(b, ..., d)`` or ``(b, d, ...)`` -> ``(b, n, d)`` and the shape needed to undo it."""
    if x.ndim < 3:
        raise ValueError(
            f"{name} expects a batched input with at least one sequence/spatial axis, "
            f"(b, n, {dim}) or (b, {dim}, ...), got shape {tuple(x.shape)}"
        )
    channel_axis = -1 if channel_last else 1
    if x.shape[channel_axis] != dim:
        layout = "(b, ..., d) channel-last" if channel_last else "(b, d, ...) channel-first"
        raise ValueError(
            f"{name} has dim={dim} but the input's channel axis ({layout}) has size "
            f"{x.shape[channel_axis]}; input shape {tuple(x.shape)}"
        )
    if not channel_last:
        x = rearrange(x, "b d ... -> b ... d")
    seq, packed_shape = pack([x], "b * d")
    return seq, packed_shape


def from_sequence(seq: Tensor, packed_shape: PackedShape, channel_last: bool) -> Tensor:
    """Inverse of :func:`to_sequence`."""
    (x,) = unpack(seq, packed_shape, "b * d")
    return x if channel_last else rearrange(x, "b ... d -> b d ...")


def indices_to_spatial(indices: Tensor, packed_shape: PackedShape, pattern: str = "b *") -> Tensor:
    """``(b, n[, q])`` indices -> ``(b, ...[, q])``."""
    (out,) = unpack(indices, packed_shape, pattern)
    return out


def indices_to_sequence(indices: Tensor, pattern: str = "b *") -> tuple[Tensor, PackedShape]:
    """``(b, ...[, q])`` indices -> ``(b, n[, q])`` and the shape needed to undo it."""
    seq, packed_shape = pack([indices], pattern)
    return seq, packed_shape
