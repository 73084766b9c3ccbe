"""WaLLoC image codec: coding round trips, latents, errors, training, the shipped model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import neuralcodec
from neuralcodec import BitstreamError, ModelMismatchError
from neuralcodec.codecs.walloc import HierarchicalContextModel, WaLLoC, coding_groups
from neuralcodec.entropy import Container


def tiny(seed: int = 0, **kw) -> WaLLoC:
    torch.manual_seed(seed)
    cfg = dict(latent_channels=6, levels=2, decoder_channels=16, decoder_blocks=1, context_levels=2, context_hidden=8)
    cfg.update(kw)
    m = WaLLoC(**cfg)
    m.init_from_data(smooth_images(4, 32, 32, seed=seed))
    return m.eval()


def smooth_images(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    phase = torch.rand(b, 3, 1, 1, generator=g) * 6
    freq = 1 + torch.rand(b, 3, 1, 1, generator=g) * 4
    img = 0.5 + 0.35 * torch.sin(freq * (xx + 0.7 * yy) * 3 + phase)
    return (img + 0.03 * torch.rand(b, 3, h, w, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("h,w", [(1, 1), (7, 13), (33, 65), (16, 16)])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_round_trip_shapes_and_modes(h, w, channels):
    m = tiny()
    x = torch.rand(channels, h, w)
    blob = m.compress(x, metadata={"source": "test"})
    assert isinstance(blob, bytes)
    out = m.decompress(blob)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert Container.from_bytes(blob).metadata["source"] == "test"
    if channels == 4:  # alpha is lossless at 8 bits
        assert torch.equal(torch.round(out[3] * 255), torch.round(x[3] * 255))
    if channels == 1:  # gray in, gray out: the three coded planes are averaged back
        assert out.shape[0] == 1


def test_latents_equal_encoder_quantized_output():
    m = tiny()
    x = smooth_images(2, 40, 56)
    blobs = m.compress(x)
    q = m.quantized_latents(x)
    assert torch.equal(q, torch.round(m.analysis(torch.nn.functional.pad(x, (0, 0, 0, 0)))))
    for b, blob in enumerate(blobs):
        lat = m.latents(blob)
        assert lat.shape == (6, 10, 14)
        assert torch.equal(lat, q[b])
    assert all(torch.equal(a, q[b]) for b, a in enumerate(m.latents(blobs)))


def test_latents_of_padded_size_match_analysis():
    m = tiny()
    x = torch.rand(3, 7, 13)
    lat = m.latents(m.compress(x))
    assert lat.shape == (6, 2, 4)
    assert torch.equal(lat, m.quantized_latents(x.unsqueeze(0))[0])


def test_compress_deterministic_and_batched_equals_single():
    m = tiny()
    x = smooth_images(3, 24, 40, seed=3)
    batch = m.compress(x)
    assert batch == m.compress(x)
    assert [m.compress(x[i]) for i in range(3)] == batch
    decoded = m.decompress(batch)
    assert all(torch.equal(decoded[i], m.decompress(batch[i])) for i in range(3))


def test_decode_of_tiles_matches_whole_latent_decode():
    # Decoder is convolutional with no global ops: a latent decodes the same in a batch of one.
    m = tiny()
    y = m.quantized_latents(smooth_images(2, 32, 32))
    both = m.synthesis(y)
    assert torch.allclose(both[1:], m.synthesis(y[1:]), atol=1e-5)


def test_corrupted_and_truncated_blobs_raise_bitstream_error():
    m = tiny()
    blob = m.compress(smooth_images(1, 32, 48)[0])
    for bad in (blob[:-1], blob[: len(blob) // 2], b"", b"not a file"):
        with pytest.raises(BitstreamError):
            m.decompress(bad)
    rng = np.random.default_rng(0)
    for _ in range(20):
        corrupt = bytearray(blob)
        pos = int(rng.integers(0, len(corrupt)))
        corrupt[pos] ^= 1 << int(rng.integers(0, 8))
        with pytest.raises(BitstreamError):
            m.decompress(bytes(corrupt))


def test_tampered_header_is_rejected():
    m = tiny()
    blob = m.compress(torch.rand(3, 16, 16))
    c = Container.from_bytes(blob)
    for meta_change in ({"mode": "RGBA"}, {"latent": [9, 9]}, {"digest": "00"}):
        meta = dict(c.metadata)
        meta["walloc"] = {**meta["walloc"], **meta_change}
        forged = Container(c.codec, c.weights_hash, c.modality, c.shape, meta, c.sections).to_bytes()
        with pytest.raises(BitstreamError):
            m.decompress(forged)


def test_wrong_model_raises_model_mismatch():
    a, b = tiny(seed=0), tiny(seed=1)
    blob = a.compress(torch.rand(3, 16, 16))
    with pytest.raises(ModelMismatchError):
        b.decompress(blob)
    b.load_state_dict(a.state_dict())
    b.name = "other-name"
    with pytest.raises(ModelMismatchError):
        b.decompress(blob)
    b.name = a.name
    assert b.decompress(blob).shape == (3, 16, 16)


def test_context_model_round_trip_with_escapes():
    ent = HierarchicalContextModel(2, 3, levels=2, hidden=8).eval()
    q = torch.randint(-3, 4, (2, 3, 9, 11)).float()
    q[0, 0, 0, 0], q[1, 2, 5, 5] = 127, -127  # far outside the tables: escape path
    streams, digests = ent.compress(q)
    assert torch.equal(ent.decompress(streams, (9, 11), digests), q)
    groups = coding_groups((9, 11), 2)
    total = sum(int(mask.sum()) for mask, _ in groups)
    assert total == 99 and bool(torch.stack([m for m, _ in groups]).sum(0).eq(1).all())


def test_context_model_uses_only_decoded_context():
    # Changing what a stage may not see (later groups, later chunks of its own group, its own
    # values) must not change its parameters: the decoder could not reproduce them otherwise.
    ent = HierarchicalContextModel(2, 4, levels=2, hidden=8, splits=[1, 2]).eval()
    stages = ent.stages((8, 8))
    assert len(stages) == 5 * 3
    q = torch.randn(1, 4, 8, 8) * 5
    for i, (mask, known, (a, b)) in enumerate(stages):
        hidden = torch.ones(1, 4, 8, 8, dtype=torch.bool)
        hidden[..., known] = False  # earlier groups: visible
        hidden[:, :a] &= ~mask  # earlier chunks at this group's positions: visible
        q2 = q + 7 * hidden
        m1, s1 = ent.params(q, i, stages)
        m2, s2 = ent.params(q2, i, stages)
        assert torch.equal(m1, m2) and torch.equal(s1, s2), i


def test_training_step_decreases_loss():
    from neuralcodec.apps.train import TrainConfig  # noqa: F401  (import check)

    torch.manual_seed(0)
    m = tiny(decoder_channels=8)
    m.train()
    x = smooth_images(4, 16, 16, seed=5)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)

    def loss_fn():
        out = m(x)
        mse = torch.mean((out["x_hat"] - x) ** 2)
        bpp = -torch.log2(out["likelihoods"]["y"]).sum() / (4 * 16 * 16)
        return 0.01 * 255**2 * mse + bpp

    torch.manual_seed(1)
    first = float(loss_fn())
    for _ in range(20):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    torch.manual_seed(1)
    assert float(loss_fn()) < 0.9 * first


def test_train_function_exports_loadable_model(tmp_path):
    from PIL import Image

    from neuralcodec.apps.train import TrainConfig, train
    from neuralcodec.codecs.registry import load

    data = tmp_path / "imgs"
    data.mkdir()
    for i in range(2):
        arr = (smooth_images(1, 48, 64, seed=i)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        Image.fromarray(arr).save(data / f"{i}.png")
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), steps=3, batch_size=2, crop=32, threads=1,
                      min_downscale=1.0, pca_crops=8, checkpoint_every=2, entropy_steps=3, entropy_crop=32,
                      entropy_pool=8, entropy_batch=2,
                      model_config=dict(latent_channels=4, decoder_channels=8, decoder_blocks=1, context_hidden=4))
    path = train(cfg, progress=False)
    model = load(str(path) + ".json")
    assert model.name == "walloc-image-16x"
    x = torch.rand(3, 20, 20)
    assert model.decompress(model.compress(x)).shape == (3, 20, 20)
    # resume continues from the checkpoint (step 3 already reached: nothing more to do)
    cfg.steps = 4
    train(cfg, resume=True, progress=False)
    log = (tmp_path / "run" / "log.csv").read_text().strip().splitlines()
    assert log[0].startswith("step,") and log[-1].startswith("4,")


@pytest.mark.skipif("walloc-image-16x" not in neuralcodec.available(), reason="shipped model not present")
def test_shipped_model_loads_and_codes_smooth_image():
    codec = neuralcodec.load("walloc-image-16x")
    x = smooth_images(1, 64, 96, seed=7)[0]
    blob = codec.compress(x)
    out = codec.decompress(blob)
    psnr = -10 * math.log10(float(torch.mean((torch.round(out * 255) / 255 - x) ** 2)))
    flat = -10 * math.log10(float(torch.mean((x - x.mean((1, 2), keepdim=True)) ** 2)))
    assert psnr > 25.0 and psnr > flat + 10  # far better than the image's mean colour
    bpp = len(blob) * 8 / (64 * 96)
    assert 0 < bpp < 4
    assert torch.equal(codec.latents(blob), codec.quantized_latents(x.unsqueeze(0))[0])
