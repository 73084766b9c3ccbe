"""Group-residual vector quantization (HiFi-Codec's GRVQ).

The channels are split into ``groups`` equal parts and each part has its own
:class:`~neuralcodec.codecs.quantizers.rvq.ResidualVQ`. With quantizer dropout, an example uses
the same number of quantizers in every group, so ``n_quantizers`` sets one bitrate for all.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._layout import from_sequence, indices_to_sequence, indices_to_spatial, resolve_channel_last, to_sequence
from .rvq import ResidualVQ


class GroupedResidualVQ(nn.Module):
    """One :class:`ResidualVQ` per group of ``dim // groups`` channels.

    Args:
        dim: channels of the input (divisible by ``groups``).
        groups: number of channel groups.
        num_quantizers, codebook_size, quantize_dropout, ...: passed to every group's
            :class:`ResidualVQ` (``codebook_dim`` is per group).
        channel_last / accept_image_fmap: input layout, as for :class:`VectorQuantizer`.

    ``forward(x, n_quantizers=None)`` returns ``(quantized, indices, loss)`` with ``indices`` of shape
    ``(groups, b, ..., q)`` (as in vector-quantize-pytorch) and ``loss`` summed over groups.

    Example:
        >>> grvq = GroupedResidualVQ(dim=16, groups=2, num_quantizers=3, codebook_size=32)
        >>> q, idx, loss = grvq(torch.randn(2, 10, 16))
        >>> q.shape, idx.shape
        (torch.Size([2, 10, 16]), torch.Size([2, 2, 10, 3]))
        >>> _ = grvq.eval()
        >>> q, idx, _ = grvq(torch.randn(2, 10, 16), n_quantizers=1)
        >>> torch.equal(grvq.decode_indices(idx), q)
        True
    """

    def __init__(
        self,
        *,
        dim: int,
        groups: int = 1,
        channel_last: bool = True,
        accept_image_fmap: bool = False,
        **rvq_kwargs,
    ) -> None:
        super().__init__()
        if groups < 1 or dim % groups != 0:
            raise ValueError(f"dim ({dim}) must be divisible by groups ({groups})")
        self.dim = dim
        self.groups = groups
        self.channel_last = resolve_channel_last(channel_last, accept_image_fmap)
        self.rvqs = nn.ModuleList(ResidualVQ(dim=dim // groups, channel_last=True, **rvq_kwargs) for _ in range(groups))
        self.num_quantizers = self.rvqs[0].num_quantizers
        self.codebook_size = self.rvqs[0].codebook_size

    @property
    def codebooks(self) -> Tensor:
        """``(groups, num_quantizers, codebook_size, codebook_dim)``."""
        return torch.stack([rvq.codebooks for rvq in self.rvqs])

    def stats(self) -> list[list[dict[str, float]]]:
        """Training usage statistics, ``[group][quantizer]`` (see :meth:`VectorQuantizer.stats`)."""
        return [rvq.stats() for rvq in self.rvqs]

    def reset_stats(self) -> None:
        """Start a new statistics window in every quantizer."""
        for rvq in self.rvqs:
            rvq.reset_stats()

    def forward(
        self, x: Tensor, n_quantizers: int | Tensor | None = None, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Quantize ``x``; returns ``(quantized, indices (groups, b, ..., q), loss)``.

        Example:
            >>> grvq = GroupedResidualVQ(dim=8, groups=4, num_quantizers=2, codebook_size=16, channel_last=False)
            >>> q, idx, _ = grvq(torch.randn(2, 8, 3, 5, 5))
            >>> q.shape, idx.shape
            (torch.Size([2, 8, 3, 5, 5]), torch.Size([4, 2, 3, 5, 5, 2]))
        """
        seq, packed_shape = to_sequence(x, self.dim, self.channel_last, type(self).__name__)
        if mask is not None:
            mask = indices_to_sequence(mask)[0]
            if mask.shape != seq.shape[:2]:
                raise ValueError("mask must have the shape of the input without its channel axis")
        if n_quantizers is None and self.training:
            # One draw per example, shared by all groups: an example has one bitrate.
            n_quantizers = self.rvqs[0].sample_quantizer_counts(seq.shape[0], seq.device)
        outputs, indices, loss = [], [], seq.new_zeros((), dtype=torch.float32)
        for rvq, part in zip(self.rvqs, seq.chunk(self.groups, dim=-1)):
            q, idx, group_loss = rvq._forward_sequence(part, n_quantizers, mask)
            outputs.append(q)
            indices.append(indices_to_spatial(idx, packed_shape, "b * q"))
            loss = loss + group_loss
        quantized = from_sequence(torch.cat(outputs, dim=-1), packed_shape, self.channel_last)
        return quantized, torch.stack(indices), loss

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Rebuild the output from indices ``(groups, b, ..., q)``; bit-exact in eval mode.

        Example:
            >>> grvq = GroupedResidualVQ(dim=8, groups=2, num_quantizers=2, codebook_size=16).eval()
            >>> grvq.decode_indices(torch.zeros(2, 1, 5, 2, dtype=torch.long)).shape
            torch.Size([1, 5, 8])
        """
        if indices.ndim < 3 or indices.shape[0] != self.groups:
            raise ValueError(f"indices must have shape ({self.groups}, b, ..., q), got {tuple(indices.shape)}")
        outputs, packed_shape = [], None
        for rvq, group_indices in zip(self.rvqs, indices):
            rvq._check_indices(group_indices)
            seq, packed_shape = indices_to_sequence(group_indices.long(), "b * q")
            outputs.append(rvq._decode_sequence(seq))
        return from_sequence(torch.cat(outputs, dim=-1), packed_shape, self.channel_last)

    get_output_from_indices = decode_indices  # vector-quantize-pytorch's name
