"""Tests of the scale / mean-scale hyperprior codecs (tiny random-init models, no data needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from neuralcodec import BitstreamError, ModelMismatchError
from neuralcodec.codecs.hyperprior import FixedPointSynthesis, HyperpriorCodec
from neuralcodec.codecs.registry import build, load, save
from neuralcodec.entropy import Container


def _model(variant: str, seed: int = 0) -> HyperpriorCodec:
    torch.manual_seed(seed)
    m = HyperpriorCodec(variant=variant, N=16, M=24)
    # Like a trained model, spread the predicted scales (random init gives tiny ones), so the
    # tests exercise many Gaussian tables and means.
    with torch.no_grad():
        for conv in m.h_s.convs:
            conv.weight.mul_(3.0)
        m.h_s.convs[-1].bias[: m.M].uniform_(0.1, 6.0)
    m.eval()
    m.update()
    return m


@pytest.fixture(scope="module", params=["scale", "mean"])
def model(request) -> HyperpriorCodec:
    return _model(request.param)


def _image(c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.linspace(0, 1, h * w).reshape(1, h, w)
    return (0.6 * base + 0.4 * torch.rand(c, h, w, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("shape", [(3, 1, 1), (3, 17, 31), (3, 64, 64), (3, 70, 129)])
def test_round_trip_any_size(model, shape):
    x = _image(*shape)
    blob = model.compress(x)
    assert isinstance(blob, bytes)
    y = model.decompress(blob)
    assert y.shape == x.shape
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    # Decoding is the synthesis of the encoder's quantized latent, exactly.
    enc = model.encode_latents(x.unsqueeze(0))
    expected = model.synthesis(enc["y_hat"])[:, :, : shape[1], : shape[2]].clamp(0, 1)[0]
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-5)


def test_latents_equal_encoder_quantized_y(model):
    x = _image(3, 40, 90, seed=3)
    blob = model.compress(x)
    lat = model.latents(blob)
    enc = model.encode_latents(x.unsqueeze(0))
    assert lat.shape == (model.M, 4, 8)
    assert torch.equal(lat, enc["y_hat"][0])
    if model.variant == "scale":
        assert torch.equal(lat, torch.round(lat))  # integers; mean-scale adds the fixed-point means
    assert len(set(enc["indexes"].flatten().tolist())) > 3  # the test exercises several tables


def test_gray_and_rgba(model):
    gray = _image(1, 23, 41, seed=1)
    out = model.decompress(model.compress(gray))
    assert out.shape == gray.shape
    rgba = _image(4, 23, 41, seed=2)
    out = model.decompress(model.compress(rgba))
    assert out.shape == rgba.shape
    # alpha is lossless at 8 bits
    assert torch.equal(torch.round(out[3] * 255), torch.round(rgba[3] * 255))
    with pytest.raises(ValueError):
        model.compress(torch.rand(2, 8, 8))


def test_batched_equals_single(model):
    x = torch.stack([_image(3, 33, 47, seed=s) for s in range(3)])
    blobs = model.compress(x)
    assert isinstance(blobs, list) and len(blobs) == 3
    decoded = model.decompress(blobs)
    for i in range(3):
        single = model.compress(x[i])
        # Same latents whatever the batch (the analysis is float: allow a rare rounding flip).
        a, b = model.latents(blobs[i]), model.latents(single)
        assert float((a != b).float().mean()) < 1e-3
        if a.equal(b):
            assert torch.equal(decoded[i], model.decompress(single))
    assert [t.shape for t in model.latents(blobs)] == [(model.M, 4, 4)] * 3


def test_integer_synthesis_is_exact_and_close_to_float():
    torch.manual_seed(0)
    net = FixedPointSynthesis([("deconv", 6, 8, 5, 2), ("deconv", 8, 8, 5, 2), ("conv", 8, 10, 3, 1)],
                              activation="leaky")
    z = torch.round(torch.randn(2, 6, 3, 5) * 4)
    ints = net.integer_forward(net.to_integers(z))
    assert ints.dtype == torch.float64 and torch.equal(ints, torch.round(ints))
    # Same integers for every batch split and for a permuted channel order of the sums.
    parts = torch.cat([net.integer_forward(net.to_integers(z[i : i + 1])) for i in range(2)])
    assert torch.equal(ints, parts)
    # The training path simulates the same arithmetic in float.
    assert float((net(z).double() - ints / 2**net.act_bits).abs().max()) < 0.05


_CROSS_THREADS = textwrap.dedent(
    """
    import sys, torch
    torch.set_num_threads(int(sys.argv[1]))
    from neuralcodec.codecs.registry import load
    m = load(sys.argv[2])
    blob = open(sys.argv[3], "rb").read()
    y = m.decompress(blob)
    open(sys.argv[4], "wb").write((y * 255).round().to(torch.uint8).numpy().tobytes())
    """
)


def test_cross_thread_and_device_determinism(tmp_path):
    torch.set_num_threads(1)
    model = _model("mean", seed=5)
    path = save(model, tmp_path / "hp-test")
    model = load(path.with_suffix(".json"))
    x = _image(3, 70, 100, seed=7)
    blob = model.compress(x)
    (tmp_path / "a.ncf").write_bytes(blob)
    reference = (model.decompress(blob) * 255).round().to(torch.uint8)
    # Decode in another process with 2 threads (the encoder above used 1).
    script = tmp_path / "decode.py"
    script.write_text(_CROSS_THREADS)
    subprocess.run([sys.executable, str(script), "2", str(path.with_suffix(".json")), str(tmp_path / "a.ncf"),
                    str(tmp_path / "out.raw")], check=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    other = torch.frombuffer(bytearray((tmp_path / "out.raw").read_bytes()), dtype=torch.uint8).view_as(reference)
    assert int((other.int() - reference.int()).abs().max()) <= 1  # synthesis is float; the coding is exact
    # The exact part must be identical: indexes and means recomputed with 2 threads.
    enc = model.encode_latents(x.unsqueeze(0))
    torch.set_num_threads(2)
    try:
        idx2, means2 = model.coding_params(enc["z_hat"])
    finally:
        torch.set_num_threads(1)
    assert torch.equal(idx2, enc["indexes"]) and torch.equal(means2, enc["means"])
    if torch.cuda.is_available():
        cuda_model = load(path.with_suffix(".json"), device="cuda")
        assert torch.equal(cuda_model.latents(blob).cpu(), model.latents(blob))


def test_table_indexes_are_the_count_of_thresholds_below_the_scale():
    """coding_params' insertion point equals the definition #{k : S > threshold_k}, ties included."""
    model = _model("mean", seed=4)
    thresholds = model.scale_thresholds
    scales = torch.cat([thresholds - 1, thresholds, thresholds + 1, torch.tensor([-5.0, 0.0, 1e9], dtype=torch.float64)])
    expected = (scales.unsqueeze(-1) > thresholds).sum(-1)
    assert torch.equal(torch.searchsorted(thresholds, scales, right=False), expected)
    z_hat = torch.round(torch.randn(1, model.N, 3, 2) * 4)
    indexes, _ = model.coding_params(z_hat)
    ints = model.h_s.integer_forward(model.h_s.to_integers(z_hat))
    scales_int = ints.chunk(2, dim=1)[0]
    assert torch.equal(indexes.long(), (scales_int.unsqueeze(-1) > thresholds).sum(-1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_coding_params_match_cpu():
    model = _model("scale", seed=9)
    x = _image(3, 130, 70, seed=1)
    enc = model.encode_latents(x.unsqueeze(0))
    cuda = _model("scale", seed=9).to("cuda")
    idx, _ = cuda.coding_params(enc["z_hat"].cuda())
    assert torch.equal(idx.cpu(), enc["indexes"])


def test_platform_mismatch_is_a_clear_error(model):
    x = _image(3, 48, 80, seed=4)
    blob = model.compress(x)
    # Perturb one hyper-synthesis bias slightly at decode time (as another platform's
    # arithmetic could), keeping the weights hash so only the index check can notice.
    original = model.h_s.convs[-1].bias.detach().clone()
    expected_hash = model.weights_hash()
    try:
        with torch.no_grad():
            model.h_s.convs[-1].bias.add_(0.5)
        model._hash_cache = expected_hash
        with pytest.raises(ModelMismatchError, match="platform mismatch"):
            model.decompress(blob)
    finally:
        with torch.no_grad():
            model.h_s.convs[-1].bias.copy_(original)
        model._hash_cache = None
    assert model.decompress(blob).shape == x.shape


def test_foreign_weights_and_corruption(model):
    blob = model.compress(_image(3, 30, 30))
    other = _model(model.variant, seed=1)
    with pytest.raises(ModelMismatchError):
        other.decompress(blob)
    # Flipped bytes anywhere: BitstreamError (CRC), never garbage or another exception.
    for pos in (5, len(blob) // 2, len(blob) - 3):
        bad = bytearray(blob)
        bad[pos] ^= 0x40
        with pytest.raises(BitstreamError):
            model.decompress(bytes(bad))
    with pytest.raises(BitstreamError):
        model.decompress(blob[:-10])
    # A valid container with a corrupted y stream (CRC recomputed): the coder rejects it.
    c = Container.from_bytes(blob)
    c.sections["y"] = c.sections["y"][: max(1, len(c.sections["y"]) // 2)]
    with pytest.raises(BitstreamError):
        model.decompress(c.to_bytes())
    # A lying header (wrong latent size) is rejected before decoding.
    c = Container.from_bytes(blob)
    c.metadata["hyperprior"]["latent"] = [8, 8]
    with pytest.raises(BitstreamError):
        model.decompress(c.to_bytes())


def test_training_step_and_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    m = build("hyperprior", {"variant": "scale", "N": 8, "M": 12})
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    x = torch.rand(2, 3, 64, 64)
    out = m(x)
    bits = sum(-torch.log2(l).sum() for l in out["likelihoods"].values())
    loss = torch.mean((out["x_hat"] - x) ** 2) + bits / x[:, 0].numel() + m.aux_loss()
    loss.backward()
    assert all(p.grad is not None for p in m.h_s.parameters())  # straight-through fixed point trains
    opt.step()
    m.eval()
    m.update()
    path = save(m, tmp_path / "tiny")
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["architecture"] == "hyperprior" and card["config"]["variant"] == "scale"
    loaded = load(path.with_suffix(".json"), device="cpu")  # .to(device) works
    blob = m.compress(x[0])
    loaded.name = m.name
    assert torch.equal(loaded.decompress(blob), m.decompress(blob))


def test_warm_start_copies_weights_and_refuses_other_shapes(tmp_path):
    import click

    from neuralcodec.apps.train_hyperprior import _warm_start

    torch.manual_seed(1)
    source = build("hyperprior", {"variant": "mean", "N": 8, "M": 12}).eval()
    source.update()
    path = save(source, tmp_path / "src").with_suffix(".json")
    target = build("hyperprior", {"variant": "mean", "N": 8, "M": 12, "lmbda": 0.05})
    _warm_start(target, str(path))
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), source.state_dict().values()))
    with pytest.raises(click.BadParameter, match="does not match"):
        _warm_start(build("hyperprior", {"variant": "mean", "N": 8, "M": 16}), str(path))


_FAMILY = ["hyperprior-mean-q1", "hyperprior-mean-q2", "hyperprior-mean-q3"]


_SHIPPED = pytest.mark.skipif(not all(n in __import__("neuralcodec").available() for n in _FAMILY),
                              reason="the hyperprior family is not shipped")


def _family_on_sample() -> tuple[list[int], list[float]]:
    from pathlib import Path

    import numpy as np
    from PIL import Image

    sample = Path(__import__("neuralcodec").__file__).parent / "samples" / "astronaut.png"
    with Image.open(sample) as im:
        arr = np.asarray(im.convert("RGB").resize((192, 128)), dtype=np.float64)
    x = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    rates, psnrs = [], []
    for name in _FAMILY:
        m = load(name)
        blob = m.compress(x)
        y = m.decompress(blob)
        assert y.shape == x.shape and torch.equal(m.latents(blob), m.encode_latents(x[None])["y_hat"][0])
        mse = float(((torch.round(y * 255) - torch.round(x * 255)) ** 2).mean())
        rates.append(len(blob))
        psnrs.append(10 * np.log10(255**2 / mse))
    return rates, psnrs


@_SHIPPED
def test_shipped_family_round_trips_and_rate_grows_with_lambda():
    rates, _ = _family_on_sample()
    assert rates == sorted(rates)


@_SHIPPED
def test_shipped_family_quality_grows_with_lambda():
    _, psnrs = _family_on_sample()
    assert psnrs == sorted(psnrs)
