"""WaLLoC's channel_checkerboard entropy model: exact integer nets, batched coding, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import neuralcodec
from neuralcodec import BitstreamError, ModelMismatchError
from neuralcodec.codecs.channel_context import ChannelCheckerboardModel, FixedPointNet, checkerboard
from neuralcodec.codecs.walloc import HierarchicalContextModel, WaLLoC
from neuralcodec.datasets import decode_latents

SMALL = dict(groups=[1, 3], hidden=8, hyper_channels=8, z_channels=2, features=4)


def smooth_images(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    phase = torch.rand(b, 3, 1, 1, generator=g) * 6
    img = 0.5 + 0.35 * torch.sin((xx + 0.7 * yy) * 9 + phase)
    return (img + 0.05 * torch.rand(b, 3, h, w, generator=g)).clamp(0, 1)


MODELS = {
    "hierarchical_exact": dict(entropy_model="hierarchical_exact", context_levels=2, context_hidden=8),
    "channel_checkerboard": dict(entropy_model="channel_checkerboard", entropy_config=SMALL),
    "hierarchical_exact_laplace": dict(entropy_model="hierarchical_exact", context_levels=2, context_hidden=8,
                                       entropy_config={"family": "laplace"}),
}


def tiny(seed: int = 0, kind: str = "channel_checkerboard") -> WaLLoC:
    torch.manual_seed(seed)
    m = WaLLoC(latent_channels=6, levels=2, decoder_channels=16, decoder_blocks=1, **MODELS[kind])
    m.init_from_data(smooth_images(4, 32, 32, seed=seed))
    with torch.no_grad():  # non-trivial context nets (a fresh model's are nearly constant)
        for p in m.entropy.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    m.eval()
    m.update()
    return m


def random_model(seed: int = 0, channels: int = 6, kind: str = "channel_checkerboard"):
    from neuralcodec.codecs.walloc import ExactHierarchicalContextModel

    torch.manual_seed(seed)
    if kind == "channel_checkerboard":
        m = ChannelCheckerboardModel(channels=channels, **SMALL)
    else:
        family = "laplace" if kind.endswith("laplace") else "gaussian"
        m = ExactHierarchicalContextModel(2, channels, levels=2, hidden=8, family=family)
    with torch.no_grad():  # random, non-trivial nets (the init's outputs are nearly constant)
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    m.eval()
    m.update()
    return m


def test_default_walloc_keeps_the_hierarchical_model_and_its_config():
    m = WaLLoC(latent_channels=4, levels=2, decoder_channels=8, decoder_blocks=1)
    assert isinstance(m.entropy, HierarchicalContextModel)
    assert "entropy_model" not in m.config  # earlier model cards stay valid as they are
    cc = WaLLoC(latent_channels=4, levels=2, decoder_channels=8, decoder_blocks=1,
                entropy_model="channel_checkerboard", entropy_config={"hidden": 8})
    assert isinstance(cc.entropy, ChannelCheckerboardModel)
    assert cc.config["entropy_model"] == "channel_checkerboard" and cc.config["entropy_config"] == {"hidden": 8}
    with pytest.raises(ValueError):
        WaLLoC(entropy_model="nope")


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("h,w,channels", [(1, 1, 1), (7, 13, 4), (33, 65, 3)])
def test_round_trip_shapes_modes_and_latents(kind, h, w, channels):
    m = tiny(kind=kind)
    x = torch.rand(channels, h, w)
    blob = m.compress(x)
    out = m.decompress(blob)
    assert out.shape == x.shape
    assert torch.equal(m.latents(blob), m.quantized_latents(x.unsqueeze(0))[0])


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_batched_compress_equals_single_and_batched_decode_equals_single(kind):
    m = tiny(kind=kind)
    x = smooth_images(3, 32, 40, seed=3)
    blobs = m.compress(x)
    assert blobs == [m.compress(xi) for xi in x]  # exact nets: the batch does not change the bytes
    singles = [m.latents(b) for b in blobs]
    for a, b in zip(m.latents(blobs), singles):
        assert torch.equal(a, b)
    mixed = blobs[:1] + [m.compress(torch.rand(3, 24, 16))] + blobs[1:]
    for a, b in zip(decode_latents(m, mixed), [m.latents(b) for b in mixed]):
        assert torch.equal(a, b)


def test_exact_hierarchical_model_loads_float_weights_and_codes_like_them():
    from neuralcodec.codecs.walloc import ExactHierarchicalContextModel

    torch.manual_seed(0)
    float_model = HierarchicalContextModel(2, 4, levels=2, hidden=8)
    with torch.no_grad():
        for p in float_model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    exact = ExactHierarchicalContextModel(2, 4, levels=2, hidden=8)
    exact.load_state_dict(float_model.state_dict())  # same parameters
    q = torch.round(torch.randn(2, 4, 12, 12) * 3)
    with torch.no_grad():
        ideal = -torch.log2(float_model(q, q)).sum()
        simulated = -torch.log2(exact(q, q)).sum()  # the fixed-point arithmetic costs little
    assert abs(float(simulated) / float(ideal) - 1) < 0.05
    streams, digests = exact.eval().compress(q)
    assert torch.equal(exact.decompress(streams, (12, 12), digests), q)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_entropy_model_round_trip_with_large_values_and_escapes(kind):
    ent = random_model(1, kind=kind)
    q = torch.randint(-3, 4, (3, 6, 9, 10)).float()
    q[0, 0, 0, 0], q[1, 5, 8, 9], q[2, 2, 4, 4] = 127, -127, 90  # far outside the tables
    streams, digests = ent.compress(q)
    assert torch.equal(ent.decompress(streams, (9, 10), digests), q)
    assert torch.equal(ent.decompress(streams[1], (9, 10), digests[1]), q[1])
    with pytest.raises(ValueError):
        ent.compress(q * 2)  # outside the 8-bit latent range


def test_fixed_point_net_is_exact_in_float32_and_float64():
    torch.manual_seed(0)
    net = FixedPointNet([("conv", 3, 8, 3, 1), ("deconv", 8, 8, 5, 2), ("conv", 8, 2, 1, 1)])
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)

    def reference(a: torch.Tensor) -> torch.Tensor:  # float64 on integers: exact at these sizes
        for i, (conv, (w, b, _, _)) in enumerate(zip(net.convs, net.integer_weights())):
            a = torch.floor(net._op(conv, a.double(), w, b) / 256)
            if i < len(net.convs) - 1:
                a = a.clamp(0, 255)
        return a

    small = torch.randint(-200, 200, (2, 3, 6, 7)).float()  # float32 path
    large = torch.randint(-2**20, 2**20, (2, 3, 6, 7)).float()  # bound above 2**24: float64 path
    for a in (small, large):
        assert torch.equal(net.integer_forward(a).double(), reference(a))
    # the training simulation follows the integer arithmetic closely
    assert float((net(small / 16) - net.integer_forward(small) / 16).abs().max()) < 0.2
    with pytest.raises(OverflowError):
        net.integer_forward(torch.full((1, 3, 4, 4), 2.0**50))


def test_stage_parameters_do_not_depend_on_batch_or_threads():
    ent = random_model(2)
    q = torch.randint(-20, 21, (4, 6, 12, 10)).float()
    feats = ent.hyper_features(torch.randint(-3, 4, (4, 2, 3, 3)).float(), (12, 10))
    anchors = checkerboard((12, 10))
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append([ent.stage_params(feats, q, s, anchors) for s in range(len(ent.nets))])
            results.append([ent.stage_params(feats[2:3], q[2:3], s, anchors) for s in range(len(ent.nets))])
    finally:
        torch.set_num_threads(threads)
    for s in range(len(ent.nets)):
        for k in range(2):
            assert torch.equal(results[0][s][k], results[2][s][k])
            assert torch.equal(results[0][s][k][2:3], results[1][s][k])
            assert torch.equal(results[1][s][k], results[3][s][k])


def test_exact_hierarchical_indexes_do_not_depend_on_batch_or_threads():
    ent = random_model(5, kind="hierarchical_exact")
    q = torch.randint(-30, 31, (4, 6, 16, 12)).float()
    stages = ent.stages((16, 12))
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2):
            torch.set_num_threads(n)
            runs.append([ent.coding_params(q, i, stages) for i in range(len(stages))])
            runs.append([ent.coding_params(q[1:2], i, stages) for i in range(len(stages))])
    finally:
        torch.set_num_threads(threads)
    for i in range(len(stages)):
        for k in range(2):
            assert torch.equal(runs[0][i][k], runs[2][i][k])
            assert torch.equal(runs[0][i][k][1:2], runs[1][i][k])
            assert torch.equal(runs[1][i][k], runs[3][i][k])


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_corrupted_streams_and_wrong_digest_are_errors(kind):
    ent = random_model(3, kind=kind)
    q = torch.randint(-6, 7, (2, 6, 8, 8)).float()
    streams, digests = ent.compress(q)
    with pytest.raises(ModelMismatchError):
        ent.decompress(streams[0], (8, 8), digests[1] if digests[1] != digests[0] else "0" * 16)
    swapped = streams[0][::-1]
    with pytest.raises(BitstreamError):
        ent.decompress(swapped, (8, 8), digests[0])
    with pytest.raises(BitstreamError):
        ent.decompress(streams[0][:-1], (8, 8), digests[0])
    truncated = [s[: max(1, len(s) // 2)] for s in streams[0]]
    with pytest.raises(BitstreamError):
        ent.decompress(truncated, (8, 8), digests[0])


def test_decoder_reads_only_decoded_context():
    """Each stage's parameters at its own positions ignore everything not decoded before it."""
    ent = random_model(4)
    q = torch.randint(-9, 10, (1, 6, 8, 10)).float()
    feats = ent.hyper_features(torch.randint(-3, 4, (1, 2, 2, 3)).float(), (8, 10))
    anchors = checkerboard((8, 10))
    for s in range(len(ent.nets)):
        a, b = ent.chunks[s // 2]
        where = anchors if s % 2 == 0 else ~anchors
        known = torch.zeros_like(q, dtype=torch.bool)
        known[:, :a] = True
        if s % 2:
            known[:, a:b] = anchors
        noisy = torch.where(known, q, torch.randint(-50, 50, q.shape).float())
        for x, y in zip(ent.stage_params(feats, q, s, anchors), ent.stage_params(feats, noisy, s, anchors)):
            assert torch.equal(x[..., where], y[..., where])


def test_training_reduces_bits_and_gives_side_information_likelihoods():
    torch.manual_seed(0)
    ent = ChannelCheckerboardModel(channels=6, **SMALL)
    q = torch.round(torch.randn(4, 6, 8, 8) * torch.tensor([8.0, 4, 2, 1, 1, 1]).view(1, -1, 1, 1))
    opt = torch.optim.Adam(ent.parameters(), lr=2e-2)
    history = []
    for _ in range(15):
        lik = ent(q, q)
        assert lik["y"].shape == q.shape and lik["z"].shape == (4, 2, 2, 2)
        bits = (-torch.log2(lik["y"]).sum() - torch.log2(lik["z"]).sum()) / q.numel()
        opt.zero_grad()
        (bits + ent.aux_loss()).backward()
        opt.step()
        history.append(float(bits))
    assert np.mean(history[-3:]) < 0.9 * np.mean(history[:3])


def test_train_entropy_exports_a_model_with_the_same_latents(tmp_path):
    from PIL import Image

    from neuralcodec.apps.train_walloc_entropy import EntropyTrainConfig, train_entropy
    from neuralcodec.codecs.registry import save
    from neuralcodec.codecs.walloc import ExactHierarchicalContextModel

    base = WaLLoC(latent_channels=6, levels=2, decoder_channels=16, decoder_blocks=1, context_levels=2, context_hidden=8)
    base.init_from_data(smooth_images(4, 32, 32))
    base.eval()
    save(base, tmp_path / "base", {"description": "tiny"})
    images = tmp_path / "images"
    images.mkdir()
    for i, x in enumerate(smooth_images(3, 48, 64, seed=5)):
        Image.fromarray((x.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(images / f"{i}.png")
    cfg = EntropyTrainConfig(data=str(images), out=str(tmp_path / "run"), init_from=str(tmp_path / "base.json"),
                             steps=3, batch_size=2, crop=4, lr=1e-5, min_downscale=1.0, eval_data=str(images),
                             eval_every=2)
    path = train_entropy(cfg, progress=False)
    model = neuralcodec.load(str(path) + ".json")
    assert isinstance(model.entropy, ExactHierarchicalContextModel)
    # fine-tuned from the base model's context model (3 tiny steps: still close to it)
    for (name, p), p0 in zip(model.entropy.named_parameters(), base.entropy.parameters()):
        assert float((p - p0).abs().max()) < 1e-3, name
    x = smooth_images(1, 40, 24, seed=9)
    assert torch.equal(model.quantized_latents(x), base.quantized_latents(x))  # same encoder
    blob = model.compress(x[0])
    assert torch.equal(model.latents(blob), model.quantized_latents(x)[0])
    log = (tmp_path / "run" / "log.csv").read_text().strip().splitlines()
    assert log[0].startswith("step,") and log[-1].startswith("3,")


@pytest.mark.skipif("walloc-image-16x" not in neuralcodec.available(), reason="shipped model not present")
def test_shipped_model_uses_the_exact_batched_entropy_model():
    codec = neuralcodec.load("walloc-image-16x")
    assert codec.entropy.batch_exact
    x = smooth_images(3, 48, 64, seed=11)
    blobs = codec.compress(x)
    assert blobs == [codec.compress(xi) for xi in x]
    for latent, xi in zip(codec.latents(blobs), x):
        assert torch.equal(latent, codec.quantized_latents(xi.unsqueeze(0))[0])
    assert F.mse_loss(codec.decompress(blobs[0]), x[0]) < 0.01


def test_laplace_tables_and_likelihood_agree_with_the_distribution():
    from neuralcodec.entropy import rans
    from neuralcodec.entropy.gaussian import laplace_likelihood, mean_scale_tables

    y = torch.arange(-40, 41, dtype=torch.float64)
    for mean, sd in [(0.0, 0.3), (0.3, 2.5), (-0.4, 9.0)]:
        b = torch.tensor(sd / 2**0.5, dtype=torch.float64)
        ref = torch.distributions.Laplace(torch.tensor(mean, dtype=torch.float64), b)
        want = ref.cdf(y + 0.5) - ref.cdf(y - 0.5)
        got = laplace_likelihood(y, torch.full_like(y, mean), torch.full_like(y, sd), bound=0.0)
        assert torch.allclose(got, want, atol=1e-12)
    # Integer tables: coding Laplace samples with them costs about their entropy.
    torch.manual_seed(0)
    sd = 3.0
    sample = torch.distributions.Laplace(0.0, sd / 2**0.5).sample((4000,)).round().long()
    cdfs, lengths, offsets = mean_scale_tables(torch.tensor([sd]), torch.tensor([0.0]), family="laplace")
    tables = rans.prepare_tables(cdfs, lengths, offsets)
    blob = rans.encode_with_indexes(sample, torch.zeros_like(sample), tables)
    assert torch.equal(rans.decode_with_indexes(blob, torch.zeros_like(sample), tables).long(), sample)
    ideal = float(-torch.log2(laplace_likelihood(sample.double(), torch.zeros(1), torch.tensor([sd]))).sum())
    assert abs(len(blob) * 8 / ideal - 1) < 0.02


@pytest.mark.parametrize("splits", [None, [1, 2, 3, 5]])
def test_widened_context_model_starts_from_the_same_function(tmp_path, splits):
    from neuralcodec.apps.train_walloc_entropy import EntropyTrainConfig, _build
    from neuralcodec.codecs.registry import save

    base = tiny(kind="hierarchical_exact")
    save(base, tmp_path / "base", {"description": "tiny"})
    cfg = EntropyTrainConfig(data="unused", out="unused", init_from=str(tmp_path / "base.json"),
                             entropy_config={"family": "laplace"}, context_hidden=20, context_splits=splits)
    wide, _ = _build(cfg)
    wide.eval()
    wide.update()
    assert wide.entropy.family == "laplace" and wide.entropy.hidden == 20
    assert len(wide.entropy.chunks) == (5 if splits else 3)
    same = WaLLoC(latent_channels=6, levels=2, decoder_channels=16, decoder_blocks=1,
                  **MODELS["hierarchical_exact_laplace"]).eval()
    same.load_state_dict({k: v for k, v in base.state_dict().items() if k.split(".")[-1] not in
                          ("_cdfs", "_cdf_lengths", "_offsets")}, strict=False)
    same.update()
    q = base.quantized_latents(smooth_images(2, 32, 48, seed=3))
    with torch.no_grad():
        # (float softplus of differently shaped tensors may differ in the last bit)
        assert torch.allclose(wide.entropy(q, q), same.entropy(q, q), rtol=1e-4, atol=1e-9)
        if splits is None:  # same integer tables and indexes
            assert wide.entropy.compress(q) == same.entropy.compress(q)
        else:  # the same code lengths, cut into more streams
            size = [sum(map(len, s)) for s in wide.entropy.compress(q)[0]]
            want = [sum(map(len, s)) for s in same.entropy.compress(q)[0]]
            assert all(abs(a - b) <= 4 * 35 for a, b in zip(size, want))
    blob = wide.compress(smooth_images(1, 32, 48, seed=4)[0])
    assert torch.equal(wide.latents(blob), wide.quantized_latents(smooth_images(1, 32, 48, seed=4))[0])


@pytest.mark.parametrize("args, message", [
    (["--splits", "2,x"], "comma-separated"),
    (["--splits", "6,2"], "bad channel splits"),
    (["--entropy-model", "channel_checkerboard", "--splits", "2,4"], "apply to --entropy-model hierarchical_exact"),
    (["--entropy-model", "channel_checkerboard", "--family", "laplace"], "apply to --entropy-model hierarchical_exact"),
])
def test_cli_rejects_bad_splits_and_options_with_a_usage_message(tmp_path, args, message):
    from click.testing import CliRunner

    from neuralcodec.apps.train_walloc_entropy import walloc_image_entropy_command

    data = tmp_path / "data"
    data.mkdir()
    result = CliRunner().invoke(walloc_image_entropy_command, [
        "--init-from", "walloc-image-16x", "--data", str(data), "--out", str(tmp_path / "out"), "--steps", "1", *args])
    assert result.exit_code != 0
    assert message in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.safetensors"))
