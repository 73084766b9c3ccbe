"""Finite scalar quantization (Mentzer et al., 2023, "Finite Scalar Quantization: VQ-VAE Made Simple").

Each of ``len(levels)`` channels is bounded by a tanh to ``levels[i]`` values and rounded (with a
straight-through gradient); the implicit codebook is the grid of all combinations,
``prod(levels)`` codes, with no codebook to learn and nothing that can collapse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ._layout import from_sequence, indices_to_sequence, indices_to_spatial, resolve_channel_last, to_sequence
from .stats import codebook_stats


class FSQ(nn.Module):
    """Finite scalar quantizer with ``levels`` values per channel (e.g. ``[8, 5, 5, 5]``, 1000 codes).

    Args:
        levels: values per channel; the codebook has ``prod(levels)`` codes.
        dim: input channels; when it differs from ``len(levels)`` the input goes through a learned
            ``Linear(dim, len(levels))`` and the codes through ``Linear(len(levels), dim)``.
        eps: margin of the tanh bound, so rounding reaches every level.
        channel_last: ``True``: ``(b, ..., dim)``; ``False``: channel-first ``(b, dim, ...)``.
        channel_first: vector-quantize-pytorch's name for ``channel_last=False``.

    ``forward(x)`` returns ``(quantized, indices, loss)`` like the vector quantizers; ``loss`` is a zero
    scalar (FSQ needs no commitment loss). Codes lie in ``[-1, 1]`` per channel.

    Example:
        >>> fsq = FSQ(levels=[8, 5, 5, 5])
        >>> q, idx, loss = fsq(torch.randn(2, 10, 4))
        >>> q.shape, idx.shape, fsq.codebook_size
        (torch.Size([2, 10, 4]), torch.Size([2, 10]), 1000)
        >>> _ = fsq.eval()
        >>> q, idx, _ = fsq(torch.randn(2, 10, 4))
        >>> torch.equal(fsq.decode_indices(idx), q)
        True
    """

    def __init__(
        self,
        levels: Sequence[int],
        dim: int | None = None,
        *,
        eps: float = 1e-3,
        channel_last: bool = True,
        channel_first: bool = False,
    ) -> None:
        super().__init__()
        levels = [int(level) for level in levels]
        if not levels or any(level < 2 for level in levels):
            raise ValueError(f"levels must be a non-empty list of integers >= 2, got {levels}")
        self.levels = levels
        self.codebook_dim = len(levels)
        self.dim = self.codebook_dim if dim is None else dim
        self.codebook_size = math.prod(levels)
        self.eps = eps
        self.channel_last = resolve_channel_last(channel_last, channel_first)
        self.has_projections = self.dim != self.codebook_dim
        self.project_in = nn.Linear(self.dim, self.codebook_dim) if self.has_projections else nn.Identity()
        self.project_out = nn.Linear(self.codebook_dim, self.dim) if self.has_projections else nn.Identity()

        levels_t = torch.tensor(levels, dtype=torch.long)
        self.register_buffer("_levels", levels_t, persistent=False)
        # Mixed-radix place values: index = sum(digit_i * basis_i).
        self.register_buffer("_basis", torch.cumprod(torch.tensor([1] + levels[:-1]), 0), persistent=False)
        self.register_buffer("_half_width", (levels_t // 2).float(), persistent=False)
        self.register_buffer("usage", torch.zeros(self.codebook_size, dtype=torch.float64), persistent=False)

    def bound(self, z: Tensor) -> Tensor:
        """Squash each channel into ``(-L/2, L/2)`` (shifted by 1/2 for even ``L``) so rounding gives ``L`` values."""
        levels = self._levels.float()
        half = (levels - 1) * (1 + self.eps) / 2
        # Even levels are asymmetric around 0 ({-L/2, ..., L/2 - 1}): shift by 1/2.
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def _digits_to_indices(self, digits: Tensor) -> Tensor:
        return (digits * self._basis).sum(-1)

    def _indices_to_codes(self, indices: Tensor) -> Tensor:
        """``(...)`` indices -> ``(..., len(levels))`` codes in ``[-1, 1]``."""
        digits = (indices[..., None] // self._basis) % self._levels
        return (digits.float() - self._half_width) / self._half_width

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Codes ``(..., len(levels))`` (values of the grid) -> indices ``(...)``.

        Example:
            >>> fsq = FSQ(levels=[3, 4])
            >>> fsq.codes_to_indices(fsq.indices_to_codes(torch.arange(12))).tolist() == list(range(12))
            True
        """
        digits = torch.round(codes * self._half_width + self._half_width).long()
        return self._digits_to_indices(digits)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Indices ``(...)`` -> codes ``(..., len(levels))`` in ``[-1, 1]`` (before the output projection).

        Example:
            >>> FSQ(levels=[3, 4]).indices_to_codes(torch.tensor([0, 11])).tolist()
            [[-1.0, -1.0], [1.0, 0.5]]
        """
        self._check_indices(indices)
        return self._indices_to_codes(indices.long())

    @property
    def implicit_codebook(self) -> Tensor:
        """All ``prod(levels)`` codes, ``(codebook_size, len(levels))``."""
        return self._indices_to_codes(torch.arange(self.codebook_size, device=self._levels.device))

    def stats(self) -> dict[str, float]:
        """Usage statistics of the training vectors since construction or :meth:`reset_stats`."""
        return codebook_stats(self.usage)

    def reset_stats(self) -> None:
        """Start a new statistics window."""
        self.usage.zero_()

    def _check_indices(self, indices: Tensor) -> None:
        if indices.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool):
            raise ValueError(f"indices must be an integer tensor, got {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(
                f"indices must be in [0, {self.codebook_size}), got range [{int(indices.min())}, {int(indices.max())}]"
            )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Quantize ``x``; returns ``(quantized, indices, zero loss)``.

        Example:
            >>> q, idx, _ = FSQ(levels=[5, 5, 5], dim=16, channel_last=False)(torch.randn(1, 16, 8, 8))
            >>> q.shape, idx.shape
            (torch.Size([1, 16, 8, 8]), torch.Size([1, 8, 8]))
        """
        seq, packed_shape = to_sequence(x, self.dim, self.channel_last, type(self).__name__)
        bounded = self.bound(self.project_in(seq.float()))
        rounded = torch.round(bounded)
        indices = self._digits_to_indices((rounded + self._half_width).long())
        if self.training:
            self.usage += torch.bincount(indices.reshape(-1), minlength=self.codebook_size).to(self.usage.dtype)
        if self.training and torch.is_grad_enabled() and bounded.requires_grad:
            codes = (bounded + (rounded - bounded).detach()) / self._half_width  # straight-through rounding
            quantized = from_sequence(self.project_out(codes), packed_shape, self.channel_last)
        else:
            # Same code as decode_indices: the indices reproduce this output bit for bit.
            quantized = self._decode_sequence(indices, packed_shape)
        loss = seq.new_zeros((), dtype=torch.float32)
        return quantized, indices_to_spatial(indices, packed_shape), loss

    def _decode_sequence(self, indices: Tensor, packed_shape: list) -> Tensor:
        return from_sequence(self.project_out(self._indices_to_codes(indices)), packed_shape, self.channel_last)

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Rebuild the output from indices (shape of the input without its channel axis); bit-exact in eval.

        Example:
            >>> FSQ(levels=[8, 5, 5, 5]).decode_indices(torch.tensor([[0, 999]])).shape
            torch.Size([1, 2, 4])
        """
        self._check_indices(indices)
        seq, packed_shape = indices_to_sequence(indices.long())
        return self._decode_sequence(seq, packed_shape)

    get_output_from_indices = decode_indices  # vector-quantize-pytorch's name
