"""Entropy models: likelihoods for training, integer tables and coding for compression.

* :class:`EntropyBottleneck`: the factorized, per-channel, learned non-parametric prior
  (Ballé et al. 2018), CompressAI's module for training;
* :class:`GaussianConditional`: a zero-mean Gaussian of a given scale per element (with an
  optional mean), CompressAI's module for training;
* :class:`Categorical`: a learned categorical prior for VQ indices, one per codebook.

What changes from CompressAI: ``update()`` builds the integer tables with our own
float64 quantization on the CPU (:mod:`neuralcodec.entropy.tables`), the tables live in
the same buffers (``_quantized_cdf``, ``_cdf_length``, ``_offset``) so state dicts stay
CompressAI-compatible, a plain ``load_state_dict`` works whatever size the saved tables
have, and coding runs on tensors (CPU or CUDA) through :mod:`neuralcodec.entropy.rans`.

Coding API (the same on every model):

* ``compress(...) -> list[bytes]`` / ``decompress(...)``: one stream per batch item,
  CompressAI's signatures;
* ``compress_symbols(...) -> bytes`` / ``decompress_symbols(...)``: the whole integer
  tensor in one stream, for codecs that quantize themselves;
* ``table_hash()``: a short hex hash of the integer tables.

Symbols outside a table's range take the coder's escape path and decode exactly.

>>> import torch
>>> eb = EntropyBottleneck(4)
>>> _ = eb.update()
>>> y = torch.randn(2, 4, 8, 8) * 3
>>> strings = eb.compress(y)                                       
>>> torch.equal(eb.decompress(strings, (8, 8)), eb.dequantize_symbols(eb.symbols(y)))
True
"""

from __future__ import annotations

import math

from types import ModuleType
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from compressai.entropy_models import EntropyBottleneck as _CompressAIEntropyBottleneck
from compressai.entropy_models import GaussianConditional as _CompressAIGaussianConditional
from einops import rearrange
from torch import Tensor, nn

from .tables import (
    default_scale_table,
    discretized_gaussian_tables,
    pmf_to_quantized_cdf,
    table_hash,
    tables_from_pmfs,
    tensor_hash,
)

__all__ = ["EntropyBottleneck", "GaussianConditional", "Categorical"]


def _to_symbols(rounded: Tensor) -> Tensor:
    """Rounded values as int32 symbols; refuses NaN/inf and values int32 cannot hold (no silent wrap)."""
    if rounded.numel():
        if not bool(torch.isfinite(rounded).all()):
            raise ValueError("cannot code non-finite latent values")
        lo, hi = torch.aminmax(rounded.detach())
        if float(lo) < -(2**31) or float(hi) > 2**31 - 1:
            raise ValueError(f"latent values out of the int32 symbol range: [{float(lo):g}, {float(hi):g}]")
    return rounded.to(torch.int32)


def _coder() -> ModuleType:
    """The rANS coder, imported lazily so the models import without it."""
    from . import rans

    return rans


class _IntegerTables:
    """Mixin: resizable table buffers, table access and hashing, and the coding calls."""

    # Buffers whose size depends on the tables (or the scale table) they hold.
    _RESIZABLE_BUFFERS: tuple[str, ...] = ("_quantized_cdf", "_cdf_length", "_offset")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # A fresh module has empty tables; size them like the saved ones so that a plain
        # load_state_dict(strict=True) works (CompressAI needs update_registered_buffers).
        for name in self._RESIZABLE_BUFFERS:
            key = prefix + name
            current = self._buffers.get(name)
            if key in state_dict and current is not None and isinstance(state_dict[key], Tensor):
                saved = state_dict[key]
                if saved.shape != current.shape:
                    self._buffers[name] = torch.empty(saved.shape, dtype=current.dtype, device=current.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def has_tables(self) -> bool:
        """Whether ``update()`` has built (or a state dict has loaded) the integer tables."""
        return self._quantized_cdf.numel() > 0 and self._cdf_length.numel() > 0 and self._offset.numel() > 0

    def _tables_on(self, device: torch.device | str) -> tuple[Tensor, Tensor, Tensor]:
        if not self.has_tables():
            raise ValueError("the integer tables are not built: call update() first (or load a state dict)")
        return (
            self._quantized_cdf.to(device=device, dtype=torch.int32),
            self._cdf_length.to(device=device, dtype=torch.int32),
            self._offset.to(device=device, dtype=torch.int32),
        )

    def table_hash(self) -> str:
        """Short hex hash of the integer tables (``cdfs``, ``cdf_lengths``, ``offsets``)."""
        if not self.has_tables():
            raise ValueError("the integer tables are not built: call update() first (or load a state dict)")
        return table_hash(self._quantized_cdf, self._cdf_length, self._offset)

    def _set_tables(self, cdfs: Tensor, cdf_lengths: Tensor, offsets: Tensor) -> None:
        device = self._quantized_cdf.device
        self._quantized_cdf = cdfs.to(device=device, dtype=torch.int32)
        self._cdf_length = cdf_lengths.to(device=device, dtype=torch.int32)
        self._offset = offsets.to(device=device, dtype=torch.int32)

    def _encode(self, symbols: Tensor, indexes: Tensor) -> bytes:
        tables = self._tables_on(symbols.device)
        return _coder().encode_with_indexes(
            symbols.to(torch.int32).contiguous(), indexes.to(device=symbols.device, dtype=torch.int32).contiguous(), *tables
        )

    def _decode(self, blob: bytes, indexes: Tensor) -> Tensor:
        tables = self._tables_on(indexes.device)
        return _coder().decode_with_indexes(blob, indexes.to(torch.int32).contiguous(), *tables)

    def _encode_batch(self, symbols: Tensor, indexes: Tensor) -> list[bytes]:
        tables = self._tables_on(symbols.device)
        symbols = symbols.to(torch.int32)
        indexes = indexes.to(device=symbols.device, dtype=torch.int32)
        return _coder().encode_batch(
            [s.contiguous() for s in symbols.unbind(0)], [i.contiguous() for i in indexes.unbind(0)], *tables
        )

    def _decode_batch(self, strings: Sequence[bytes], indexes: Tensor) -> Tensor:
        if not isinstance(strings, (list, tuple)) or len(strings) != indexes.size(0):
            raise ValueError(f"expected a list of {indexes.size(0)} byte strings, one per batch item")
        tables = self._tables_on(indexes.device)
        indexes = indexes.to(torch.int32)
        out = _coder().decode_batch(list(strings), [i.contiguous() for i in indexes.unbind(0)], *tables)
        return torch.stack([o.to(indexes.device) for o in out])


class EntropyBottleneck(_IntegerTables, _CompressAIEntropyBottleneck):
    """Factorized per-channel learned prior: CompressAI's layer with our tables and coder.

    Training (``forward``: noise or rounding, likelihoods; ``loss()`` for the quantiles)
    is CompressAI's. ``update()`` builds one integer table per channel in float64 on the
    CPU; channel ``c`` of a ``(B, C, *spatial)`` latent is coded with table ``c``. Symbols
    are ``round(y - median_c)``; decoding adds the medians back.

    >>> import torch
    >>> eb = EntropyBottleneck(8)
    >>> y_hat, likelihoods = eb(torch.randn(2, 8, 4, 4))
    >>> eb.update()
    True
    >>> eb._quantized_cdf.shape[0], len(eb.table_hash())
    (8, 16)
    """

    def update(self, force: bool = False, update_quantiles: bool = False) -> bool:
        """Build the integer tables (unless they exist and ``force`` is false).

        Returns whether they were (re)built. ``update_quantiles`` first re-fits the tail
        quantiles by bisection (CompressAI's option).
        """
        if self.has_tables() and not force:
            return False
        if update_quantiles:
            self._update_quantiles()
        q = self.quantiles.detach().to("cpu", torch.float64)[:, 0, :]
        medians = q[:, 1]
        minima = torch.ceil(medians - q[:, 0]).clamp_min(0).to(torch.int64)
        maxima = torch.ceil(q[:, 2] - medians).clamp_min(0).to(torch.int64)
        pmf_start = medians - minima
        pmf_length = minima + maxima + 1
        width = int(pmf_length.max())
        samples = pmf_start[:, None] + torch.arange(width, dtype=torch.float64)[None, :]
        lower = self._logits_cumulative_f64(samples - 0.5)
        upper = self._logits_cumulative_f64(samples + 0.5)
        # Difference of sigmoids on the side where they are small (no cancellation in the tails).
        sign = -torch.sign(lower + upper)
        pmf = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        rows = torch.arange(len(pmf_length))
        tail = torch.sigmoid(lower[:, 0]) + torch.sigmoid(-upper[rows, pmf_length - 1])
        valid = torch.arange(width)[None, :] < pmf_length[:, None]
        padded = torch.zeros(len(pmf_length), width + 1, dtype=torch.float64)
        padded[:, :width] = torch.where(valid, pmf, torch.zeros((), dtype=torch.float64))
        padded[rows, pmf_length] = tail
        cdfs = pmf_to_quantized_cdf(padded, self.entropy_coder_precision, lengths=pmf_length + 1)
        self._set_tables(cdfs, pmf_length + 2, -minima)
        return True

    def _logits_cumulative_f64(self, inputs: Tensor) -> Tensor:
        """CompressAI's cumulative-logit network, in float64 on the CPU, for ``(C, N)`` inputs."""
        logits = inputs[:, None, :]  # (C, 1, N)
        for i in range(len(self.filters) + 1):
            matrix = F.softplus(self.matrices[i].detach().to("cpu", torch.float64))  # (C, out, in)
            # Explicit product-sum rather than a BLAS matmul: a fixed summation order.
            logits = (matrix[:, :, :, None] * logits[:, None, :, :]).sum(2)
            logits = logits + self.biases[i].detach().to("cpu", torch.float64)
            if i < len(self.filters):
                factor = self.factors[i].detach().to("cpu", torch.float64)
                logits = logits + torch.tanh(factor) * torch.tanh(logits)
        return logits[:, 0, :]

    # -- symbols ------------------------------------------------------------------------
    def _medians_like(self, ndim: int, device: torch.device) -> Tensor:
        return self._get_medians().detach().reshape(1, -1, *([1] * (ndim - 2))).to(device)

    def build_indexes(self, shape: Sequence[int], device: torch.device | str | None = None) -> Tensor:
        """Table index of every element of a ``(B, C, *spatial)`` tensor: its channel."""
        shape = tuple(shape)
        if len(shape) < 2 or shape[1] != self.channels:
            raise ValueError(f"expected a (B, {self.channels}, ...) shape, got {shape}")
        index = torch.arange(self.channels, dtype=torch.int32, device=device)
        return index.reshape(1, -1, *([1] * (len(shape) - 2))).expand(shape)

    def symbols(self, y: Tensor) -> Tensor:
        """Integer symbols of a ``(B, C, *spatial)`` latent: ``round(y - median)`` as int32."""
        self.build_indexes(y.shape)  # shape check
        return _to_symbols(torch.round(y.detach() - self._medians_like(y.dim(), y.device).to(y.dtype)))

    def dequantize_symbols(self, symbols: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """Symbols back to latent values: ``symbols + median``."""
        return symbols.to(dtype) + self._medians_like(symbols.dim(), symbols.device).to(dtype)

    # -- coding -------------------------------------------------------------------------
    def compress(self, y: Tensor) -> list[bytes]:
        """Quantize and code a ``(B, C, *spatial)`` latent: one stream per batch item.

        >>> import torch
        >>> eb = EntropyBottleneck(2); _ = eb.update()
        >>> y = torch.randn(3, 2, 5)
        >>> torch.equal(eb.decompress(eb.compress(y), (5,)), eb.dequantize_symbols(eb.symbols(y)))
        True
        """
        symbols = self.symbols(y)
        return self._encode_batch(symbols, self.build_indexes(symbols.shape, symbols.device))

    def decompress(self, strings: Sequence[bytes], size: Sequence[int], device: torch.device | str | None = None) -> Tensor:
        """Decode the streams of :meth:`compress` into the dequantized ``(B, C, *size)`` latent.

        ``device`` defaults to the device of the tables (the module's).
        """
        device = self._quantized_cdf.device if device is None else device
        shape = (len(strings), self.channels, *size)
        symbols = self._decode_batch(strings, self.build_indexes(shape, device))
        return self.dequantize_symbols(symbols)

    def compress_symbols(self, symbols: Tensor) -> bytes:
        """Code an integer ``(B, C, *spatial)`` tensor (e.g. from :meth:`symbols`) as one stream."""
        if symbols.is_floating_point():
            raise TypeError("compress_symbols takes integer symbols; use symbols(y) to quantize")
        return self._encode(symbols, self.build_indexes(symbols.shape, symbols.device))

    def decompress_symbols(self, blob: bytes, shape: Sequence[int], device: torch.device | str | None = None) -> Tensor:
        """Decode one stream of :meth:`compress_symbols` into int32 symbols of ``shape``."""
        device = self._quantized_cdf.device if device is None else device
        return self._decode(blob, self.build_indexes(shape, device))


class GaussianConditional(_IntegerTables, _CompressAIGaussianConditional):
    """Gaussian conditional model: CompressAI's layer with our float64 tables and coder.

    ``scale_table`` defaults to the usual 64 log-spaced scales from 0.11 to 256. An
    element of scale ``s`` is coded with the table of the smallest table scale >= ``s``
    (``build_indexes``, CompressAI's rule, computed in the scales' dtype). When a decoder
    recomputes the scales (hyperprior), platform differences could change an index:
    ``indexes_hash`` lets the encoder store a hash of the indexes it used so the decoder
    can check it (the codecs that need it do so).

    >>> import torch
    >>> gc = GaussianConditional()
    >>> gc._cdf_length.numel()
    0
    >>> gc.update()
    True
    >>> gc._quantized_cdf.shape[0]
    64
    """

    _RESIZABLE_BUFFERS = ("_quantized_cdf", "_cdf_length", "_offset", "scale_table")

    def __init__(self, scale_table: Sequence[float] | None = None, *args: Any, **kwargs: Any) -> None:
        if scale_table is None:
            scale_table = default_scale_table().tolist()
        super().__init__([float(s) for s in scale_table], *args, **kwargs)

    def update(self, force: bool = False) -> bool:
        """Build the tables of ``scale_table`` (unless they exist and ``force`` is false)."""
        if self.has_tables() and not force:
            return False
        cdfs, lengths, offsets = discretized_gaussian_tables(self.scale_table, self.tail_mass, self.entropy_coder_precision)
        self._set_tables(cdfs, lengths, offsets)
        return True

    def update_scale_table(self, scale_table: Sequence[float], force: bool = False) -> bool:
        """Replace the scale table and rebuild the tables (CompressAI's method)."""
        if self.has_tables() and not force:
            return False
        self.scale_table = self._prepare_scale_table(scale_table).to(self.scale_table.device)
        return self.update(force=True)

    @staticmethod
    def indexes_hash(indexes: Tensor) -> str:
        """Short hex hash of table indexes (as int32), to detect encoder/decoder disagreement."""
        return tensor_hash(indexes.to(torch.int32))

    def _check_indexes(self, indexes: Tensor) -> None:
        if indexes.is_floating_point():
            raise TypeError("indexes must be integers (see build_indexes)")
        if indexes.numel() and (int(indexes.min()) < 0 or int(indexes.max()) >= len(self.scale_table)):
            raise ValueError(f"indexes must be in [0, {len(self.scale_table)})")

    def compress(self, inputs: Tensor, indexes: Tensor, means: Tensor | None = None) -> list[bytes]:
        """Quantize ``round(inputs - means)`` and code one stream per batch item.

        >>> import torch
        >>> gc = GaussianConditional(); _ = gc.update()
        >>> y, scales = torch.randn(2, 3, 4) * 5, torch.full((2, 3, 4), 5.0)
        >>> idx = gc.build_indexes(scales)
        >>> strings = gc.compress(y, idx)                              
        >>> torch.equal(gc.decompress(strings, idx), torch.round(y))  
        True
        """
        if inputs.dim() < 2 or inputs.shape != indexes.shape:
            raise ValueError("inputs and indexes must have the same (B, ...) shape")
        self._check_indexes(indexes)
        centered = inputs.detach() if means is None else inputs.detach() - means
        return self._encode_batch(_to_symbols(torch.round(centered)), indexes)

    def decompress(
        self, strings: Sequence[bytes], indexes: Tensor, dtype: torch.dtype = torch.float, means: Tensor | None = None
    ) -> Tensor:
        """Decode the streams of :meth:`compress`; adds ``means`` back when given."""
        if indexes.dim() < 2:
            raise ValueError("indexes must be (B, ...)")
        self._check_indexes(indexes)
        symbols = self._decode_batch(strings, indexes)
        return self.dequantize(symbols, means, dtype)

    def compress_symbols(self, symbols: Tensor, indexes: Tensor) -> bytes:
        """Code integer symbols of any shape, with the table ``indexes[i]`` for ``symbols[i]``."""
        if symbols.is_floating_point():
            raise TypeError("compress_symbols takes integer symbols")
        if symbols.shape != indexes.shape:
            raise ValueError("symbols and indexes must have the same shape")
        self._check_indexes(indexes)
        return self._encode(symbols, indexes)

    def decompress_symbols(self, blob: bytes, indexes: Tensor) -> Tensor:
        """Decode one stream of :meth:`compress_symbols` into int32 symbols shaped like ``indexes``."""
        self._check_indexes(indexes)
        return self._decode(blob, indexes)


class Categorical(_IntegerTables, nn.Module):
    """A learned categorical prior over VQ indices: one distribution per codebook.

    Indices are laid out ``(B, num_codebooks, *rest)`` (e.g. ``(B, K, H, W)`` for a
    residual VQ of ``K`` stages); codebook ``k`` uses table ``k``. ``forward`` gives
    differentiable likelihoods (train the logits with ``bits(indices)``), ``update()``
    freezes integer tables (float64, CPU) and ``compress``/``decompress`` code indices.

    >>> import torch
    >>> prior = Categorical(num_codebooks=2, codebook_size=16)
    >>> idx = torch.randint(0, 16, (3, 2, 5))
    >>> prior(idx).shape, round(float(prior.bits(idx)), 3)   # uniform at start: 4 bits each
    (torch.Size([3, 2, 5]), 120.0)
    >>> prior.update()
    True
    """

    precision = 16  # the coder's fixed probability precision

    def __init__(self, num_codebooks: int, codebook_size: int) -> None:
        super().__init__()
        if num_codebooks < 1 or codebook_size < 1:
            raise ValueError("num_codebooks and codebook_size must be >= 1")
        if codebook_size + 1 > (1 << self.precision):  # + the escape bin the coder requires
            raise ValueError(f"codebook_size {codebook_size} needs more than {self.precision}-bit tables")
        self.num_codebooks = int(num_codebooks)
        self.codebook_size = int(codebook_size)
        self.logits = nn.Parameter(torch.zeros(self.num_codebooks, self.codebook_size))
        self.register_buffer("_quantized_cdf", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("_cdf_length", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("_offset", torch.zeros(0, dtype=torch.int32))

    def extra_repr(self) -> str:
        return f"num_codebooks={self.num_codebooks}, codebook_size={self.codebook_size}"

    def _check(self, indices: Tensor) -> None:
        if indices.is_floating_point() or indices.dtype == torch.bool:
            raise TypeError("indices must be an integer tensor")
        if indices.dim() < 2 or indices.size(1) != self.num_codebooks:
            raise ValueError(f"indices must be (B, {self.num_codebooks}, ...), got {tuple(indices.shape)}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(f"indices must be in [0, {self.codebook_size})")

    def log_likelihoods(self, indices: Tensor) -> Tensor:
        """Natural-log probability of each index, shaped like ``indices`` (differentiable)."""
        self._check(indices)
        log_probs = torch.log_softmax(self.logits, dim=-1)
        flat = rearrange(indices.long(), "b k ... -> k (b ...)")
        picked = log_probs.gather(1, flat.to(log_probs.device))
        return picked.reshape(indices.size(1), indices.size(0), -1).transpose(0, 1).reshape(indices.shape)

    def forward(self, indices: Tensor) -> Tensor:
        """Likelihood (probability) of each index, shaped like ``indices``."""
        return self.log_likelihoods(indices).exp()

    def bits(self, indices: Tensor) -> Tensor:
        """Total information content ``-sum(log2 p)`` of ``indices`` (a differentiable scalar)."""
        return -self.log_likelihoods(indices).sum() / math.log(2.0)

    @torch.no_grad()
    def set_from_counts(self, counts: Tensor, prior: float = 0.5) -> None:
        """Set the logits to the smoothed empirical distribution ``log(counts + prior)``.

        ``counts`` is ``(num_codebooks, codebook_size)``; call ``update(force=True)`` after.
        """
        if tuple(counts.shape) != (self.num_codebooks, self.codebook_size):
            raise ValueError("counts must be (num_codebooks, codebook_size)")
        self.logits.copy_(torch.log(counts.to(self.logits) + prior))

    def update(self, force: bool = False) -> bool:
        """Build one integer table per codebook from the softmax of the logits (float64, CPU)."""
        if self.has_tables() and not force:
            return False
        probs = torch.softmax(self.logits.detach().to("cpu", torch.float64), dim=-1)
        tables = tables_from_pmfs(
            list(probs), [0] * self.num_codebooks, tail_masses=[0.0] * self.num_codebooks, precision=self.precision
        )
        self._set_tables(*tables)
        return True

    def build_indexes(self, shape: Sequence[int], device: torch.device | str | None = None) -> Tensor:
        """Table index of every position of a ``(B, num_codebooks, *rest)`` tensor: its codebook."""
        shape = tuple(shape)
        if len(shape) < 2 or shape[1] != self.num_codebooks:
            raise ValueError(f"expected a (B, {self.num_codebooks}, ...) shape, got {shape}")
        index = torch.arange(self.num_codebooks, dtype=torch.int32, device=device)
        return index.reshape(1, -1, *([1] * (len(shape) - 2))).expand(shape)

    def compress(self, indices: Tensor) -> bytes:
        """Code ``(B, num_codebooks, *rest)`` indices as one stream.

        >>> import torch
        >>> prior = Categorical(1, 8); _ = prior.update()
        >>> idx = torch.randint(0, 8, (2, 1, 10))
        >>> torch.equal(prior.decompress(prior.compress(idx), idx.shape), idx) 
        True
        """
        self._check(indices)
        return self._encode(indices, self.build_indexes(indices.shape, indices.device))

    def decompress(self, blob: bytes, shape: Sequence[int], device: torch.device | str | None = None) -> Tensor:
        """Decode a stream of :meth:`compress` into int64 indices of ``shape``.

        Raises ``neuralcodec.BitstreamError`` (from the coder) for a malformed stream, and
        also when a decoded index falls outside the codebook (only a corrupt stream can
        produce one, through the escape bin).
        """
        from ..errors import BitstreamError

        device = self._quantized_cdf.device if device is None else device
        out = self._decode(blob, self.build_indexes(shape, device)).long()
        if out.numel() and (int(out.min()) < 0 or int(out.max()) >= self.codebook_size):
            raise BitstreamError("decoded VQ index outside the codebook: corrupt stream")
        return out

    def compress_batch(self, indices: Tensor) -> list[bytes]:
        """Code each batch item of ``(B, num_codebooks, *rest)`` indices as its own stream."""
        self._check(indices)
        return self._encode_batch(indices, self.build_indexes(indices.shape, indices.device))

    def decompress_batch(
        self, strings: Sequence[bytes], shape: Sequence[int], device: torch.device | str | None = None
    ) -> Tensor:
        """Decode the streams of :meth:`compress_batch`; ``shape`` is one item's ``(num_codebooks, *rest)``."""
        from ..errors import BitstreamError

        device = self._quantized_cdf.device if device is None else device
        out = self._decode_batch(strings, self.build_indexes((len(strings), *shape), device)).long()
        if out.numel() and (int(out.min()) < 0 or int(out.max()) >= self.codebook_size):
            raise BitstreamError("decoded VQ index outside the codebook: corrupt stream")
        return out
