"""Residual vector quantization (SoundStream, EnCodec, DAC) with per-example quantizer dropout.

Quantizer ``i`` quantizes what quantizers ``0..i-1`` left over; the output is the sum of the
codes. With ``quantize_dropout`` each training example uses a random number of quantizers
(DAC's per-example dropout), so the first ``n`` quantizers alone give a usable lower bitrate:
at inference ``forward(x, n_quantizers=n)`` uses only the first ``n``.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from ._layout import from_sequence, indices_to_sequence, indices_to_spatial, resolve_channel_last, to_sequence
from .vq import VectorQuantizer, rotation_trick, straight_through

DROPPED = -1  # index of a quantizer that an example did not use


class ResidualVQ(nn.Module):
    """A stack of :class:`VectorQuantizer`, each quantizing the residual of the ones before.

    Args:
        dim: channels of the input.
        num_quantizers: number of residual quantizers ``Q``.
        codebook_size: codes per quantizer.
        codebook_dim: when it differs from ``dim``, all quantizers work in a ``codebook_dim`` space
            behind one learned input projection and one output projection.
        quantize_dropout: per-example quantizer dropout in training. ``True`` gives every example a
            random number of quantizers in ``[quantize_dropout_cutoff_index + 1, Q]``; a float ``p``
            does so for a random fraction ``p`` of the examples and uses all ``Q`` for the others
            (DAC trains with ``p = 0.5``).
        quantize_dropout_cutoff_index: the first quantizers up to this index are always used.
        rotation_trick: gradients by the rotation trick from the input to the summed codes.
        channel_last / accept_image_fmap: input layout, as for :class:`VectorQuantizer`.
        **vq_kwargs: passed to every :class:`VectorQuantizer` (``decay``, ``kmeans_init``,
            ``threshold_ema_dead_code``, ``use_cosine_sim``, ``sim_vq``, ...).

    ``forward(x, n_quantizers=None)`` returns ``(quantized, indices, loss)``: ``indices`` has shape
    ``(b, ..., q)`` (``q = n_quantizers`` or ``Q``; ``-1`` where an example dropped a quantizer) and
    ``loss`` is the sum of the quantizers' losses.

    Example:
        >>> rvq = ResidualVQ(dim=16, num_quantizers=4, codebook_size=64, quantize_dropout=True)
        >>> q, idx, loss = rvq(torch.randn(2, 10, 16))
        >>> q.shape, idx.shape
        (torch.Size([2, 10, 16]), torch.Size([2, 10, 4]))
        >>> _ = rvq.eval()
        >>> q, idx, loss = rvq(torch.randn(2, 10, 16), n_quantizers=2)
        >>> idx.shape, torch.equal(rvq.decode_indices(idx), q)
        (torch.Size([2, 10, 2]), True)
    """

    def __init__(
        self,
        *,
        dim: int,
        num_quantizers: int,
        codebook_size: int,
        codebook_dim: int | None = None,
        quantize_dropout: bool | float = False,
        quantize_dropout_cutoff_index: int = 0,
        rotation_trick: bool = False,
        channel_last: bool = True,
        accept_image_fmap: bool = False,
        **vq_kwargs,
    ) -> None:
        super().__init__()
        if num_quantizers < 1:
            raise ValueError(f"num_quantizers must be >= 1, got {num_quantizers}")
        dropout = float(quantize_dropout)
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"quantize_dropout must be a bool or a fraction in [0, 1], got {quantize_dropout}")
        if not 0 <= quantize_dropout_cutoff_index < num_quantizers:
            raise ValueError(
                f"quantize_dropout_cutoff_index must be in [0, {num_quantizers}), got {quantize_dropout_cutoff_index}"
            )
        for key in ("channel_last", "accept_image_fmap", "accept_3d_fmap"):
            vq_kwargs.pop(key, None)
        codebook_dim = dim if codebook_dim is None else codebook_dim
        self.dim = dim
        self.num_quantizers = num_quantizers
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim
        self.quantize_dropout = dropout
        self.quantize_dropout_cutoff_index = quantize_dropout_cutoff_index
        self.use_rotation_trick = rotation_trick
        self.channel_last = resolve_channel_last(channel_last, accept_image_fmap)
        self.has_projections = codebook_dim != dim
        self.project_in = nn.Linear(dim, codebook_dim) if self.has_projections else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, dim) if self.has_projections else nn.Identity()
        self.layers = nn.ModuleList(
            VectorQuantizer(codebook_dim, codebook_size, channel_last=True, **vq_kwargs) for _ in range(num_quantizers)
        )

    @property
    def codebooks(self) -> Tensor:
        """All codebooks, ``(num_quantizers, codebook_size, codebook_dim)``."""
        return torch.stack([layer.codebook for layer in self.layers])

    def stats(self) -> list[dict[str, float]]:
        """Training usage statistics of every quantizer (see :meth:`VectorQuantizer.stats`).

        Example:
            >>> rvq = ResidualVQ(dim=8, num_quantizers=2, codebook_size=16)
            >>> _ = rvq(torch.randn(4, 32, 8))
            >>> len(rvq.stats())
            2
        """
        return [layer.stats() for layer in self.layers]

    def reset_stats(self) -> None:
        """Start a new statistics window in every quantizer."""
        for layer in self.layers:
            layer.reset_stats()

    def sample_quantizer_counts(self, batch: int, device: torch.device | None = None) -> Tensor:
        """Per-example number of quantizers for one training batch (quantizer dropout), ``(batch,)``.

        Example:
            >>> rvq = ResidualVQ(dim=4, num_quantizers=8, codebook_size=4, quantize_dropout=True)
            >>> counts = rvq.sample_quantizer_counts(1000)
            >>> int(counts.min()) >= 1 and int(counts.max()) <= 8
            True
        """
        counts = torch.full((batch,), self.num_quantizers, dtype=torch.long, device=device)
        if self.quantize_dropout > 0:
            drop = torch.rand(batch, device=device) < self.quantize_dropout
            low = self.quantize_dropout_cutoff_index + 1
            random_counts = torch.randint(low, self.num_quantizers + 1, (batch,), device=device)
            counts = torch.where(drop, random_counts, counts)
        return counts

    def _resolve_counts(self, batch: int, n_quantizers: int | Tensor | None, device: torch.device) -> Tensor:
        if isinstance(n_quantizers, Tensor):
            counts = n_quantizers.to(device=device, dtype=torch.long).reshape(-1)
            if counts.numel() != batch:
                raise ValueError(f"a per-example n_quantizers needs {batch} entries, got {counts.numel()}")
        elif n_quantizers is not None:
            counts = torch.full((batch,), int(n_quantizers), dtype=torch.long, device=device)
        elif self.training:
            counts = self.sample_quantizer_counts(batch, device)
        else:
            counts = torch.full((batch,), self.num_quantizers, dtype=torch.long, device=device)
        if counts.numel() and (int(counts.min()) < 1 or int(counts.max()) > self.num_quantizers):
            raise ValueError(f"n_quantizers must be in [1, {self.num_quantizers}], got {counts.unique().tolist()}")
        return counts

    def _forward_sequence(
        self, seq: Tensor, n_quantizers: int | Tensor | None = None, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(b, n, dim)`` -> quantized ``(b, n, dim)``, indices ``(b, n, q)``, loss."""
        batch, length, _ = seq.shape
        counts = self._resolve_counts(batch, n_quantizers, seq.device)
        used = int(counts.max()) if counts.numel() else self.num_quantizers
        z = rearrange(self.project_in(seq.float()), "b n d -> (b n) d")
        # Which example each flat vector belongs to, to apply per-example dropout.
        example_counts = counts.repeat_interleave(length)
        flat_mask = None if mask is None else mask.reshape(-1).bool()

        residual = z
        total = torch.zeros_like(z.detach())
        loss = z.new_zeros(())
        all_indices = []
        for i, layer in enumerate(self.layers[:used]):
            active = example_counts > i
            layer_mask = active if flat_mask is None else active & flat_mask
            q, indices, layer_loss = layer._quantize(residual, layer_mask)
            q = q.detach()
            keep = active[:, None]
            # Exact values along the residual chain (the gradient of each residual to z is the identity,
            # so every commitment loss reaches the encoder).
            residual = residual - torch.where(keep, q, torch.zeros_like(q))
            total = total + torch.where(keep, q, torch.zeros_like(q))
            all_indices.append(torch.where(active, indices, torch.full_like(indices, DROPPED)))
            loss = loss + layer_loss
        # Fixed width: n_quantizers columns when it is an int, else all Q (-1 where an example stopped).
        width = int(n_quantizers) if isinstance(n_quantizers, int) else self.num_quantizers
        all_indices += [torch.full_like(all_indices[0], DROPPED)] * (width - len(all_indices))
        indices = rearrange(torch.stack(all_indices, dim=-1), "(b n) q -> b n q", b=batch)

        if self.training:
            # The codes chosen before this step's codebook updates (which may move them).
            codes = total
            if torch.is_grad_enabled() and z.requires_grad:
                estimator = rotation_trick if self.use_rotation_trick else straight_through
                codes = estimator(z, total)
            if torch.is_grad_enabled():
                # Learned (non-EMA) codebooks also get the output's gradient through their codes.
                codes = codes + self._learned_code_residue(indices)
            quantized = self.project_out(rearrange(codes, "(b n) d -> b n d", b=batch))
        else:
            # Same code as decode_indices: the indices reproduce this output bit for bit.
            quantized = self._decode_sequence(indices)
        return quantized, indices, loss

    def _learned_code_residue(self, indices: Tensor) -> Tensor | float:
        """``sum_i q_i - sg(q_i)`` over quantizers with a learned codebook: zero in value, their gradient."""
        residue: Tensor | float = 0.0
        flat = rearrange(indices, "b n q -> (b n) q")
        for i, layer in enumerate(self.layers[: flat.shape[-1]]):
            if layer.ema_update:
                continue
            valid = flat[:, i] >= 0
            codes = layer._codes_from_indices(flat[:, i].clamp_min(0))
            codes = torch.where(valid[:, None], codes, torch.zeros_like(codes))
            residue = residue + (codes - codes.detach())
        return residue

    def _decode_sequence(self, indices: Tensor) -> Tensor:
        """``(b, n, q)`` indices (``-1`` = not used) -> ``(b, n, dim)``."""
        total = None
        for i in range(indices.shape[-1]):
            layer_indices = indices[..., i]
            valid = layer_indices >= 0
            codes = self.layers[i]._codes_from_indices(layer_indices.clamp_min(0))
            codes = torch.where(valid[..., None], codes, torch.zeros_like(codes))
            total = codes if total is None else total + codes
        return self.project_out(total)

    def _check_indices(self, indices: Tensor) -> None:
        if indices.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool):
            raise ValueError(f"indices must be an integer tensor, got {indices.dtype}")
        if indices.ndim < 2 or not 1 <= indices.shape[-1] <= self.num_quantizers:
            raise ValueError(
                f"indices must have shape (b, ..., q) with 1 <= q <= {self.num_quantizers}, got {tuple(indices.shape)}"
            )
        if indices.numel() and (int(indices.min()) < DROPPED or int(indices.max()) >= self.codebook_size):
            raise ValueError(
                f"indices must be in [0, {self.codebook_size}) or -1 (unused quantizer), got range "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )

    # -- public API -------------------------------------------------------------------------
    def forward(
        self, x: Tensor, n_quantizers: int | Tensor | None = None, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Quantize ``x`` with the first ``n_quantizers`` quantizers (all by default; random per example
        in training with ``quantize_dropout``). ``n_quantizers`` may be a ``(b,)`` tensor (one count per
        example). Returns ``(quantized, indices, loss)``.

        Example:
            >>> rvq = ResidualVQ(dim=8, num_quantizers=3, codebook_size=16, channel_last=False).eval()
            >>> q, idx, loss = rvq(torch.randn(2, 8, 5, 5))
            >>> q.shape, idx.shape
            (torch.Size([2, 8, 5, 5]), torch.Size([2, 5, 5, 3]))
        """
        seq, packed_shape = to_sequence(x, self.dim, self.channel_last, type(self).__name__)
        if mask is not None:
            mask = indices_to_sequence(mask)[0]
            if mask.shape != seq.shape[:2]:
                raise ValueError("mask must have the shape of the input without its channel axis")
        quantized, indices, loss = self._forward_sequence(seq, n_quantizers, mask)
        quantized = from_sequence(quantized, packed_shape, self.channel_last)
        return quantized, indices_to_spatial(indices, packed_shape, "b * q"), loss

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Rebuild the output from indices ``(b, ..., q)``; ``q <= num_quantizers`` gives the lower bitrate.

        In eval mode this equals the ``quantized`` output of ``forward`` bit for bit.

        Example:
            >>> rvq = ResidualVQ(dim=4, num_quantizers=2, codebook_size=8).eval()
            >>> rvq.decode_indices(torch.tensor([[[1, 5], [0, -1]]])).shape
            torch.Size([1, 2, 4])
        """
        self._check_indices(indices)
        seq, packed_shape = indices_to_sequence(indices.long(), "b * q")
        out = self._decode_sequence(seq)
        return from_sequence(out, packed_shape, self.channel_last)

    get_output_from_indices = decode_indices  # vector-quantize-pytorch's name
