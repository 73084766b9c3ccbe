"""Wavelet packet transforms: perfect reconstruction, agreement with PyWavelets, layout, lifting,
padding helpers, modules and gradients. Everything is small so the file runs in seconds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import pywt
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neuralcodec.transforms import IWPT, WPT, crop_to, iwpt, pad_to_multiple, wpt
from neuralcodec.transforms.lifting import (
    JPEG2000_SCALING,
    ZETA,
    dwt97_axis,
    iwpt_lifting97,
    wpt_lifting97,
)

WAVELETS = ["haar", "db2", "sym4", "coif1", "bior2.2", "bior4.4"]
SHAPES = {1: (2, 3, 32), 2: (2, 2, 16, 32), 3: (1, 2, 16, 16, 32)}
KEYS_3D = ["aaa", "daa", "ada", "dda", "aad", "dad", "add", "ddd"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("levels", [1, 2, 3, 4])
def test_perfect_reconstruction(wavelet, dims, levels):
    gen = torch.Generator().manual_seed(levels * 10 + dims)
    x64 = torch.randn(SHAPES[dims], generator=gen, dtype=torch.float64)
    y64 = wpt(x64, levels, wavelet)
    bands = 2 ** (levels * dims)
    assert y64.shape == (x64.shape[0], x64.shape[1] * bands) + tuple(s // 2**levels for s in x64.shape[2:])
    assert (iwpt(y64, levels, wavelet) - x64).abs().max().item() <= 1e-10
    x32 = x64.float()
    y32 = wpt(x32, levels, wavelet)
    assert y32.dtype == torch.float32
    assert (iwpt(y32, levels, wavelet) - x32).abs().max().item() <= 1e-5
    # float32 coefficients are the float64 ones to float32 accuracy (not a different transform)
    assert torch.allclose(y32.double(), y64, atol=1e-4, rtol=0)


@pytest.mark.parametrize("wavelet", WAVELETS)
def test_one_level_matches_pywt_dwt(wavelet):
    x = np.random.default_rng(0).standard_normal((2, 3, 32))
    y = wpt(torch.from_numpy(x), 1, wavelet).numpy().reshape(2, 3, 2, 16)
    cA, cD = pywt.dwt(x, wavelet, mode="periodization", axis=-1)
    np.testing.assert_allclose(y[:, :, 0], cA, atol=1e-12, rtol=0)
    np.testing.assert_allclose(y[:, :, 1], cD, atol=1e-12, rtol=0)


@pytest.mark.parametrize("wavelet", WAVELETS)
def test_one_level_matches_pywt_dwt2(wavelet):
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 24))
    y = wpt(torch.from_numpy(x), 1, wavelet).numpy().reshape(2, 3, 4, 8, 12)
    cA, (cH, cV, cD) = pywt.dwt2(x, wavelet, mode="periodization")
    for band, expected in enumerate([cA, cH, cV, cD]):  # documented order
        np.testing.assert_allclose(y[:, :, band], expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("wavelet", ["haar", "db2", "bior4.4"])
def test_one_level_matches_pywt_dwtn(wavelet):
    x = np.random.default_rng(2).standard_normal((1, 2, 8, 16, 12))
    y = wpt(torch.from_numpy(x), 1, wavelet).numpy().reshape(1, 2, 8, 4, 8, 6)
    coeffs = pywt.dwtn(x, wavelet, mode="periodization", axes=(2, 3, 4))
    for band, key in enumerate(KEYS_3D):
        np.testing.assert_allclose(y[:, :, band], coeffs[key], atol=1e-12, rtol=0)


@pytest.mark.parametrize("wavelet", ["db2", "bior4.4"])
def test_multilevel_matches_pywt_wavelet_packet_1d(wavelet):
    levels = 3
    x = np.random.default_rng(3).standard_normal(64)
    y = wpt(torch.from_numpy(x)[None, None], levels, wavelet).numpy()[0]
    packet = pywt.WaveletPacket(x, wavelet, mode="periodization", maxlevel=levels)
    for band, path in enumerate(itertools.product("ad", repeat=levels)):
        np.testing.assert_allclose(y[band], packet["".join(path)].data, atol=1e-12, rtol=0)


@pytest.mark.parametrize("wavelet", ["haar", "bior4.4"])
def test_multilevel_matches_pywt_wavelet_packet_2d(wavelet):
    levels = 3
    x = np.random.default_rng(4).standard_normal((32, 64))
    y = wpt(torch.from_numpy(x)[None, None], levels, wavelet).numpy()[0]
    packet = pywt.WaveletPacket2D(x, wavelet, mode="periodization", maxlevel=levels)
    for band, path in enumerate(itertools.product("ahvd", repeat=levels)):
        np.testing.assert_allclose(y[band], packet["".join(path)].data, atol=1e-12, rtol=0)


def test_channel_layout_is_channel_major():
    """channel = c * bands + band: each input channel's bands are contiguous."""
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    y = wpt(x, 2)
    for c in range(3):
        torch.testing.assert_close(y[:, c * 16 : (c + 1) * 16], wpt(x[:, c : c + 1], 2))


def test_non_contiguous_inputs():
    x = torch.randn(2, 3, 16, 32, dtype=torch.float64)
    expected = wpt(x, 2)
    torch.testing.assert_close(wpt(x.contiguous(memory_format=torch.channels_last), 2), expected)
    xt = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, permuted strides
    torch.testing.assert_close(wpt(xt, 2), expected)
    torch.testing.assert_close(iwpt(expected[:, :, :, ::1].transpose(2, 3).contiguous().transpose(2, 3), 2), x)


def test_small_sizes_wrap_like_pywt():
    """Signals shorter than the composed filter (one block per band) still match pywt."""
    x = np.random.default_rng(5).standard_normal(16)
    y = wpt(torch.from_numpy(x)[None, None], 4, "bior4.4").numpy()[0, :, 0]
    packet = pywt.WaveletPacket(x, "bior4.4", mode="periodization", maxlevel=4)
    expected = [packet["".join(p)].data[0] for p in itertools.product("ad", repeat=4)]
    np.testing.assert_allclose(y, expected, atol=1e-12, rtol=0)
    xt = torch.from_numpy(x)[None, None]
    assert (iwpt(wpt(xt, 4), 4) - xt).abs().max() <= 1e-10


def test_bad_sizes_and_inputs():
    with pytest.raises(ValueError, match=r"dimension W has size 30.*pad_to_multiple"):
        wpt(torch.zeros(1, 1, 32, 30), 2)
    with pytest.raises(ValueError, match=r"dimension T has size 20"):
        wpt(torch.zeros(1, 1, 20, 32, 32), 3)
    with pytest.raises(ValueError, match="shape"):
        wpt(torch.zeros(4, 16), 1)
    with pytest.raises(ValueError, match="levels"):
        wpt(torch.zeros(1, 1, 16), 0)
    with pytest.raises(TypeError, match="floating"):
        wpt(torch.zeros(1, 1, 16, dtype=torch.int64), 1)
    with pytest.raises(ValueError, match="not a multiple"):
        iwpt(torch.zeros(1, 6, 4, 4), 1)
    with pytest.raises(ValueError, match="unknown wavelet"):
        wpt(torch.zeros(1, 1, 16), 1, "nope")


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=3),
    multiple=st.sampled_from([1, 2, 8, 16]),
    mode=st.sampled_from(["reflect", "replicate", "constant", "circular"]),
)
def test_pad_crop_round_trip(sizes, multiple, mode):
    if mode == "circular" and any((-s) % multiple > s for s in sizes):
        return  # circular padding cannot wrap more than once (torch limitation)
    x = torch.randn(2, 3, *sizes)
    padded, size = pad_to_multiple(x, multiple, mode=mode)
    assert size == tuple(sizes)
    assert all(p % multiple == 0 and p >= s for p, s in zip(padded.shape[2:], sizes))
    assert all(p - s < multiple for p, s in zip(padded.shape[2:], sizes))
    assert torch.equal(crop_to(padded, size), x)


def test_pad_reflect_values_and_replicate_fallback():
    x = torch.arange(5.0).reshape(1, 1, 5)
    padded, _ = pad_to_multiple(x, 8)  # pad 3 < 5: true reflection
    assert padded[0, 0].tolist() == [0, 1, 2, 3, 4, 3, 2, 1]
    tiny = torch.tensor([[[1.0, 2.0]]])
    padded, size = pad_to_multiple(tiny, 8)  # pad 6 >= 2: replicate fallback
    assert padded[0, 0].tolist() == [1, 2, 2, 2, 2, 2, 2, 2] and size == (2,)
    # full pipeline on an odd-sized image
    img = torch.rand(1, 3, 37, 51, dtype=torch.float64)
    padded, size = pad_to_multiple(img, 8)
    back = crop_to(iwpt(wpt(padded, 3), 3), size)
    assert back.shape == img.shape and (back - img).abs().max() <= 1e-10


def test_modules_follow_dtype_and_stay_out_of_state_dict():
    forward, inverse = WPT(2, "db2"), IWPT(2, "db2")
    assert list(forward.state_dict()) == [] and list(inverse.state_dict()) == []
    forward, inverse = forward.double(), inverse.double()
    assert forward.kernel.dtype == torch.float64
    # float32 modules still reconstruct float32 input, and float64 input at float64 accuracy
    x32 = torch.randn(1, 1, 8, 8)
    assert (IWPT(2).float()(WPT(2).float()(x32)) - x32).abs().max() <= 1e-5
    x64 = x32.double()
    assert (IWPT(2).float()(WPT(2).float()(x64)) - x64).abs().max() <= 1e-10
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    y = forward(x)
    torch.testing.assert_close(y, wpt(x, 2, "db2"))
    assert (inverse(y) - x).abs().max() <= 1e-10
    holder = torch.nn.Sequential(WPT(1), IWPT(1))
    assert holder.state_dict() == {}
    if torch.cuda.is_available():
        holder = holder.cuda()
        assert holder[0].kernel.is_cuda
        xc = torch.randn(1, 1, 8, 8, device="cuda")
        assert (holder(xc) - xc).abs().max() <= 1e-5


@pytest.mark.parametrize("wavelet", ["bior4.4", "db2"])
def test_gradients(wavelet):
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: wpt(t, 2, wavelet), (x,))
    y = wpt(x, 2, wavelet).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: iwpt(t, 2, wavelet), (y,))
    assert torch.autograd.gradgradcheck(lambda t: wpt(t, 1, wavelet), (x,))
    x1 = torch.randn(1, 1, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: iwpt(wpt(t, 3, wavelet) ** 2, 3, wavelet), (x1,))
    x3 = torch.randn(1, 1, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: wpt(t, 1, wavelet), (x3,))


def test_training_step_reduces_loss():
    """wpt/iwpt inside a model: gradients reach the parameters of a 1x1 conv between them."""
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(48, 48, 1)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.randn(4, 3, 16, 16)
    losses = []
    for _ in range(5):
        loss = (iwpt(layer(wpt(x, 2)), 2) - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert layer.weight.grad is not None and losses[-1] < losses[0]


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("levels", [1, 2, 3])
def test_lifting_matches_filter_bank(dims, levels):
    x = torch.randn(SHAPES[dims], dtype=torch.float64)
    y = wpt_lifting97(x, levels)
    # pywt's bior4.4 coefficients and the lifting constants are given to ~1e-12 relative
    torch.testing.assert_close(y, wpt(x, levels, "bior4.4"), atol=1e-9, rtol=0)
    assert (iwpt_lifting97(y, levels) - x).abs().max() <= 1e-12
    x32 = x.float()
    assert (iwpt_lifting97(wpt_lifting97(x32, levels), levels) - x32).abs().max() <= 1e-5


def test_lifting_scaling_relation():
    """Documented relation to the raw lifting output and to JPEG 2000's normalisation."""
    x = torch.randn(4, 32, dtype=torch.float64)
    low, high = dwt97_axis(x, -1)
    cA, cD = pywt.dwt(x.numpy(), "bior4.4", mode="periodization")
    np.testing.assert_allclose(low.numpy(), cA, atol=1e-10)
    np.testing.assert_allclose(high.numpy(), cD, atol=1e-10)
    # JPEG 2000 normalisation: DC gain 1 for the low band (low-pass filter sums to 1)
    const = torch.ones(1, 32, dtype=torch.float64)
    low_c, high_c = dwt97_axis(const, -1)
    jpeg_low = low_c / (ZETA * JPEG2000_SCALING)
    torch.testing.assert_close(jpeg_low, torch.ones_like(jpeg_low))
    assert high_c.abs().max() < 1e-10
