"""Vectorized interleaved rANS coder with CompressAI's ``encode_with_indexes`` meaning.

Symbols are coded against 16-bit integer CDF tables (the ``cdfs`` / ``cdf_lengths`` /
``offsets`` that CompressAI's ``EntropyBottleneck`` and ``GaussianConditional`` build in
``update()``). ``value = symbol - offsets[index]``; values in ``[0, cdf_lengths[index] - 2)``
are coded with their bin; anything else is coded with the table's last bin (the escape)
and its exact value goes to a side stream of Elias-gamma codes, so nothing is clipped.

Design (see ARCHITECTURE.md, "Entropy coding"):

* rANS with a 32-bit state in ``[2**16, 2**32)``, 16-bit renormalisation words and 16-bit
  probabilities; at most one word per symbol per lane.
* ``K`` interleaved lanes: symbol ``i`` belongs to lane ``i % K`` at step ``i // K``. The
  Python loop runs over steps; each step is a handful of tensor operations over all lanes
  (int64 arithmetic, integer only), so the same code runs on CPU and CUDA and gives the same
  bytes on both.
* All lanes write into one stream, ordered by (step, lane). The decoder finds each word's
  position with a cumulative sum over the lanes that read at a step, so it needs only the
  final lane states.
* ``K`` follows the expected size: lanes cost at most 0.15 % of it (each ~2.5 bytes), so small
  streams use one lane; it is stored in the header. Streams written with the earlier, larger
  lane counts still decode.
* On CPU the loops are compiled C (``_rans.c``, built by ``pip install -e .``): one pass over
  the symbols, the same integer operations as the tensor loops, so the same bytes (tested).
  Without the build they run in NumPy (:func:`cpu_backend` says which; a warning says so once);
  on CUDA they run in torch, many items' lanes side by side. Around the loops, table gathers
  are NumPy (per-(table, symbol) uint32 arrays cached in :class:`CdfTables`, per-thread reused
  work buffers) and the escape side stream is vectorized.

Blob layout (all integers little-endian)::

    tag (1 byte, 0xA9) | K (LEB128) | escape bytes E (LEB128)
    | K final states (4-bit length codes, then their bits below the leading one)
    | words (uint16 each) | E bytes of escape codes

Robustness guarantee of the decoder: a blob that is not a valid output of the encoder for
the given ``indexes`` and tables raises :class:`neuralcodec.BitstreamError` and never another
exception, a hang, or an allocation larger than a small multiple of the output size. Header
counts are checked against the blob length before anything is allocated; at the end every
word must have been consumed exactly and every lane must have returned to the encoder's
initial state, and the escape section must parse exactly. These checks catch truncation and
almost all corruption; a corrupted blob that still passes all of them (possible, e.g. a flipped
bit in the last words that only changes symbol values) decodes to wrong symbols without an
exception. The ``.ncf`` container adds a CRC32 for full detection.
"""

from __future__ import annotations

import collections
import hashlib
import math
import threading
import warnings
from dataclasses import dataclass, field
from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor

from neuralcodec.errors import BitstreamError

try:  # the compiled step loops (neuralcodec/entropy/_rans.c), built by `pip install -e .`
    from neuralcodec.entropy import _rans as _compiled
except ImportError:  # a source tree without the build: NumPy loops, with a warning at first use
    _compiled = None

__all__ = [
    "CdfTables",
    "prepare_tables",
    "encode_with_indexes",
    "decode_with_indexes",
    "encode_batch",
    "decode_batch",
    "ideal_bits",
]

PRECISION = 16
PROB_SCALE = 1 << PRECISION  # total frequency of every table
STATE_LOWER = 1 << 16  # rANS state lives in [STATE_LOWER, STATE_LOWER << WORD_BITS)
WORD_BITS = 16
WORD_MASK = (1 << WORD_BITS) - 1
FORMAT_TAG = 0xA9
MAX_CDF_LENGTH = PROB_SCALE + 1  # 65535 regular bins + the escape bin
MAX_ESCAPE_BITS = 40  # gamma codes longer than this cannot come from int32 symbols
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1

TableArg = Union["CdfTables", Tensor, Sequence[Sequence[int]]]

# Cost of a bin of frequency f in 1/16 bit: 16*16 - floor(16*log2 f). floor(16*log2 f) is
# computed in float64 on CPU once; it is exact (16*log2 f is an integer only for powers of two,
# where log2 is exact), so every platform gets the same integers and the same lane counts.
_COST16 = torch.zeros(PROB_SCALE + 1, dtype=torch.int64)
_COST16[1:] = 16 * PRECISION - torch.floor(16 * torch.log2(torch.arange(1, PROB_SCALE + 1, dtype=torch.float64))).long()


# --------------------------------------------------------------------------------------
# Lane count
# --------------------------------------------------------------------------------------

# Measured average size cost of one lane: its final state, stored in ~27.5 bits, ~8 of them informative.
LANE_COST_BITS = 20
# Share of the ideal size the encoder spends on lanes: K = ideal_bits * LANE_OVERHEAD / LANE_COST_BITS
# (at least 1). The compiled CPU loop runs one pass over the symbols whatever K is, so K only
# needs to be large for the GPU's step loop, which runs many items' lanes side by side anyway.
LANE_OVERHEAD = 0.0015


def lanes_for(num_symbols: int, ideal_bits16: int) -> int:
    """Number of interleaved lanes for a stream of ``num_symbols`` whose ideal size is ``ideal_bits16 / 16`` bits.

    Each lane costs about ``LANE_COST_BITS`` bits, and the lanes of a stream cost at most
    ``LANE_OVERHEAD`` (0.15 %) of its ideal size: one lane per 13.3 kbit, at least one. A pure
    function of the symbols' costs (never of the device or backend), so every backend writes
    the same bytes.

    >>> lanes_for(0, 0), lanes_for(10, 0), lanes_for(1_000_000, 16 * 5_000_000)
    (0, 1, 375)
    >>> lanes_for(4608, 16 * 9_600), lanes_for(98_304, 16 * 180_000)
    (1, 13)
    """
    if num_symbols <= 0:
        return 0
    lanes = int(ideal_bits16 // 16 * LANE_OVERHEAD / LANE_COST_BITS)
    return max(1, min(num_symbols, lanes))


# The earlier lane rules (sessions 1 and 2 of the project), kept for the decoder's plausibility
# check: it accepts any lane count at least as large as the smallest any rule picks, so streams
# written with them stay decodable.
_LANE_OVERHEAD_BIG = 0.0032  # share of the ideal size spent on lanes for large streams (>= _BIG_BITS)
_BIG_BITS = 4_000_000
_MAX_LANE_OVERHEAD = 0.012  # share for streams of _SMALL_BITS and more (more lanes = fewer Python steps)
_SMALL_BITS = 100_000
_MAX_LANE_OVERHEAD_SMALL = 0.03  # share cap for the smallest streams (a hyperprior's z: ~1 kB)


def _lanes_for_session2(num_symbols: int, ideal_bits16: int) -> int:
    """The second lane rule (NumPy step loops: 3 % for the smallest streams, 1.2 % from 0.1 to 1 Mbit, 0.32 % for large)."""
    if num_symbols <= 0:
        return 0
    bits = ideal_bits16 // 16
    if bits >= _BIG_BITS:
        share = _LANE_OVERHEAD_BIG
    else:
        # share ~ 1/sqrt(bits) between the two limits: equal to the big share at _BIG_BITS.
        cap = _MAX_LANE_OVERHEAD
        if bits < _SMALL_BITS:
            cap = min(_MAX_LANE_OVERHEAD_SMALL, _MAX_LANE_OVERHEAD * math.sqrt(_SMALL_BITS / max(bits, 1)))
        share = min(cap, _LANE_OVERHEAD_BIG * math.sqrt(_BIG_BITS / max(bits, 1)))
    lanes = int(bits * share / LANE_COST_BITS)
    return max(1, min(num_symbols, lanes))


def _lanes_for_session1(num_symbols: int, ideal_bits16: int) -> int:
    """The first lane rule (share capped at 1.2 % for every size), for the decoder's plausibility
    check: streams written with it stay decodable."""
    if num_symbols <= 0:
        return 0
    bits = ideal_bits16 // 16
    share = _LANE_OVERHEAD_BIG if bits >= _BIG_BITS else min(
        _MAX_LANE_OVERHEAD, _LANE_OVERHEAD_BIG * math.sqrt(_BIG_BITS / max(bits, 1))
    )
    return max(1, min(num_symbols, int(bits * share / LANE_COST_BITS)))


# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------


@dataclass(eq=False)
class CdfTables:
    """Integer CDF tables prepared for coding on one device (build with :func:`prepare_tables`).

    Bins are numbered flat: bin ``v`` of table ``t`` is ``t * bins_per_table + v``. One extra
    table (index ``num_tables``) with a single bin of frequency ``2**16`` codes nothing and
    pads the lanes.
    """

    num_tables: int
    bins_per_table: int
    start: Tensor  # int64 [(T+1)*W]: start of each bin
    freq: Tensor  # int64 [(T+1)*W]: frequency of each bin (0 for padding bins)
    offsets: Tensor  # int64 [T+1]
    max_values: Tensor  # int64 [T+1]: escape bin index per table
    device: torch.device
    digest: str
    # Encoder table: row t, column c = value + 1 (value clamped to [-1, bins_per_table]) ->
    # start | freq << 17 | escaped << 34. Columns outside [0, max_value) hold the escape bin.
    encode_packed: Tensor | None = field(default=None, repr=False)
    symbol_of_bin: Tensor | None = field(default=None, repr=False)  # int64 [(T+1)*W]: bin value + table offset
    escape_of_bin: Tensor | None = field(default=None, repr=False)  # bool [(T+1)*W]: is a table's escape bin
    offsets_minus_one: Tensor | None = field(default=None, repr=False)
    # Same as encode_packed but indexed by symbol rather than value: column = symbol - symbol_base,
    # clamped to [0, symbol_columns). Saves the per-symbol offset gather; None when too wide.
    symbol_packed: Tensor | None = field(default=None, repr=False)
    symbol_base: int = 0
    symbol_columns: int = 0
    _lut: Tensor | None = field(default=None, repr=False)
    _compiled_decoder: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    _numpy_encoder: "_NumpyEncoderTables | None" = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Copies on other devices, kept: a model whose tables live on a GPU is coded by the CPU loops
    # (CUDA_LOOPS), and rebuilding the CPU tables and their caches on every call would dominate.
    _copies: dict = field(default_factory=dict, repr=False)

    def numpy_encoder(self) -> "_NumpyEncoderTables":
        """Per-(table, symbol) uint32 arrays for the CPU encoder (:class:`_NumpyEncoderTables`). Built once, cached."""
        if self._numpy_encoder is None:
            with self._lock:
                if self._numpy_encoder is None:
                    self._numpy_encoder = _NumpyEncoderTables.build(self)
        return self._numpy_encoder

    def compiled_decoder(self) -> tuple[np.ndarray, np.ndarray]:
        """The compiled decoder's tables (CPU), built once, cached: ``(coarse, bin_table)``.

        ``coarse``: uint16 ``[T, 2**COARSE_BITS]``, the table-local bin holding the first slot of
        each run of ``2**(16 - COARSE_BITS)`` slots; ``bin_table``: uint32 ``[T * W, 2]``, start and
        frequency of every flat bin. Together a few hundred KiB where the exact slot table
        (:meth:`decode_lut`) takes 256 KiB per table, so the decoder's lookups stay in cache.
        """
        if self._compiled_decoder is None:
            with self._lock:
                if self._compiled_decoder is None:
                    t, w = self.num_tables, self.bins_per_table
                    start = self.start.cpu().numpy()[: t * w].reshape(t, w)
                    freq = self.freq.cpu().numpy()[: t * w].reshape(t, w)
                    # Bin ends, made non-decreasing past each row's last bin (padding bins: 0, 0),
                    # then offset per row so one searchsorted serves every row.
                    ends = np.maximum.accumulate(start + freq, axis=1) + (np.arange(t)[:, None] << 17)
                    first = np.arange(0, PROB_SCALE, PROB_SCALE >> _compiled.COARSE_BITS)
                    queries = first[None, :] + (np.arange(t)[:, None] << 17)
                    hit = np.searchsorted(ends.reshape(-1), queries.reshape(-1), side="right").reshape(t, -1)
                    coarse = (hit - np.arange(t)[:, None] * w).astype(np.uint16)
                    bin_table = np.stack([start.reshape(-1), freq.reshape(-1)], axis=1).astype(np.uint32)
                    self._compiled_decoder = (np.ascontiguousarray(coarse), np.ascontiguousarray(bin_table))
        return self._compiled_decoder

    def decode_lut(self) -> Tensor:
        """int32 ``[(T+1) * 65536]``: slot ``s`` of table ``t`` -> flat bin index. Built once, cached."""
        if self._lut is None:
            with self._lock:
                if self._lut is None:
                    # Each table's frequencies sum to 2**16, so repeating every bin id by its
                    # frequency lays out exactly one 65536-slot row per table.
                    if self.device.type == "cpu":  # NumPy, nonzero bins only: several times faster
                        freq = self.freq.numpy()
                        used = np.flatnonzero(freq)
                        self._lut = torch.from_numpy(np.repeat(used.astype(np.int32), freq[used]))
                    else:
                        bins = torch.arange(self.freq.numel(), device=self.device, dtype=torch.int32)
                        self._lut = torch.repeat_interleave(
                            bins, self.freq, output_size=(self.num_tables + 1) * PROB_SCALE
                        )
        return self._lut

    def to(self, device: torch.device | str) -> "CdfTables":
        """The same tables on another device."""
        device = torch.device(device)
        if device == self.device:
            return self
        copy = self._copies.get(device)
        if copy is None:
            copy = self._copies[device] = self._copy_to(device)
        return copy

    def _copy_to(self, device: torch.device) -> "CdfTables":
        return CdfTables(
            self.num_tables,
            self.bins_per_table,
            self.start.to(device),
            self.freq.to(device),
            self.offsets.to(device),
            self.max_values.to(device),
            device,
            self.digest,
            self.encode_packed.to(device),
            self.symbol_of_bin.to(device),
            self.escape_of_bin.to(device),
            self.offsets_minus_one.to(device),
            None if self.symbol_packed is None else self.symbol_packed.to(device),
            self.symbol_base,
            self.symbol_columns,
        )


@dataclass(eq=False)
class _NumpyEncoderTables:
    """The CPU encoder's tables: one entry per (table, column), same columns as the packed rows.

    With ``by_symbol`` the column of a symbol is ``symbol - base`` (clamped to ``[0, columns)``);
    otherwise it is ``value + 1`` (clamped to ``[0, columns)``) and ``offsets_minus_one`` is
    needed. One ``take`` per array gives the step loop its operands directly, in the unsigned
    32-bit form it computes in: ``x_max_minus_one = (freq << 16) - 1`` (a word goes out when
    ``x > x_max_minus_one``; fits 32 bits even for ``freq == 2**16``), ``freq``,
    ``comp_freq = 2**16 - freq``, and ``start`` with two flags above bit 20 (escaped, impossible).
    ``cost16`` is the size of each entry in 1/16 bit (as :func:`_estimate_bits16`).
    """

    by_symbol: bool
    base: int
    columns: int
    x_max_minus_one: np.ndarray
    freq: np.ndarray
    comp_freq: np.ndarray
    start_flags: np.ndarray
    cost16: np.ndarray
    offsets_minus_one: np.ndarray
    offsets: np.ndarray
    max_values: np.ndarray

    @classmethod
    def build(cls, tables: "CdfTables") -> "_NumpyEncoderTables":
        by_symbol = tables.symbol_packed is not None
        packed = (tables.symbol_packed if by_symbol else tables.encode_packed).cpu().numpy()
        freq = (packed >> 17) & 0x1FFFF
        flags = (packed >> 34) & 3  # bit 0: escaped, bit 1: zero frequency
        return cls(
            by_symbol,
            tables.symbol_base if by_symbol else 0,
            tables.symbol_columns if by_symbol else tables.bins_per_table + 2,
            ((freq << WORD_BITS) - 1).clip(0).astype(np.uint32),
            freq.astype(np.uint32),
            (PROB_SCALE - freq).astype(np.uint32),
            ((packed & 0x1FFFF) | (flags << _FLAG_SHIFT)).astype(np.uint32),
            _COST16.numpy()[freq].astype(np.uint16),
            tables.offsets_minus_one.cpu().numpy(),
            tables.offsets.cpu().numpy(),
            tables.max_values.cpu().numpy(),
        )


_FLAG_SHIFT = 20  # escape flag at bit 20, zero-frequency flag at bit 21 of start_flags


class _Scratch(threading.local):
    """Per-thread reusable work arrays for the CPU encoder.

    Encoding 1e6 symbols needs ~30 MB of temporary arrays; allocated afresh on every call they
    come back from the OS zeroed, page by page, which costs about as much as the coding itself.
    Buffers up to ``MAX_BYTES`` each are kept (one per role, per thread) and reused; larger
    requests are allocated normally. Nothing handed back to the caller points into them.
    """

    MAX_BYTES = 8 << 20

    def __init__(self) -> None:
        self.buffers: dict[str, np.ndarray] = {}

    def get(self, role: str, count: int, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        need = count * dtype.itemsize
        if need > self.MAX_BYTES:
            return np.empty(count, dtype=dtype)
        buf = self.buffers.get(role)
        if buf is None or buf.nbytes < need:
            buf = np.empty(need, dtype=np.uint8)
            self.buffers[role] = buf
        return buf[:need].view(dtype)


_SCRATCH = _Scratch()


def _as_int64_cpu(x, name: str) -> Tensor:
    if isinstance(x, Tensor):
        if x.is_floating_point() or x.is_complex():
            raise ValueError(f"{name} must hold integers, got dtype {x.dtype}")
        return x.detach().to("cpu", torch.int64).reshape(-1)
    try:
        return torch.as_tensor(np.asarray(x, dtype=np.int64)).reshape(-1)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{name} must be a sequence of integers") from exc


def _cdf_matrix(cdfs) -> Tensor:
    if isinstance(cdfs, Tensor):
        if cdfs.is_floating_point() or cdfs.is_complex():
            raise ValueError(f"cdfs must hold integers, got dtype {cdfs.dtype}")
        if cdfs.dim() != 2:
            raise ValueError(f"cdfs must be 2-D [num_tables, max_length], got shape {tuple(cdfs.shape)}")
        return cdfs.detach().to("cpu", torch.int64)
    rows = [list(r) for r in cdfs]
    if not rows:
        raise ValueError("cdfs is empty")
    width = max(len(r) for r in rows)
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        try:
            out[i, : len(r)] = np.asarray(r, dtype=np.int64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError("cdfs must be a list of integer rows") from exc
    return torch.from_numpy(out)


_CACHE: "collections.OrderedDict[tuple, CdfTables]" = collections.OrderedDict()
_CACHE_SIZE = 8
_CACHE_LOCK = threading.Lock()


def prepare_tables(
    cdfs: TableArg, cdf_lengths=None, offsets=None, device: torch.device | str | None = None
) -> CdfTables:
    """Check CompressAI-style integer CDF tables and prepare them for coding on ``device``.

    Results are cached by content (the last few table sets), so passing the raw tables to
    every call costs only a hash; passing the same tensors again (unmodified) skips even that
    (an identity cache), and so does passing the returned :class:`CdfTables`.

    >>> t = prepare_tables([[0, 30000, 65535, 65536]], [4], [-1])
    >>> t.num_tables, t.bins_per_table
    (1, 3)
    """
    if isinstance(cdfs, CdfTables):
        return cdfs if device is None else cdfs.to(device)
    if cdf_lengths is None or offsets is None:
        raise ValueError("cdf_lengths and offsets are required with raw cdfs")
    if device is None:
        device = cdfs.device if isinstance(cdfs, Tensor) else torch.device("cpu")
    device = torch.device(device)
    identity = _identity_key(cdfs, cdf_lengths, offsets, device)
    if identity is not None:
        with _CACHE_LOCK:
            hit = _IDENTITY_CACHE.get(identity)
            if hit is not None:
                _IDENTITY_CACHE.move_to_end(identity)
                return hit[1]
    tables = _prepare_tables_by_content(cdfs, cdf_lengths, offsets, device)
    if identity is not None:
        with _CACHE_LOCK:
            # The entry holds the tensors themselves: while it exists their memory cannot be
            # reused by other tensors, so an equal (address, version) key means equal content.
            _IDENTITY_CACHE[identity] = ((cdfs, cdf_lengths, offsets), tables)
            while len(_IDENTITY_CACHE) > _CACHE_SIZE:
                _IDENTITY_CACHE.popitem(last=False)
    return tables


_IDENTITY_CACHE: "collections.OrderedDict[tuple, tuple]" = collections.OrderedDict()


def _identity_key(cdfs, cdf_lengths, offsets, device: torch.device) -> tuple | None:
    """(address, version counter, layout) of three tensors; None unless all three are tensors.

    The version counter moves on every in-place change, so a hit means unchanged content.
    """
    parts = (cdfs, cdf_lengths, offsets)
    if not all(isinstance(t, Tensor) for t in parts):
        return None
    return (str(device),) + tuple(
        (t.data_ptr(), t._version, tuple(t.shape), tuple(t.stride()), t.dtype, str(t.device)) for t in parts
    )


def _prepare_tables_by_content(cdfs, cdf_lengths, offsets, device: torch.device) -> CdfTables:
    cdf = _cdf_matrix(cdfs)
    lengths = _as_int64_cpu(cdf_lengths, "cdf_lengths")
    offs = _as_int64_cpu(offsets, "offsets")
    num_tables = cdf.shape[0]
    if num_tables == 0:
        raise ValueError("cdfs is empty")
    if lengths.numel() != num_tables or offs.numel() != num_tables:
        raise ValueError(
            f"cdfs has {num_tables} tables but cdf_lengths has {lengths.numel()} and offsets {offs.numel()} entries"
        )
    digest = hashlib.blake2b(digest_size=16)
    for part in (cdf, lengths, offs):
        digest.update(np.ascontiguousarray(part.numpy()).tobytes())
        digest.update(str(tuple(part.shape)).encode())
    key = (digest.hexdigest(), str(device))
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit

    if int(lengths.min()) < 2 or int(lengths.max()) > min(cdf.shape[1], MAX_CDF_LENGTH):
        raise ValueError(
            f"cdf_lengths must be in [2, {min(cdf.shape[1], MAX_CDF_LENGTH)}], got range "
            f"[{int(lengths.min())}, {int(lengths.max())}]"
        )
    if int(offs.min()) < INT32_MIN or int(offs.max()) > INT32_MAX:
        raise ValueError("offsets must fit in int32")
    width = int(lengths.max())
    cdf = cdf[:, :width]
    cols = torch.arange(width)
    inside = cols[None, :] < lengths[:, None]
    rows = torch.arange(num_tables)
    if bool((cdf[:, 0] != 0).any()) or bool((cdf[rows, lengths - 1] != PROB_SCALE).any()):
        raise ValueError(f"every cdf row must start at 0 and end at {PROB_SCALE} (cdfs[i][cdf_lengths[i] - 1])")
    steps = cdf[:, 1:] - cdf[:, :-1]
    if bool(((steps < 0) & inside[:, 1:]).any()):
        raise ValueError("cdf rows must be non-decreasing")

    bins = width - 1
    start = torch.where(inside[:, :-1], cdf[:, :-1], 0)
    freq = torch.where(inside[:, 1:], steps, 0)
    # The padding table: one bin covering everything.
    pad_start = torch.zeros(1, bins, dtype=torch.int64)
    pad_freq = torch.zeros(1, bins, dtype=torch.int64)
    pad_freq[0, 0] = PROB_SCALE
    start = torch.cat([start, pad_start]).reshape(-1)
    freq = torch.cat([freq, pad_freq]).reshape(-1)
    max_values = torch.cat([lengths - 2, torch.zeros(1, dtype=torch.int64)])
    offs = torch.cat([offs, torch.zeros(1, dtype=torch.int64)])
    # Packed encoder rows (real tables only): value -1 and values >= max_value use the escape bin.
    width_e = bins + 2
    value_e = torch.arange(width_e)[None, :] - 1
    max_e = lengths[:, None] - 2
    esc_e = (value_e < 0) | (value_e >= max_e)
    bin_e = torch.where(esc_e, max_e, value_e) + torch.arange(num_tables)[:, None] * bins
    packed = start[bin_e] | (freq[bin_e] << 17) | (esc_e.long() << 34) | ((freq[bin_e] == 0).long() << 35)
    # Symbol-indexed rows: worthwhile when the tables' symbol ranges overlap (CompressAI's do).
    lo_sym = int(offs[:num_tables].min())
    hi_sym = int((offs[:num_tables] + lengths - 2).max())
    columns = hi_sym - lo_sym + 2
    symbol_packed = None
    if num_tables * columns <= max(4 * num_tables * width_e, 1 << 20):
        sym_c = lo_sym - 1 + torch.arange(columns)[None, :]
        value_s = sym_c - offs[:num_tables, None]
        esc_s = (value_s < 0) | (value_s >= max_e)
        bin_s = torch.where(esc_s, max_e, value_s) + torch.arange(num_tables)[:, None] * bins
        symbol_packed = start[bin_s] | (freq[bin_s] << 17) | (esc_s.long() << 34) | ((freq[bin_s] == 0).long() << 35)
        symbol_packed = symbol_packed.reshape(-1).to(device)
    is_escape = torch.arange(bins)[None, :] == max_values[:, None]
    is_escape[num_tables] = False  # the padding table has no escape
    tables = CdfTables(
        num_tables,
        bins,
        start.to(device),
        freq.to(device),
        offs.to(device),
        max_values.to(device),
        device,
        key[0],
        packed.reshape(-1).to(device),
        (torch.arange(bins)[None, :] + offs[:, None]).reshape(-1).to(device),
        is_escape.reshape(-1).to(device),
        (offs - 1).to(device),
        symbol_packed,
        lo_sym - 1,
        columns,
    )
    with _CACHE_LOCK:
        _CACHE[key] = tables
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return tables


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(blob: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 35, 7):  # at most 5 bytes: values < 2**35
        if pos >= len(blob):
            raise BitstreamError("rANS blob truncated inside its header")
        byte = blob[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and shift:
                raise BitstreamError("rANS blob header has a non-canonical varint")
            return value, pos
    raise BitstreamError("rANS blob header has an overlong varint")


def _symbols_tensor(symbols, device: torch.device | None) -> Tensor:
    if isinstance(symbols, Tensor):
        t = symbols.detach()
        if t.is_complex():
            raise ValueError("symbols must be integers")
        if t.is_floating_point():
            r = torch.round(t)
            if not bool((r == t).all()):
                raise ValueError("floating-point symbols must hold integer values")
            t = r
        t = t.reshape(-1)
        if t.dtype not in (torch.int32, torch.int64):
            t = t.to(torch.int64)
    else:
        t = torch.as_tensor(np.asarray(symbols, dtype=np.int64)).reshape(-1)
    if device is not None:
        t = t.to(device)
    return t


def _indexes_tensor(indexes, device: torch.device | None) -> Tensor:
    if isinstance(indexes, Tensor):
        if indexes.is_floating_point() or indexes.is_complex():
            raise ValueError(f"indexes must be integers, got dtype {indexes.dtype}")
        t = indexes.detach().reshape(-1)
        if t.dtype not in (torch.int32, torch.int64):
            t = t.to(torch.int64)
    else:
        t = torch.as_tensor(np.asarray(indexes, dtype=np.int64)).reshape(-1)
    if device is not None:
        t = t.to(device)
    return t


def _pack_escapes(raw: Tensor) -> bytes:
    """Elias-gamma codes of ``raw + 1``: all unary prefixes first, then all mantissas, MSB first."""
    if raw.numel() == 0:
        return b""
    val = raw.to("cpu", torch.int64) + 1
    nbits = torch.floor(torch.log2(val.double())).long()  # bit length - 1, corrected below for exactness
    nbits = nbits + ((val >> (nbits + 1)) > 0).long() - ((val >> nbits) == 0).long()
    count = val.numel()
    prefix_len = int(nbits.sum()) + count
    prefix = torch.zeros(prefix_len, dtype=torch.uint8)
    prefix[torch.cumsum(nbits + 1, 0) - 1] = 1
    mant_len = prefix_len - count
    owner = torch.repeat_interleave(torch.arange(count), nbits)
    first = torch.cumsum(nbits, 0) - nbits
    within = torch.arange(mant_len) - first[owner]
    mant = ((val[owner] >> (nbits[owner] - 1 - within)) & 1).to(torch.uint8)
    bits = torch.cat([prefix, mant])
    bits = torch.cat([bits, torch.zeros((-bits.numel()) % 8, dtype=torch.uint8)])
    return np.packbits(bits.numpy()).tobytes()


def _working_device(first, cdfs) -> torch.device:
    """Where to code: the first item's device, else the tables' device, else CPU."""
    if isinstance(first, Tensor):
        return first.device
    if isinstance(cdfs, (Tensor, CdfTables)):
        return cdfs.device
    return torch.device("cpu")


def _pack_states(states: np.ndarray) -> bytes:
    """Final lane states (each in [2**16, 2**32)) in fewer than 32 bits each.

    A state's bit length is spread roughly evenly over 17..32, so storing a 4-bit length code
    per lane (all codes first, two per byte) and then each state's bits below its leading one
    costs ~27.5 bits per lane on average instead of 32: more lanes for the same size.
    """
    x = np.asarray(states, dtype=np.int64)
    nbits = np.frexp(x.astype(np.float64))[1].astype(np.int64) - 1  # bits below the leading one: 16..31
    codes = (nbits - 16).astype(np.uint8)
    if codes.size % 2:
        codes = np.append(codes, np.uint8(0))
    head = (codes[0::2] << 4) | codes[1::2]
    owner = np.repeat(np.arange(x.size), nbits)
    within = np.arange(owner.size) - np.repeat(np.cumsum(nbits) - nbits, nbits)
    bits = ((x[owner] >> (nbits[owner] - 1 - within)) & 1).astype(np.uint8)
    return head.tobytes() + np.packbits(bits).tobytes()


def _unpack_states(blob: bytes, pos: int, lanes: int) -> tuple[np.ndarray, int]:
    """Inverse of :func:`_pack_states`: (states, position after them); BitstreamError if truncated."""
    head_len = (lanes + 1) // 2
    if pos + head_len > len(blob):
        raise BitstreamError("rANS blob truncated inside its lane states")
    if lanes <= _FEW_LANES:
        return _unpack_few_states(blob, pos, lanes)
    head = np.frombuffer(blob, dtype=np.uint8, count=head_len, offset=pos)
    codes = np.empty(2 * head_len, dtype=np.int64)
    codes[0::2] = head >> 4
    codes[1::2] = head & 15
    if lanes % 2 and codes[-1]:
        raise BitstreamError("rANS blob has malformed lane states")
    nbits = codes[:lanes] + 16
    total = int(nbits.sum())
    pos += head_len
    body_len = (total + 7) // 8
    if pos + body_len > len(blob):
        raise BitstreamError("rANS blob truncated inside its lane states")
    bits = np.unpackbits(np.frombuffer(blob, dtype=np.uint8, count=body_len, offset=pos))
    if bits[total:].any():
        raise BitstreamError("rANS blob has malformed lane states")
    first = np.cumsum(nbits) - nbits
    owner = np.repeat(np.arange(lanes), nbits)
    within = np.arange(total) - first[owner]
    weighted = bits[:total].astype(np.int64) << (nbits[owner] - 1 - within)
    states = (np.int64(1) << nbits) + np.add.reduceat(weighted, first)
    return states, pos + body_len


_FEW_LANES = 32  # up to this many lanes, Python integers unpack the states faster than NumPy calls


def _unpack_few_states(blob: bytes, pos: int, lanes: int) -> tuple[np.ndarray, int]:
    """:func:`_unpack_states` for a few lanes (same layout, same checks), on Python integers."""
    head_len = (lanes + 1) // 2
    codes = []
    for byte in blob[pos : pos + head_len]:
        codes += (byte >> 4, byte & 15)
    if lanes % 2 and codes[-1]:
        raise BitstreamError("rANS blob has malformed lane states")
    nbits = [c + 16 for c in codes[:lanes]]
    total = sum(nbits)
    pos += head_len
    body_len = (total + 7) // 8
    if pos + body_len > len(blob):
        raise BitstreamError("rANS blob truncated inside its lane states")
    body = int.from_bytes(blob[pos : pos + body_len], "big")
    pad = 8 * body_len - total
    if body & ((1 << pad) - 1):
        raise BitstreamError("rANS blob has malformed lane states")
    body >>= pad
    states = np.empty(len(nbits), dtype=np.int64)
    for i in range(len(nbits) - 1, -1, -1):  # the last lane holds the lowest bits
        n = nbits[i]
        states[i] = (1 << n) | (body & ((1 << n) - 1))
        body >>= n
    return states, pos + body_len


def _unpack_escapes(data: bytes, count: int) -> Tensor:
    """Inverse of :func:`_pack_escapes`; ``BitstreamError`` unless ``data`` holds exactly ``count`` codes."""
    if count == 0:
        if data:
            raise BitstreamError("rANS blob has escape data but no escaped symbol")
        return torch.zeros(0, dtype=torch.int64)
    bits = torch.from_numpy(np.unpackbits(np.frombuffer(data, dtype=np.uint8)).astype(np.int64))
    ones = torch.nonzero(bits[: min(bits.numel(), count * (MAX_ESCAPE_BITS + 1))]).reshape(-1)
    if ones.numel() < count:
        raise BitstreamError("rANS escape section is truncated")
    ends = ones[:count]
    nbits = torch.diff(ends, prepend=torch.tensor([-1])) - 1
    if int(nbits.max()) > MAX_ESCAPE_BITS:
        raise BitstreamError("rANS escape section holds an impossible value")
    prefix_len = int(ends[-1]) + 1
    mant_len = prefix_len - count
    total = prefix_len + mant_len
    if (total + 7) // 8 != len(data) or bool(bits[total:].any()):
        raise BitstreamError("rANS escape section has the wrong length")
    owner = torch.repeat_interleave(torch.arange(count), nbits)
    first = torch.cumsum(nbits, 0) - nbits
    within = torch.arange(mant_len) - first[owner]
    mant = bits[prefix_len:total] << (nbits[owner] - 1 - within)
    val = torch.ones(count, dtype=torch.int64) << nbits
    val.index_add_(0, owner, mant)
    return val - 1


def ideal_bits(symbols, indexes, cdfs: TableArg, cdf_lengths=None, offsets=None) -> float:
    """Ideal size in bits (sum of ``-log2 p``) of ``symbols`` under the quantized tables, escapes' bins included.

    >>> round(ideal_bits([0, 1], [0, 0], [[0, 32768, 65535, 65536]], [4], [0]), 3)
    2.0
    """
    _, freq, _, _ = _prepare_symbols(symbols, indexes, prepare_tables(cdfs, cdf_lengths, offsets), None)
    return float((PRECISION - torch.log2(freq.double())).sum())


def _prepare_symbols(symbols, indexes, tables: CdfTables, device):
    """Bin start/frequency of every symbol, plus escape positions and raw escape values."""
    sym = _symbols_tensor(symbols, device)
    idx = _indexes_tensor(indexes, sym.device)
    if sym.numel() != idx.numel():
        raise ValueError(f"symbols has {sym.numel()} elements but indexes has {idx.numel()}")
    tables = tables.to(sym.device)
    if sym.numel() == 0:
        empty = sym.new_zeros(0)
        return empty, empty, empty, empty
    lo, hi = torch.aminmax(idx)
    if int(lo) < 0 or int(hi) >= tables.num_tables:
        raise ValueError(f"indexes must be in [0, {tables.num_tables}), got range [{int(lo)}, {int(hi)}]")
    if _needs_int32_check(symbols):
        slo, shi = torch.aminmax(sym)
        if int(slo) < INT32_MIN or int(shi) > INT32_MAX:
            raise ValueError("symbols must fit in int32")
    # One gather from the packed encoder table gives start, frequency and the escape flag.
    # index_select rather than advanced indexing / take: same result, a fraction of the cost.
    idx = idx.to(torch.int64)  # int64 indexes make the gathers and the add below ~2x faster than int32 ones
    if tables.symbol_packed is not None:
        col = sym.to(torch.int64) - tables.symbol_base
        col.clamp_(0, tables.symbol_columns - 1)
        packed = tables.symbol_packed.index_select(0, torch.add(col, idx, alpha=tables.symbol_columns))
    else:
        col = sym - tables.offsets_minus_one.index_select(0, idx)  # value + 1: the column in the packed rows
        col.clamp_(0, tables.bins_per_table + 1)
        packed = tables.encode_packed.index_select(0, torch.add(col, idx, alpha=tables.bins_per_table + 2))
    start = packed & 0x1FFFF
    flagged = int(packed.max()) >= (1 << 34)  # one pass decides if anything is escaped or impossible
    freq = ((packed >> 17) & 0x1FFFF) if flagged else (packed >> 17)
    if flagged and not bool(freq.all()):
        bad = int(torch.nonzero(freq == 0)[0, 0])
        raise ValueError(
            f"symbol {int(sym[bad])} at flat position {bad} (table {int(idx[bad])}) has zero probability in its table"
        )
    escaped = ((packed >> 34) & 1).bool() if flagged else None
    if flagged and bool(escaped.any()):
        esc_pos = torch.nonzero(escaped).reshape(-1)
        esc_idx = idx.index_select(0, esc_pos)
        v = sym.index_select(0, esc_pos) - tables.offsets.index_select(0, esc_idx)
        m = tables.max_values.index_select(0, esc_idx)
        raw = torch.where(v < 0, -2 * v - 1, 2 * (v - m))
    else:
        esc_pos = raw = sym.new_zeros(0)
    return start, freq, raw, esc_pos


def _needs_int32_check(symbols) -> bool:
    return not (isinstance(symbols, Tensor) and symbols.dtype in (torch.int32, torch.int16, torch.int8, torch.uint8))


# --------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------


_LAYOUT_LOOP_ITEMS = 256  # up to this many items, _layout loops over items (cheaper per symbol)


def _layout(counts: list[int], lanes: list[int], device) -> tuple[Tensor, int, int]:
    """Flat position in the [steps, total_lanes] grid of every symbol of every item (items concatenated)."""
    total_lanes = sum(lanes)
    steps = max([(n + k - 1) // k for n, k in zip(counts, lanes) if k] or [0])
    n_total = sum(counts)
    if n_total == 0:
        return torch.zeros(0, dtype=torch.int64, device=device), steps, total_lanes
    if len(counts) == 1:
        return torch.arange(n_total, device=device), steps, total_lanes
    if len(counts) <= _LAYOUT_LOOP_ITEMS:
        # Item by item: its symbols fill a [steps_i, k] block of the grid row by row, so the
        # positions are a broadcast sum (no per-symbol division or gathers).
        parts, lane_first = [], 0
        for n, k in zip(counts, lanes):
            if n:
                rows = torch.arange((n + k - 1) // k, dtype=torch.int64, device=device) * total_lanes
                cols = torch.arange(lane_first, lane_first + k, dtype=torch.int64, device=device)
                parts.append((rows[:, None] + cols[None, :]).reshape(-1)[:n])
            lane_first += k
        return torch.cat(parts), steps, total_lanes
    cnt = torch.tensor(counts, dtype=torch.int64, device=device)
    item = torch.repeat_interleave(torch.arange(len(counts), device=device), cnt, output_size=n_total)
    item_first = torch.cumsum(cnt, 0) - cnt
    lane_k = torch.tensor(lanes, dtype=torch.int64, device=device)
    lane_first = torch.cumsum(lane_k, 0) - lane_k
    local = torch.arange(n_total, device=device) - item_first[item]
    k = lane_k[item]
    return (local // k) * total_lanes + lane_first[item] + local % k, steps, total_lanes


# Which implementation runs the step loops on CPU: "c" (the compiled loops of _rans.c, one pass
# over the symbols, ~ns per symbol), "numpy" (a dozen array operations per step over all lanes,
# ~µs per step; the fallback when the extension is not built) or "torch" (the CUDA algorithm on
# CPU, for tests). All three do the same integer operations in the same order and give the same
# bytes (tested).
COMPILED_AVAILABLE = _compiled is not None
CPU_BACKEND = "c" if COMPILED_AVAILABLE else "numpy"
_fallback_warned = False

# Where tensors on a GPU are coded. "cpu" (the default where the extension is built): the
# compiled CPU loops, symbols and indexes moved over and results moved back. Measured on a lent
# H100 with the earlier many-lane streams, the torch step loop decoded a 64-item batch at
# 0.073 Gsym/s, which one CPU thread of the compiled loop matches (0.093 Gsym/s here); and a
# stream of few lanes needs thousands of sequential steps, each several kernel launches on a
# GPU. "torch": the vectorized torch loop on the GPU itself. Both write the same bytes.
CUDA_LOOPS = "cpu" if COMPILED_AVAILABLE else "torch"


def _coding_device(device: torch.device) -> torch.device:
    """The device whose loops code tensors that live on ``device`` (see ``CUDA_LOOPS``).

    >>> _coding_device(torch.device("cpu"))
    device(type='cpu')
    """
    if device.type != "cpu" and CUDA_LOOPS == "cpu" and COMPILED_AVAILABLE:
        return torch.device("cpu")
    return device


def cpu_backend() -> str:
    """The implementation that runs the CPU step loops now: ``"c"``, ``"numpy"`` or ``"torch"``.

    ``"numpy"`` by default only when the compiled extension is missing (a warning says so once).

    >>> cpu_backend() in ("c", "numpy", "torch")
    True
    """
    if CPU_BACKEND == "c" and not COMPILED_AVAILABLE:
        raise RuntimeError("rans.CPU_BACKEND is 'c' but the compiled extension neuralcodec.entropy._rans is missing")
    if CPU_BACKEND == "numpy" and not COMPILED_AVAILABLE:
        global _fallback_warned
        if not _fallback_warned:
            _fallback_warned = True
            warnings.warn(
                "neuralcodec.entropy._rans (the compiled rANS loops) is not built; the CPU coder falls back to "
                "NumPy loops (same bytes, several times slower). Build it with `pip install -e .`.",
                RuntimeWarning,
                stacklevel=3,
            )
    return CPU_BACKEND


def _encode_lanes(start: Tensor, freq: Tensor, steps: int, lanes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Run the rANS encoder over a [steps, lanes] grid; returns (final states, words, emitted mask)."""
    device = start.device
    if device.type == "cpu" and cpu_backend() != "torch":
        x, words, emitted = _encode_lanes_numpy(start.numpy(), freq.numpy(), steps, lanes)
        return torch.from_numpy(x), torch.from_numpy(words), torch.from_numpy(emitted)
    cmf = PROB_SCALE - freq  # x' = x + q * (M - f) + start, with q = x // f
    x = torch.full((lanes,), STATE_LOWER, dtype=torch.int64, device=device)
    words = torch.empty((steps, lanes), dtype=torch.int64, device=device)
    emitted = torch.empty((steps, lanes), dtype=torch.bool, device=device)
    for t in range(steps - 1, -1, -1):
        f_t = freq[t]
        high = x >> WORD_BITS
        e_t = torch.ge(high, f_t, out=emitted[t])  # x >= f << 16: one word out
        torch.bitwise_and(x, WORD_MASK, out=words[t])
        x = torch.where(e_t, high, x)
        q = torch.div(x, f_t, rounding_mode="floor")
        x = torch.addcmul(start[t], q, cmf[t]).add_(x)
    return x, words, emitted


def _encode_lanes_numpy(start: np.ndarray, freq: np.ndarray, steps: int, lanes: int):
    """NumPy twin of the torch loop in :func:`_encode_lanes` (same results): (final states, words, emitted).

    ``words[t, k]`` holds the state before step ``t`` in lane ``k`` (int32 view; its low 16 bits
    are the word where ``emitted[t, k]``).
    """
    freq = freq.reshape(-1)
    x_max_minus_one = ((freq << WORD_BITS) - 1).astype(np.uint32)
    comp_freq = (PROB_SCALE - freq).astype(np.uint32)
    states, emitted = _encode_rows_numpy(
        start.reshape(-1).astype(np.uint32), freq.astype(np.uint32), x_max_minus_one, comp_freq, lanes, reuse=False
    )
    return states[0].astype(np.int64), states[1:].view(np.int32), emitted


def _prepare_symbols_numpy(sym: np.ndarray, idx: np.ndarray, enc: _NumpyEncoderTables, check_int32: bool):
    """CPU twin of :func:`_prepare_symbols` in the encoder loop's uint32 form.

    Returns ``(start, freq, x_max_minus_one, comp_freq, bits16, raw_escapes)``: one ``take``
    per operand from the cached per-(table, column) arrays, no int64 per-symbol arrays besides
    the flat table index.
    """
    lo_i, hi_i = int(idx.min()), int(idx.max())
    num_tables = enc.offsets.size - 1
    if lo_i < 0 or hi_i >= num_tables:
        raise ValueError(f"indexes must be in [0, {num_tables}), got range [{lo_i}, {hi_i}]")
    lo, hi = int(sym.min()), int(sym.max())
    if check_int32 and (lo < INT32_MIN or hi > INT32_MAX):
        raise ValueError("symbols must fit in int32")
    n = sym.size
    flat = np.multiply(idx, enc.columns, out=_SCRATCH.get("flat", n, np.int64), dtype=np.int64)
    if enc.by_symbol:
        if lo >= enc.base and hi < enc.base + enc.columns:  # usual case: no clamping pass
            flat += sym
            flat -= enc.base
        else:
            flat += np.clip(sym.astype(np.int64) - enc.base, 0, enc.columns - 1)
    else:
        col = sym.astype(np.int64) - enc.offsets_minus_one.take(idx)
        flat += np.clip(col, 0, enc.columns - 1, out=col)
    start = enc.start_flags.take(flat, out=_SCRATCH.get("start", n, np.uint32), mode="clip")
    raw = np.zeros(0, dtype=np.int64)
    if int(start.max()) >= 1 << _FLAG_SHIFT:  # something escaped or impossible
        flags = start >> _FLAG_SHIFT
        impossible = np.flatnonzero(flags & 2)
        if impossible.size:
            bad = int(impossible[0])
            raise ValueError(
                f"symbol {int(sym[bad])} at flat position {bad} (table {int(idx[bad])}) "
                "has zero probability in its table"
            )
        esc_pos = np.flatnonzero(flags)
        esc_idx = idx.take(esc_pos)
        v = sym.take(esc_pos).astype(np.int64) - enc.offsets.take(esc_idx)
        m = enc.max_values.take(esc_idx)
        raw = np.where(v < 0, -2 * v - 1, 2 * (v - m))
        start &= (1 << _FLAG_SHIFT) - 1
    freq = enc.freq.take(flat, out=_SCRATCH.get("freq", n, np.uint32), mode="clip")
    x_max_minus_one = enc.x_max_minus_one.take(flat, out=_SCRATCH.get("x_max", n, np.uint32), mode="clip")
    comp_freq = enc.comp_freq.take(flat, out=_SCRATCH.get("comp_freq", n, np.uint32), mode="clip")
    bits16 = int(enc.cost16.take(flat, out=_SCRATCH.get("cost16", n, np.uint16), mode="clip").sum(dtype=np.int64))
    return start, freq, x_max_minus_one, comp_freq, bits16, raw


def _prepare_symbols_compiled(sym: np.ndarray, idx: np.ndarray, enc: _NumpyEncoderTables):
    """:func:`_prepare_symbols_numpy` in one compiled pass: ``(start, freq, bits16, raw_escapes)``."""
    num_tables = enc.offsets.size - 1
    if sym.dtype != np.int32:
        if sym.size and (int(sym.min()) < INT32_MIN or int(sym.max()) > INT32_MAX):
            raise ValueError("symbols must fit in int32")
        sym = sym.astype(np.int32)
    if idx.dtype != np.int32:
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= num_tables):
            raise ValueError(f"indexes must be in [0, {num_tables}), got range [{int(idx.min())}, {int(idx.max())}]")
        idx = idx.astype(np.int32)
    sym, idx = np.ascontiguousarray(sym), np.ascontiguousarray(idx)
    n = sym.size
    start = _SCRATCH.get("start", n, np.uint32)
    freq = _SCRATCH.get("freq", n, np.uint32)
    esc_pos = _SCRATCH.get("escapes", n, np.int64)
    status, bits16, num_esc, bad = _compiled.prepare(
        sym, idx, num_tables, enc.columns, enc.base, enc.by_symbol, enc.offsets_minus_one,
        enc.start_flags, enc.freq, enc.cost16, start, freq, esc_pos,
    )
    if status == 2:
        raise ValueError(f"indexes must be in [0, {num_tables}), got range [{int(idx.min())}, {int(idx.max())}]")
    if status == 1:
        raise ValueError(
            f"symbol {int(sym[bad])} at flat position {bad} (table {int(idx[bad])}) has zero probability in its table"
        )
    raw = np.zeros(0, dtype=np.int64)
    if num_esc:
        pos = esc_pos[:num_esc]
        esc_idx = idx.take(pos)
        v = sym.take(pos).astype(np.int64) - enc.offsets.take(esc_idx)
        m = enc.max_values.take(esc_idx)
        raw = np.where(v < 0, -2 * v - 1, 2 * (v - m))
    return start, freq, bits16, raw


def _encode_flat_numpy(
    start: np.ndarray, freq: np.ndarray, x_max_minus_one: np.ndarray, comp_freq: np.ndarray, lanes: int
) -> tuple[np.ndarray, np.ndarray]:
    """The encoder for one item on CPU: :func:`_encode_rows_numpy`, then the words picked out.

    Returns the final states (int64) and the words (uint32 holding 16-bit values) in stream
    order (step ascending, lane ascending).
    """
    states, emitted = _encode_rows_numpy(start, freq, x_max_minus_one, comp_freq, lanes, reuse=True)
    flat_emitted = emitted.reshape(-1)
    words = _SCRATCH.get("words", int(np.count_nonzero(flat_emitted)), np.uint32)
    np.compress(flat_emitted, states[1:].reshape(-1), out=words)
    return states[0].astype(np.int64), words


def _encode_rows_numpy(
    start: np.ndarray,
    freq: np.ndarray,
    x_max_minus_one: np.ndarray,
    comp_freq: np.ndarray,
    lanes: int,
    reuse: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The encoder loop on CPU over flat symbols in lane order (last step may be partial, no padding).

    Same integer operations as :func:`_encode_lanes` (so the same bytes), arranged for NumPy's
    per-call overhead: unsigned 32-bit arithmetic (the state stays below ``2**32``), no
    data-dependent branches (a word goes out by shifting the state by ``16 * emitted`` rather
    than by a masked shift), and no per-step output: every step writes its new states into its
    own row of ``states`` and its emission mask into ``emitted``; the words (the low 16 bits
    of the state before a step, where that step emitted) are picked out afterwards in one pass
    over all steps. Returns ``states`` (uint32 ``[steps + 1, lanes]``, row ``t``: the states before
    step ``t``, row 0: the final states) and ``emitted`` (bool ``[steps, lanes]``). With
    ``reuse`` both live in this thread's reused buffers (valid until its next call).
    """
    n = freq.size
    if lanes == 0:  # only empty items (a batch of zero-symbol streams): nothing to code
        return np.full((1, 0), STATE_LOWER, dtype=np.uint32), np.zeros((0, 0), dtype=bool)
    full, rest = divmod(n, lanes)
    steps = full + (rest > 0)
    if reuse:
        states = _SCRATCH.get("states", (steps + 1) * lanes, np.uint32).reshape(steps + 1, lanes)
        emitted = _SCRATCH.get("emitted", steps * lanes, bool).reshape(steps, lanes)
    else:
        states = np.empty((steps + 1, lanes), dtype=np.uint32)
        emitted = np.empty((steps, lanes), dtype=bool)
    emitted[full:] = False
    states[steps] = STATE_LOWER
    shift = np.empty(lanes, dtype=np.uint32)
    q = np.empty(lanes, dtype=np.uint32)
    x = np.empty(lanes, dtype=np.uint32)

    if rest:  # the last, partial step: lanes [0, rest); the others keep the initial state
        at = full * lanes
        states[full, rest:] = STATE_LOWER
        x_in, sh, qr, xr = states[steps, :rest], shift[:rest], q[:rest], x[:rest]
        e = np.greater(x_in, x_max_minus_one[at:], out=emitted[full, :rest])
        np.left_shift(e, 4, out=sh, casting="unsafe")
        np.right_shift(x_in, sh, out=xr)
        np.floor_divide(xr, freq[at:], out=qr)
        qr *= comp_freq[at:]
        xr += qr
        np.add(xr, start[at:], out=states[full, :rest])
    cut = full * lanes
    xm1, f, cf, st = (a[:cut].reshape(full, lanes) for a in (x_max_minus_one, freq, comp_freq, start))
    greater, left_shift, right_shift, floor_divide, add = (
        np.greater, np.left_shift, np.right_shift, np.floor_divide, np.add
    )
    for t in range(full - 1, -1, -1):  # the partial step's operations, on all lanes
        x_in = states[t + 1]
        e = greater(x_in, xm1[t], out=emitted[t])
        left_shift(e, 4, out=shift, casting="unsafe")
        right_shift(x_in, shift, out=x)
        floor_divide(x, f[t], out=q)
        q *= cf[t]
        x += q
        add(x, st[t], out=states[t])
    return states, emitted


def _encode_single_cpu(symbols, indexes, tables: CdfTables) -> bytes:
    """One item on CPU (the compiled or NumPy path of :func:`encode_batch`); same bytes as the torch path."""
    sym = _symbols_tensor(symbols, torch.device("cpu"))
    idx = _indexes_tensor(indexes, torch.device("cpu"))
    if sym.numel() != idx.numel():
        raise ValueError(f"symbols has {sym.numel()} elements but indexes has {idx.numel()}")
    if sym.numel() == 0:
        return bytes([FORMAT_TAG]) + _varint(0) + _varint(0)
    enc = tables.numpy_encoder()
    if cpu_backend() == "c":
        start, freq, bits16, raw = _prepare_symbols_compiled(sym.numpy(), idx.numpy(), enc)
        lanes = lanes_for(freq.size, bits16)
        escapes = _pack_escapes(torch.from_numpy(raw))
        x = np.empty(lanes, dtype=np.uint32)
        out = _SCRATCH.get("words16", freq.size, np.uint16)
        count = _compiled.encode(start, freq, lanes, x, out)
        head = bytes([FORMAT_TAG]) + _varint(lanes) + _varint(len(escapes))
        return head + _pack_states(x) + out[out.size - count :].astype("<u2", copy=False).tobytes() + escapes
    start, freq, xm1, comp_freq, bits16, raw = _prepare_symbols_numpy(
        sym.numpy(), idx.numpy(), enc, _needs_int32_check(symbols)
    )
    lanes = lanes_for(freq.size, bits16)
    escapes = _pack_escapes(torch.from_numpy(raw))
    x, words = _encode_flat_numpy(start, freq, xm1, comp_freq, lanes)
    head = bytes([FORMAT_TAG]) + _varint(lanes) + _varint(len(escapes))
    return head + _pack_states(x) + words.astype("<u2").tobytes() + escapes


def _estimate_bits16(freq: Tensor) -> int:
    """Ideal size in 1/16 bit (rounded up per symbol), integer, so it is the same on every device.

    Every symbol counts (no sampling): the decoder's lane-count plausibility check relies on
    this never underestimating the size of a real stream by much.
    """
    if freq.numel() == 0:
        return 0
    return int(_cost16(freq.device).index_select(0, freq).sum())


_COST16_BY_DEVICE: dict[str, Tensor] = {}


def _cost16(device: torch.device) -> Tensor:
    key = str(device)
    if key not in _COST16_BY_DEVICE:
        _COST16_BY_DEVICE[key] = _COST16.to(device)
    return _COST16_BY_DEVICE[key]


def _words_to_bytes(words: Tensor) -> bytes:
    words = words.cpu()
    if words.dtype != torch.uint16:
        words = words.to(torch.int64)
    return words.numpy().astype("<u2", copy=False).tobytes()


def encode_batch(symbols_list, indexes_list, cdfs: TableArg, cdf_lengths=None, offsets=None) -> list[bytes]:
    """Encode many independent items in one pass; item ``i`` gives the same bytes as encoding it alone.

    >>> import torch
    >>> cdf = [[0, 16384, 49152, 65535, 65536]]
    >>> indexes = [torch.zeros(3, dtype=torch.int64), [0]]
    >>> blobs = encode_batch([torch.tensor([0, 1, 2]), torch.tensor([5])], indexes, cdf, [5], [0])
    >>> [t.tolist() for t in decode_batch(blobs, indexes, cdf, [5], [0])]
    [[0, 1, 2], [5]]
    """
    if len(symbols_list) != len(indexes_list):
        raise ValueError("symbols_list and indexes_list must have the same length")
    if not len(symbols_list):
        return []
    first = symbols_list[0]
    device = _coding_device(_working_device(first, cdfs))
    tables = prepare_tables(cdfs, cdf_lengths, offsets, device)
    backend = cpu_backend() if device.type == "cpu" else None
    if backend == "c" or (backend == "numpy" and len(symbols_list) == 1):
        # Compiled loops: item by item (one pass over its symbols each, so nothing to gain from a
        # shared grid); the bytes of an item never depend on the others.
        return [_encode_single_cpu(s, i, tables) for s, i in zip(symbols_list, indexes_list)]
    starts, freqs, counts, lanes, escapes = [], [], [], [], []
    for symbols, indexes in zip(symbols_list, indexes_list):
        start, freq, raw, _ = _prepare_symbols(symbols, indexes, tables, device)
        n = freq.numel()
        bits16 = _estimate_bits16(freq)
        counts.append(n)
        lanes.append(lanes_for(n, bits16))
        starts.append(start)
        freqs.append(freq)
        escapes.append(_pack_escapes(raw))
    position, steps, total_lanes = _layout(counts, lanes, device)
    # Padding cells (short items, last partial step) code the "everything" bin: an exact no-op.
    grid_start = torch.zeros(steps * total_lanes, dtype=torch.int64, device=device)
    grid_freq = torch.full((steps * total_lanes,), PROB_SCALE, dtype=torch.int64, device=device)
    if len(counts) == 1:  # one item: the grid is the symbols in order, then padding
        grid_start[: counts[0]] = starts[0]
        grid_freq[: counts[0]] = freqs[0]
    elif position.numel():
        grid_start[position] = torch.cat(starts)
        grid_freq[position] = torch.cat(freqs)
    states, words, emitted = _encode_lanes(
        grid_start.view(steps, total_lanes), grid_freq.view(steps, total_lanes), steps, total_lanes
    )
    states = states.cpu()
    return _assemble(counts, lanes, escapes, states, words, emitted)


def _assemble(counts, lanes, escapes, states, words, emitted) -> list[bytes]:
    """Blobs from the final states and the [steps, lanes] words / emitted mask of one or more items."""
    blobs = []
    lane_first = 0
    for n, k, esc in zip(counts, lanes, escapes):
        cols = slice(lane_first, lane_first + k)
        lane_first += k
        item_words = words[:, cols][emitted[:, cols]] if k else words.new_zeros(0)
        head = bytes([FORMAT_TAG]) + _varint(k) + _varint(len(esc))
        state_bytes = _pack_states(states[cols].numpy())
        blobs.append(head + state_bytes + _words_to_bytes(item_words) + esc)
    return blobs


def encode_with_indexes(symbols, indexes, cdfs: TableArg, cdf_lengths=None, offsets=None) -> bytes:
    """Encode integer ``symbols`` with the CDF table ``indexes`` picks for each (CompressAI's meaning).

    ``symbols`` and ``indexes``: tensors of any shape (flattened in C order) on CPU or CUDA, or
    lists. ``cdfs``: ``[num_tables, max_length]`` 16-bit-precision integer CDFs (tensor or list of
    rows), or a :class:`CdfTables` (then ``cdf_lengths`` / ``offsets`` are not needed).

    >>> import torch
    >>> cdf = [[0, 16384, 49152, 65535, 65536]]
    >>> x = torch.tensor([[0, 1], [2, -7]])
    >>> blob = encode_with_indexes(x, torch.zeros_like(x), cdf, [5], [0])
    >>> decode_with_indexes(blob, torch.zeros_like(x), cdf, [5], [0]).tolist()
    [[0, 1], [2, -7]]
    """
    return encode_batch([symbols], [indexes], cdfs, cdf_lengths, offsets)[0]


# --------------------------------------------------------------------------------------
# Decoder
# --------------------------------------------------------------------------------------


@dataclass
class _ParsedBlob:
    lanes: int
    states: np.ndarray
    words_bytes: memoryview  # the words, little-endian uint16
    escapes: bytes

    @property
    def words(self) -> np.ndarray:
        """The words as int64 (for the NumPy and torch loops)."""
        return np.frombuffer(self.words_bytes, dtype="<u2").astype(np.int64)


def _parse(blob: bytes, num_symbols: int) -> _ParsedBlob:
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"rANS blob must be bytes, got {type(blob).__name__}")
    blob = bytes(blob)
    if len(blob) < 3 or blob[0] != FORMAT_TAG:
        raise BitstreamError("not a neuralcodec rANS blob (bad tag or too short)")
    lanes, pos = _read_varint(blob, 1)
    esc_len, pos = _read_varint(blob, pos)
    if num_symbols == 0:
        if lanes or esc_len or pos != len(blob):
            raise BitstreamError("rANS blob does not match an empty symbol tensor")
        return _ParsedBlob(0, np.zeros(0, np.int64), memoryview(b""), b"")
    if not 1 <= lanes <= num_symbols:
        raise BitstreamError(f"rANS blob declares {lanes} lanes for {num_symbols} symbols")
    if pos + (lanes + 1) // 2 + esc_len > len(blob):
        raise BitstreamError("rANS blob length does not match its header (truncated or corrupted)")
    states, pos = _unpack_states(blob, pos, lanes)
    rest = len(blob) - pos - esc_len
    if rest < 0 or rest % 2:
        raise BitstreamError("rANS blob length does not match its header (truncated or corrupted)")
    num_words = rest // 2
    if num_words > num_symbols:
        raise BitstreamError("rANS blob holds more words than symbols")
    # A lane count far below what the encoder picks for this size would only make decoding slow
    # (up to one step per symbol). rANS never spends more than twice a symbol's ideal cost, so a
    # real stream's ideal size is well above an eighth of its payload, and the encoder's lane
    # count for that is a safe lower bound.
    payload_bits16 = 16 * 8 * (len(blob) - esc_len)
    floor_bits16 = payload_bits16 // 8
    rules = (lanes_for, _lanes_for_session2, _lanes_for_session1)
    if lanes < min(rule(num_symbols, floor_bits16) for rule in rules):
        raise BitstreamError("rANS blob declares an implausible lane count")
    words = memoryview(blob)[pos : pos + 2 * num_words]
    pos += 2 * num_words
    return _ParsedBlob(lanes, states, words, blob[pos:])


def _decode_lanes(
    x: Tensor,
    table_base: Tensor,
    lut: Tensor,
    start: Tensor,
    freq: Tensor,
    words: Tensor,
    ptr: Tensor,
    lane_first: Tensor | None,
    lane_end: Tensor | None,
    lane_item: Tensor | None,
    steps: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run the rANS decoder over a [steps, lanes] grid; returns (final states, read pointers, bins).

    ``ptr`` holds, per item, the index of the last word consumed; an item's words follow it.
    """
    lanes = x.numel()
    backend = cpu_backend() if x.device.type == "cpu" else None
    if backend == "numpy" and lane_item is None:
        x, p, bins = _decode_single_numpy(
            x.numpy().copy(), table_base.numpy(), lut.numpy(), start.numpy(), freq.numpy(), words.numpy(), int(ptr),
            steps,
        )
        return torch.from_numpy(x), torch.tensor(p, dtype=torch.int64), torch.from_numpy(bins)
    if backend == "numpy":
        n = lambda t: None if t is None else t.numpy()  # noqa: E731
        x, ptr, bins = _decode_lanes_numpy(
            x.numpy().copy(), n(table_base), n(lut), n(start), n(freq), n(words), ptr.numpy().copy(),
            n(lane_first), n(lane_end), n(lane_item), steps,
        )
        return torch.from_numpy(x), torch.from_numpy(ptr), torch.from_numpy(bins)
    bins = torch.empty((steps, lanes), dtype=torch.int32, device=x.device)
    ranks0 = torch.zeros(lanes + 1, dtype=torch.int64, device=x.device)  # [0, cumsum(need)...]
    ranks = ranks0[1:]
    for t in range(steps):
        slot = x & WORD_MASK
        b_t = torch.index_select(lut, 0, table_base[t] + slot, out=bins[t])
        x = torch.addcmul(slot - start.index_select(0, b_t), freq.index_select(0, b_t), x >> WORD_BITS)
        need = x < STATE_LOWER
        torch.cumsum(need, 0, out=ranks)
        if lane_item is None:  # one item: one read pointer
            pos = ranks + ptr
            ptr = ptr + ranks[-1]
        else:  # several items: ranks restart at each item's first lane
            before = ranks0[lane_first]
            pos = ranks + (ptr - before)[lane_item]
            ptr = ptr + ranks0[lane_end] - before
        x = torch.where(need, (x << WORD_BITS) | words.index_select(0, pos), x)
    return x, ptr, bins


def _decode_single_numpy(x, table_base, lut, start, freq, words, p, steps):
    """The decoder loop for one item on CPU: the arithmetic of :func:`_decode_lanes`, fewer operations.

    The lanes that read a word at a step take the next words of the stream in lane order, so
    they are found with one ``flatnonzero`` and served by a slice (no cumulative sum, no gather
    of positions, no masked copy). Returns (final states, index of the last word read, bins
    ``[steps, lanes]``).
    """
    lanes = x.size
    bins = np.empty((steps, lanes), dtype=lut.dtype)
    slot = np.empty(lanes, dtype=np.int64)
    flat_slot = np.empty(lanes, dtype=np.int64)
    need = np.empty(lanes, dtype=bool)
    limit = words.size - 1
    bitwise_and, add, less, flatnonzero = np.bitwise_and, np.add, np.less, np.flatnonzero
    for t in range(steps):
        bitwise_and(x, WORD_MASK, out=slot)
        b_t = lut.take(add(table_base[t], slot, out=flat_slot), out=bins[t])
        x >>= WORD_BITS
        x *= freq.take(b_t)
        x += slot
        x -= start.take(b_t)
        reading = flatnonzero(less(x, STATE_LOWER, out=need))
        m = reading.size
        if m:
            if p + m > limit:  # only a corrupted stream reads past its words
                raise BitstreamError("rANS blob is corrupted (reads past its words)")
            x[reading] = (x[reading] << WORD_BITS) | words[p + 1 : p + 1 + m]
            p += m
    return x, p, bins


def _decode_lanes_numpy(x, table_base, lut, start, freq, words, ptr, lane_first, lane_end, lane_item, steps):
    """NumPy twin of the torch loop in :func:`_decode_lanes` (same operations, same results)."""
    lanes = x.size
    bins = np.empty((steps, lanes), dtype=lut.dtype)
    ranks0 = np.zeros(lanes + 1, dtype=np.int64)
    ranks = ranks0[1:]
    slot = np.empty(lanes, dtype=np.int64)
    tmp = np.empty(lanes, dtype=np.int64)
    need = np.empty(lanes, dtype=bool)
    single = lane_item is None
    p = int(ptr) if single else None
    for t in range(steps):
        np.bitwise_and(x, WORD_MASK, out=slot)
        np.add(table_base[t], slot, out=tmp)
        b_t = lut.take(tmp, out=bins[t])
        x >>= WORD_BITS
        x *= freq.take(b_t)
        x += slot
        x -= start.take(b_t)
        np.less(x, STATE_LOWER, out=need)
        np.cumsum(need, out=ranks)
        if single:
            pos = ranks + p
            p += int(ranks[-1])
        else:
            before = ranks0[lane_first]
            pos = ranks + (ptr - before)[lane_item]
            ptr = ptr + ranks0[lane_end] - before
        np.left_shift(x, WORD_BITS, out=tmp)
        tmp |= words.take(pos)
        np.copyto(x, tmp, where=need)
    return x, (np.array(p, dtype=np.int64) if single else ptr), bins


def _decode_items_grid(parsed, counts, all_idx, tables: CdfTables, device, num_blobs: int) -> Tensor:
    """Bins of every symbol (items concatenated) from the NumPy or torch step loops over one [steps, lanes] grid."""
    lanes = [p.lanes for p in parsed]
    position, steps, total_lanes = _layout(counts, lanes, device)
    if total_lanes:
        pad_base = tables.num_tables * PROB_SCALE  # padding cells decode with the no-op table
        table_base = torch.full((steps * total_lanes,), pad_base, dtype=torch.int64, device=device)
        if len(counts) == 1:
            torch.mul(all_idx, PROB_SCALE, out=table_base[: counts[0]])
        else:
            table_base[position] = all_idx * PROB_SCALE
        # Word buffer: a dummy, then each item's words padded to its symbol count, so that every
        # read position stays inside the buffer whatever the (possibly corrupted) data does.
        buffer = np.zeros(1 + sum(counts), dtype=np.int64)
        word_first = []
        at = 1
        for p, n in zip(parsed, counts):
            word_first.append(at)
            item_words = p.words
            buffer[at : at + item_words.size] = item_words
            at += n
        words = torch.from_numpy(buffer).to(device)
        x0 = torch.from_numpy(np.concatenate([p.states for p in parsed])).to(device)
        items_with_lanes = [i for i, k in enumerate(lanes) if k]
        if len(items_with_lanes) == 1:
            ptr = torch.tensor(word_first[items_with_lanes[0]] - 1, dtype=torch.int64, device=device)
            lane_first = lane_end = lane_item = None
        else:
            k = torch.tensor([lanes[i] for i in items_with_lanes], dtype=torch.int64)
            lane_end_cpu = torch.cumsum(k, 0)
            lane_first = (lane_end_cpu - k).to(device)
            lane_end = lane_end_cpu.to(device)
            lane_item = torch.repeat_interleave(torch.arange(k.numel()), k).to(device)
            ptr = torch.tensor([word_first[i] - 1 for i in items_with_lanes], dtype=torch.int64, device=device)
        x, ptr, bins = _decode_lanes(
            x0,
            table_base.view(steps, total_lanes),
            tables.decode_lut(),
            tables.start,
            tables.freq,
            words,
            ptr,
            lane_first,
            lane_end,
            lane_item,
            steps,
        )
        x = x.cpu().numpy()
        ptr = ptr.reshape(-1).cpu().numpy()
        bins = bins.reshape(-1)
        bins = (bins[: counts[0]] if len(counts) == 1 else bins.index_select(0, position))
    else:
        x = np.zeros(0, np.int64)
        bins = torch.zeros(0, dtype=torch.int64, device=device)
    # End checks: each item consumed exactly its words, and every lane is back at the initial state.
    lane_at = 0
    for j, i in enumerate(i for i, k in enumerate(lanes) if k):
        k = lanes[i]
        consumed_all = int(ptr[j]) == word_first[i] - 1 + len(parsed[i].words_bytes) // 2
        if not consumed_all or bool((x[lane_at : lane_at + k] != STATE_LOWER).any()):
            where = f"item {i}: " if num_blobs > 1 else ""
            raise BitstreamError(where + "rANS blob is corrupted or does not match these indexes/tables")
        lane_at += k
    return bins


def _decode_batch_compiled(parsed, idx_flat, counts, shapes, tables: CdfTables, num_blobs: int) -> list[Tensor]:
    """:func:`decode_batch` on CPU with the compiled loop: item by item, symbols straight out of the loop
    (escaped ones filled in from each item's escape section)."""
    coarse, bin_table = tables.compiled_decoder()
    offsets = tables.offsets.cpu().numpy()
    max_values = tables.max_values.cpu().numpy()
    results = []
    for i, (p, n, idx, shape) in enumerate(zip(parsed, counts, idx_flat, shapes)):
        where = f"item {i}: " if num_blobs > 1 else ""
        out = np.empty(n, dtype=np.int32)
        if n:
            idx32 = np.ascontiguousarray(idx.numpy(), dtype=np.int32)  # checked to be in [0, num_tables)
            esc_pos = np.empty(n, dtype=np.int64)
            status, num_esc = _compiled.decode(
                np.ascontiguousarray(p.states, dtype=np.int64), idx32, tables.num_tables, tables.bins_per_table,
                coarse, bin_table, offsets, max_values, p.words_bytes, out, esc_pos,
            )
            if status:
                raise BitstreamError(where + "rANS blob is corrupted or does not match these indexes/tables")
        else:
            num_esc = 0
        if num_esc or p.escapes:  # (no escapes, no escape data: the common case, nothing to unpack)
            try:
                raw = _unpack_escapes(p.escapes, num_esc).numpy()
            except BitstreamError as exc:
                raise BitstreamError(where + str(exc)) from None
        if num_esc:
            esc_pos = esc_pos[:num_esc]
            esc_idx = idx32.take(esc_pos)
            value = np.where(raw & 1 == 1, -((raw + 1) >> 1), (raw >> 1) + max_values.take(esc_idx))
            value += offsets.take(esc_idx)
            if int(value.min()) < INT32_MIN or int(value.max()) > INT32_MAX:
                raise BitstreamError(where + "rANS escape section decodes to a value outside int32")
            out[esc_pos] = value
        results.append(torch.from_numpy(out).reshape(shape))
    return results


def decode_batch(blobs: Sequence[bytes], indexes_list, cdfs: TableArg, cdf_lengths=None, offsets=None) -> list[Tensor]:
    """Decode many independent blobs in one pass (the inverse of :func:`encode_batch`).

    Each result is int32 with the shape of its ``indexes`` and on its device. Raises
    :class:`~neuralcodec.BitstreamError` (naming the item) if any blob is malformed.

    >>> cdf = [[0, 16384, 49152, 65535, 65536]]
    >>> blobs = encode_batch([[1, 1, 0], [2]], [[0, 0, 0], [0]], cdf, [5], [0])
    >>> [t.tolist() for t in decode_batch(blobs, [[0, 0, 0], [0]], cdf, [5], [0])]
    [[1, 1, 0], [2]]
    """
    if len(blobs) != len(indexes_list):
        raise ValueError("blobs and indexes_list must have the same length")
    if not len(blobs):
        return []
    first = indexes_list[0]
    result_device = _working_device(first, cdfs)
    device = _coding_device(result_device)
    if device != result_device:  # coded by the CPU loops: the symbols go back to the indexes' device
        return [t.to(result_device) for t in decode_batch(
            blobs, [i.to(device) if isinstance(i, Tensor) else i for i in indexes_list],
            prepare_tables(cdfs, cdf_lengths, offsets, device))]
    tables = prepare_tables(cdfs, cdf_lengths, offsets, device)
    idx_flat, shapes, counts, parsed = [], [], [], []
    for i, (blob, indexes) in enumerate(zip(blobs, indexes_list)):
        idx = _indexes_tensor(indexes, device)
        shapes.append(tuple(indexes.shape) if isinstance(indexes, Tensor) else tuple(np.shape(indexes)))
        try:
            parsed.append(_parse(blob, idx.numel()))
        except BitstreamError as exc:
            raise BitstreamError(f"item {i}: {exc}" if len(blobs) > 1 else str(exc)) from None
        idx_flat.append(idx)
        counts.append(idx.numel())
    nonempty = [t for t in idx_flat if t.numel()]
    if nonempty:  # one range check for the whole batch (per item it dominated batches of tiny items)
        lo, hi = (int(v) for v in torch.aminmax(torch.cat(nonempty) if len(nonempty) > 1 else nonempty[0]))
        if lo < 0 or hi >= tables.num_tables:
            raise ValueError(f"indexes must be in [0, {tables.num_tables}), got range [{lo}, {hi}]")
    if device.type == "cpu" and cpu_backend() == "c":
        return _decode_batch_compiled(parsed, idx_flat, counts, shapes, tables, len(blobs))
    all_idx = (torch.cat(idx_flat) if idx_flat else torch.zeros(0, dtype=torch.int64, device=device)).to(torch.int64)
    bins = _decode_items_grid(parsed, counts, all_idx, tables, device, len(blobs))
    out = tables.symbol_of_bin.index_select(0, bins)
    escaped = tables.escape_of_bin.index_select(0, bins)
    esc_count = torch.zeros(len(blobs), dtype=torch.int64)
    if bool(escaped.any()):
        item_of = torch.repeat_interleave(torch.arange(len(blobs)), torch.tensor(counts)).to(device)
        esc_count = torch.bincount(item_of[escaped], minlength=len(blobs)).cpu()
    raws = []
    for i, p in enumerate(parsed):
        try:
            raws.append(_unpack_escapes(p.escapes, int(esc_count[i])))
        except BitstreamError as exc:
            raise BitstreamError(f"item {i}: {exc}" if len(blobs) > 1 else str(exc)) from None
    if bool(escaped.any()):
        raw = torch.cat(raws).to(device)
        esc_pos = torch.nonzero(escaped).reshape(-1)
        esc_idx = all_idx.index_select(0, esc_pos)
        m = tables.max_values.index_select(0, esc_idx)
        decoded = torch.where((raw & 1) == 1, -((raw + 1) >> 1), (raw >> 1) + m)
        out[esc_pos] = decoded + tables.offsets.index_select(0, esc_idx)
        if bool(((out < INT32_MIN) | (out > INT32_MAX)).any()):
            raise BitstreamError("rANS escape section decodes to a value outside int32")
    out = out.to(torch.int32)
    results = []
    at = 0
    for n, shape in zip(counts, shapes):
        results.append(out[at : at + n].reshape(shape))
        at += n
    return results


def decode_with_indexes(blob: bytes, indexes, cdfs: TableArg, cdf_lengths=None, offsets=None) -> Tensor:
    """Decode a blob from :func:`encode_with_indexes`: int32, shape of ``indexes``, on its device.

    Raises :class:`~neuralcodec.BitstreamError` for a truncated, corrupted or foreign blob
    (see the module docstring for exactly what is guaranteed).

    >>> cdf = [[0, 16384, 49152, 65535, 65536]]
    >>> decode_with_indexes(encode_with_indexes([3, 0, 9], [0, 0, 0], cdf, [5], [0]), [0, 0, 0], cdf, [5], [0]).tolist()
    [3, 0, 9]
    """
    return decode_batch([blob], [indexes], cdfs, cdf_lengths, offsets)[0]
