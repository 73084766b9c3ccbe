"""Integer tables (float64, exact totals) and the entropy models' training and coding paths."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neuralcodec import BitstreamError
from neuralcodec.entropy import Categorical, EntropyBottleneck, GaussianConditional, pmf_to_quantized_cdf, table_hash
from neuralcodec.entropy import models as entropy_models
from neuralcodec.entropy.tables import (
    check_tables,
    default_scale_table,
    discretized_gaussian_tables,
    tables_from_pmfs,
)

torch.set_num_threads(1)

FAST = settings(max_examples=100, deadline=None)


def _coder_available() -> bool:
    try:
        entropy_models._coder()
        return True
    except ImportError:
        return False


needs_coder = pytest.mark.skipif(not _coder_available(), reason="neuralcodec.entropy.rans is not available")


def _freqs(cdf: torch.Tensor, n_bins: int) -> torch.Tensor:
    cdf = cdf.to(torch.int64)
    return cdf[1 : n_bins + 1] - cdf[:n_bins]


# -- pmf_to_quantized_cdf -----------------------------------------------------------------


@FAST
@given(
    st.lists(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=300), min_size=1, max_size=6),
    st.integers(9, 16),
)
def test_quantized_cdf_properties(rows, precision):
    rows = [r if sum(r) > 0 else [1.0] + r[1:] for r in rows]
    lengths = [len(r) for r in rows]
    width = max(lengths)
    pmf = torch.zeros(len(rows), width, dtype=torch.float64)
    for i, r in enumerate(rows):
        pmf[i, : len(r)] = torch.tensor(r, dtype=torch.float64)
    pmf[torch.arange(width)[None, :] >= torch.tensor(lengths)[:, None]] = 123.0  # padding is ignored
    cdf = pmf_to_quantized_cdf(pmf, precision, lengths=lengths)
    assert cdf.dtype == torch.int32 and cdf.shape == (len(rows), width + 1)
    for i, n in enumerate(lengths):
        f = _freqs(cdf[i], n)
        assert int(cdf[i, 0]) == 0 and int(cdf[i, n]) == 1 << precision  # exact total
        assert bool((f >= 1).all())  # every bin, zero-probability ones included, is codable
        assert bool((cdf[i, n + 1 :] == 0).all())
        # Bins not pinned to 1 get their proportional share, rounded one way or the other.
        p = pmf[i, :n] / pmf[i, :n].sum()
        pinned = f == 1
        budget = (1 << precision) - int(pinned.sum())
        share = p[~pinned] * budget / p[~pinned].sum() if bool((~pinned).any()) else p[~pinned]
        assert bool(((f[~pinned].double() - share).abs() < 1.0 + 1e-9).all())
    # Deterministic, and a row does not depend on its neighbours or on the input dtype.
    assert torch.equal(cdf, pmf_to_quantized_cdf(pmf.clone(), precision, lengths=lengths))
    single = pmf_to_quantized_cdf(pmf[0, : lengths[0]], precision)
    assert torch.equal(single, cdf[0, : lengths[0] + 1])


def test_quantized_cdf_is_float64():
    # Two probabilities that float32 cannot tell apart must still get different counts.
    eps = 2.0**-30
    p = torch.tensor([0.5 + 3 * eps, 0.5 - 3 * eps], dtype=torch.float64)
    assert float(p.float()[0]) == float(p.float()[1])
    cdf = pmf_to_quantized_cdf(p, precision=30)
    assert int(cdf[1]) == (1 << 29) + 3


def test_quantized_cdf_rejects_bad_input():
    for bad in ([0.5, -0.1], [float("nan"), 1.0], [0.0, 0.0], [float("inf"), 1.0]):
        with pytest.raises(ValueError):
            pmf_to_quantized_cdf(torch.tensor(bad))
    with pytest.raises(ValueError, match="more bins"):
        pmf_to_quantized_cdf(torch.ones(300), precision=8)
    with pytest.raises(ValueError):
        pmf_to_quantized_cdf(torch.ones(3), precision=0)


def test_gaussian_tables_match_compressai_layout_and_beat_its_rounding():
    from compressai.entropy_models import GaussianConditional as CompressAIGaussian

    scales = default_scale_table()
    cdfs, lengths, offsets = discretized_gaussian_tables(scales)
    check_tables(cdfs, lengths, offsets)
    reference = CompressAIGaussian(scales.tolist())
    reference.update()
    assert torch.equal(lengths, reference._cdf_length) and torch.equal(offsets, reference._offset)
    assert cdfs.shape == reference._quantized_cdf.shape

    def cross_entropy(table_cdfs):  # bits per symbol of the true discretized Gaussian, summed over tables
        total = 0.0
        for i, s in enumerate(scales.double().tolist()):
            n = int(lengths[i]) - 1
            x = torch.arange(int(offsets[i]), int(offsets[i]) + n - 1, dtype=torch.float64)
            true_p = 0.5 * (torch.erfc(-(x + 0.5) / s / math.sqrt(2)) - torch.erfc(-(x - 0.5) / s / math.sqrt(2)))
            q = _freqs(table_cdfs[i], n)[:-1].double() / 65536
            total += float(-(true_p * torch.log2(q)).sum())
        return total

    ours, theirs = cross_entropy(cdfs), cross_entropy(reference._quantized_cdf)
    assert ours <= theirs


def test_tables_from_pmfs_and_hash():
    t = tables_from_pmfs([torch.tensor([0.2, 0.8]), torch.tensor([0.1, 0.1, 0.1])], [-1, 5])
    check_tables(*t)
    cdfs, lengths, offsets = t
    assert lengths.tolist() == [4, 5] and offsets.tolist() == [-1, 5]
    assert int(_freqs(cdfs[1], 4)[-1]) > int(_freqs(cdfs[0], 3)[-1])  # escape mass 0.7 vs ~0
    h = table_hash(*t)
    assert len(h) == 16 and h == table_hash(*(x.clone() for x in t))
    changed = cdfs.clone()
    changed[0, 1] += 1
    assert table_hash(changed, lengths, offsets) != h


# -- EntropyBottleneck --------------------------------------------------------------------


def _trained_like_bottleneck(channels=4, seed=0) -> EntropyBottleneck:
    torch.manual_seed(seed)
    eb = EntropyBottleneck(channels)
    with torch.no_grad():  # give channels different widths and medians, as training would
        eb.quantiles.mul_(torch.linspace(0.3, 2.0, channels)[:, None, None])
        eb.quantiles.add_(torch.linspace(-2, 3, channels)[:, None, None])
        eb.matrices[0].add_(torch.linspace(-1, 1, channels)[:, None, None])
    return eb


def test_bottleneck_training_path_and_tables():
    eb = _trained_like_bottleneck()
    y = torch.randn(2, 4, 6, 6, requires_grad=True)
    y_tilde, likelihoods = eb(y)
    assert likelihoods.shape == y.shape and bool((likelihoods > 0).all())
    (-torch.log2(likelihoods).sum() + eb.loss()).backward()
    assert y.grad is not None and eb.matrices[0].grad is not None
    assert eb.update() is True and eb.update() is False  # built once
    check_tables(eb._quantized_cdf, eb._cdf_length, eb._offset)
    assert eb._quantized_cdf.dtype == torch.int32 and eb._quantized_cdf.shape[0] == 4


def test_bottleneck_state_dict_loads_into_fresh_module():
    eb = _trained_like_bottleneck()
    eb.update()
    fresh = EntropyBottleneck(4)
    assert fresh._quantized_cdf.numel() == 0
    fresh.load_state_dict(eb.state_dict(), strict=True)  # table buffers are resized, no helper needed
    assert fresh.table_hash() == eb.table_hash()
    assert fresh.update() is False
    # And back: a module with tables of another size accepts them too.
    other = _trained_like_bottleneck(seed=1)
    with torch.no_grad():
        other.quantiles.mul_(5)
    other.update()
    assert other._quantized_cdf.shape != eb._quantized_cdf.shape
    other.load_state_dict(eb.state_dict(), strict=True)
    assert other.table_hash() == eb.table_hash()


@needs_coder
def test_bottleneck_round_trip_with_escapes():
    eb = _trained_like_bottleneck()
    eb.update()
    eb.eval()
    y = torch.randn(3, 4, 8, 5) * 4
    y[0, 0, 0, 0] = 1e6  # far outside every table: escape path
    y[1, 3, 7, 4] = -12345.6
    y[2, 1, 2, 2] = -3e5
    y[2, 2, 0, 1] = 2.0**30
    strings = eb.compress(y)
    assert isinstance(strings, list) and len(strings) == 3 and all(isinstance(s, bytes) for s in strings)
    expected = eb.dequantize_symbols(eb.symbols(y))
    assert torch.equal(eb.decompress(strings, (8, 5)), expected)
    assert torch.equal(expected, eb(y)[0])  # coding reproduces the eval-mode forward
    symbols = eb.symbols(y)
    blob = eb.compress_symbols(symbols)
    decoded = eb.decompress_symbols(blob, symbols.shape)
    assert decoded.dtype == torch.int32 and torch.equal(decoded, symbols)
    # A fresh module loaded from the state dict decodes the same streams.
    fresh = EntropyBottleneck(4)
    fresh.load_state_dict(eb.state_dict(), strict=True)
    assert torch.equal(fresh.decompress(strings, (8, 5)), expected)
    # Truncated or foreign streams are a BitstreamError, not garbage or another exception.
    with pytest.raises(BitstreamError):
        eb.decompress([strings[0][: len(strings[0]) // 2]], (8, 5))
    with pytest.raises(BitstreamError):
        eb.decompress_symbols(b"not a stream", symbols.shape)
    # Values int32 cannot hold, or NaN, are refused rather than wrapped.
    for bad in (2.0**40, float("nan"), float("inf")):
        y_bad = y.clone()
        y_bad[0, 0, 0, 1] = bad
        with pytest.raises(ValueError):
            eb.compress(y_bad)


@needs_coder
def test_bottleneck_coded_size_close_to_likelihoods():
    eb = _trained_like_bottleneck()
    eb.update()
    eb.eval()
    torch.manual_seed(1)
    medians = eb._get_medians().detach().reshape(1, 4, 1, 1)
    y = medians + torch.randn(1, 4, 128, 128) * torch.tensor([0.5, 1.0, 2.0, 4.0]).reshape(1, 4, 1, 1)
    _, likelihoods = eb(y)
    ideal_bits = float(-torch.log2(likelihoods.double()).sum())
    coded_bits = 8 * len(eb.compress_symbols(eb.symbols(y)))
    assert abs(coded_bits / ideal_bits - 1) < 0.03, (coded_bits, ideal_bits)


# -- GaussianConditional --------------------------------------------------------------------


def test_gaussian_state_dict_and_scale_table():
    gc = GaussianConditional()
    assert gc.update() is True and gc.update() is False
    fresh = GaussianConditional(scale_table=[1.0, 2.0])  # different scale table size
    fresh.load_state_dict(gc.state_dict(), strict=True)
    assert fresh.table_hash() == gc.table_hash() and torch.equal(fresh.scale_table, gc.scale_table)
    assert gc.update_scale_table([0.5, 1.0, 4.0]) is False
    assert gc.update_scale_table([0.5, 1.0, 4.0], force=True) is True
    assert gc._quantized_cdf.shape[0] == 3 and gc.table_hash() != fresh.table_hash()


@needs_coder
def test_gaussian_round_trip_with_means_and_escapes():
    gc = GaussianConditional()
    gc.update()
    torch.manual_seed(2)
    scales = torch.rand(2, 6, 10, 10) * 30 + 0.05
    means = torch.randn_like(scales) * 3
    y = means + torch.randn_like(scales) * scales
    y[0, 0, 0, 0] = 5e5
    y[1, 5, 9, 9] = -7e4
    indexes = gc.build_indexes(scales)
    strings = gc.compress(y, indexes, means)
    out = gc.decompress(strings, indexes, means=means)
    assert torch.allclose(out, torch.round(y - means) + means)
    symbols = gc.quantize(y, "symbols", means)
    blob = gc.compress_symbols(symbols, indexes)
    assert torch.equal(gc.decompress_symbols(blob, indexes), symbols)
    assert gc.indexes_hash(indexes) == gc.indexes_hash(indexes.clone().long())


@needs_coder
def test_gaussian_coded_size_close_to_likelihoods():
    gc = GaussianConditional()
    gc.update()
    gc.eval()
    torch.manual_seed(3)
    table = gc.scale_table
    index = torch.randint(5, 50, (1, 8, 64, 64))
    scales = table[index]  # exactly the table's scales, so the tables model these likelihoods
    y = torch.randn(scales.shape) * scales
    _, likelihoods = gc(y, scales)
    ideal_bits = float(-torch.log2(likelihoods.double()).sum())
    coded_bits = 8 * len(gc.compress_symbols(gc.quantize(y, "symbols"), gc.build_indexes(scales)))
    assert abs(coded_bits / ideal_bits - 1) < 0.03, (coded_bits, ideal_bits)


# -- Categorical ----------------------------------------------------------------------------


def test_categorical_likelihoods_are_differentiable_and_train():
    torch.manual_seed(4)
    prior = Categorical(num_codebooks=2, codebook_size=8)
    skewed = torch.tensor([0.5, 0.2, 0.1, 0.1, 0.05, 0.03, 0.01, 0.01])
    idx = torch.multinomial(skewed, 2 * 4000, replacement=True).reshape(1, 2, 4000)
    likelihoods = prior(idx)
    assert likelihoods.shape == idx.shape and torch.allclose(likelihoods, torch.full_like(likelihoods, 1 / 8))
    start_bits = prior.bits(idx)
    assert math.isclose(float(start_bits), idx.numel() * 3.0, rel_tol=1e-5)
    start_bits.backward()
    assert prior.logits.grad is not None and bool(torch.isfinite(prior.logits.grad).all())
    optimizer = torch.optim.Adam(prior.parameters(), lr=0.1)
    for _ in range(100):
        optimizer.zero_grad()
        loss = prior.bits(idx) / idx.numel()
        loss.backward()
        optimizer.step()
    entropy = float(-(skewed * torch.log2(skewed)).sum())
    assert float(prior.bits(idx)) / idx.numel() < entropy + 0.05
    with pytest.raises(ValueError):
        prior(torch.full((1, 2, 3), 8))
    with pytest.raises(ValueError):
        prior(torch.zeros(1, 3, 3, dtype=torch.long))


def test_categorical_state_dict_and_counts():
    prior = Categorical(3, 16)
    prior.set_from_counts(torch.arange(48.0).reshape(3, 16))
    prior.update()
    fresh = Categorical(3, 16)
    fresh.load_state_dict(prior.state_dict(), strict=True)
    assert fresh.table_hash() == prior.table_hash() and fresh.update() is False
    check_tables(prior._quantized_cdf, prior._cdf_length, prior._offset)


@needs_coder
def test_categorical_round_trip_and_size():
    torch.manual_seed(5)
    prior = Categorical(num_codebooks=2, codebook_size=256)
    probs = torch.softmax(torch.randn(2, 256) * 2, dim=-1)
    prior.set_from_counts(probs * 1e6)
    prior.update()
    idx = torch.stack([torch.multinomial(probs[k], 2 * 2048, replacement=True) for k in range(2)]).reshape(2, 2, 2048)
    idx = idx.transpose(0, 1).contiguous()  # (B=2, K=2, 2048)
    blob = prior.compress(idx)
    decoded = prior.decompress(blob, idx.shape)
    assert decoded.dtype == torch.int64 and torch.equal(decoded, idx)
    ideal_bits = float(prior.bits(idx))
    assert abs(8 * len(blob) / ideal_bits - 1) < 0.03
    strings = prior.compress_batch(idx)
    assert len(strings) == 2 and torch.equal(prior.decompress_batch(strings, idx.shape[1:]), idx)
    with pytest.raises(ValueError):
        prior.compress(torch.full((1, 2, 3), 256))
    with pytest.raises(BitstreamError):
        prior.decompress(blob[:-3], idx.shape)


# -- CUDA -----------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@needs_coder
@pytest.mark.parametrize("cuda_loops", ["torch", "cpu"])
def test_models_code_the_same_bytes_on_cuda(monkeypatch, cuda_loops):
    from neuralcodec.entropy import rans

    monkeypatch.setattr(rans, "CUDA_LOOPS", cuda_loops)
    eb = _trained_like_bottleneck()
    eb.update()
    y = torch.randn(2, 4, 32, 32) * 3
    y[0, 0, 0, 0] = 1e5
    cpu_strings = eb.compress(y)
    eb_cuda = EntropyBottleneck(4)
    eb_cuda.load_state_dict(eb.state_dict(), strict=True)
    eb_cuda.cuda()
    cuda_strings = eb_cuda.compress(y.cuda())
    assert cuda_strings == cpu_strings
    decoded = eb_cuda.decompress(cpu_strings, (32, 32))
    assert decoded.is_cuda and torch.equal(decoded.cpu(), eb.decompress(cpu_strings, (32, 32)))
    gc = GaussianConditional()
    gc.update()
    scales = torch.rand(2, 4, 16, 16) * 10 + 0.2
    idx = gc.build_indexes(scales)
    y = torch.randn_like(scales) * scales
    cpu_blob = gc.compress_symbols(gc.quantize(y, "symbols"), idx)
    gc.cuda()
    assert gc.compress_symbols(gc.quantize(y.cuda(), "symbols"), idx.cuda()) == cpu_blob
