"""The encoder-fitted restoration filter: fitting, the wire format, and its use in the hyperprior files."""

from __future__ import annotations

import pytest
import torch

from neuralcodec import BitstreamError
from neuralcodec.codecs import post_filter
from neuralcodec.entropy import Container

from test_hyperprior_refine import _image, _model


def test_fit_undoes_a_blur_and_a_colour_shift():
    torch.manual_seed(0)
    target = torch.rand(3, 30, 40)
    kernel = torch.tensor([0.25, 0.5, 0.25])
    blurred = torch.nn.functional.conv2d(
        torch.nn.functional.pad(target[:, None], (1, 1, 1, 1), mode="replicate"),
        (kernel[:, None] * kernel[None, :])[None, None])[:, 0]
    decoded = blurred * torch.tensor([0.9, 1.0, 1.1])[:, None, None] + 0.02
    coefs = post_filter.quantize(post_filter.fit(decoded, target))
    before = ((decoded - target) ** 2).mean()
    after = ((post_filter.apply(decoded, coefs) - target) ** 2).mean()
    assert after < 0.5 * before


@pytest.mark.parametrize("shape", [(3, 1, 1), (3, 2, 7), (3, 16, 16)])
def test_flat_and_tiny_images_give_a_finite_near_identity_filter(shape):
    decoded = torch.full(shape, 0.4)
    coefs = post_filter.quantize(post_filter.fit(decoded, decoded.clone()))
    out = post_filter.apply(decoded, coefs)
    assert torch.isfinite(out).all() and torch.allclose(out, decoded, atol=2e-3)


def test_wire_format_round_trip_and_size_check():
    coefs = torch.randint(-32768, 32767, (3, post_filter.PARAMS), dtype=torch.int16)
    data = post_filter.to_bytes(coefs)
    assert len(data) == post_filter.SECTION_BYTES and torch.equal(post_filter.from_bytes(data), coefs)
    for bad in (data[:-1], data + b"\0", b""):
        with pytest.raises(BitstreamError):
            post_filter.from_bytes(bad)


def test_hyperprior_sends_the_filter_when_it_pays_and_decodes_with_it():
    m, x = _model(), _image()
    plain, filtered = m.compress(x, post_filter=False), m.compress(x)
    c = Container.from_bytes(filtered)
    assert "filter" in c.sections and "filter" not in Container.from_bytes(plain).sections
    assert c.sections["y"] == Container.from_bytes(plain).sections["y"]  # same latents
    mse = [float(((m.decompress(b) - x) ** 2).mean()) for b in (plain, filtered)]
    assert mse[1] < mse[0]
    # the RD decision: the MSE gain is worth more than the section's bits at the model's lambda
    bits = 8 * post_filter.SECTION_BYTES / x[0].numel()
    assert m.lmbda * 255**2 * (mse[0] - mse[1]) > 0.5 * bits
    assert torch.equal(m.latents(filtered), m.latents(plain))


def test_no_filter_without_a_training_lambda():
    m = _model(lmbda=None)
    assert "filter" not in Container.from_bytes(m.compress(_image())).sections


def test_gray_and_batch_items_are_filtered_consistently():
    m = _model()
    gray = _image()[:1]
    for x in (gray, torch.stack([_image(), gray.expand(3, -1, -1)])):
        blobs = m.compress(x)
        for blob, item in zip(blobs if isinstance(blobs, list) else [blobs], x if x.dim() == 4 else [x]):
            out = m.decompress(blob)
            assert out.shape == item.shape
            if out.shape[0] == 3 and torch.equal(item[0], item[1]):
                assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


def test_tampered_filter_section_is_refused():
    m = _model()
    c = Container.from_bytes(m.compress(_image()))
    assert "filter" in c.sections
    for data in (c.sections["filter"][:-2], c.sections["filter"] + b"\0\0"):
        forged = Container(c.codec, c.weights_hash, c.modality, c.shape, c.metadata, {**c.sections, "filter": data})
        with pytest.raises(BitstreamError, match="filter"):
            m.decompress(forged.to_bytes())
