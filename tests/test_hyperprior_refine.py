"""Encoder-side refinement of the hyperprior latents: smaller RD loss, unchanged decoder and format."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from click.testing import CliRunner

from neuralcodec.apps import bench
from neuralcodec.apps.cli import cli
from neuralcodec.codecs.hyperprior import HyperpriorCodec
from neuralcodec.codecs.registry import save
from neuralcodec.transforms.wavelets import pad_to_multiple

from test_bench import image_dir, smooth_image  # noqa: F401  (fixture)


@functools.lru_cache(maxsize=None)
def _trained_state() -> dict:
    """A tiny mean-scale model trained 150 steps on smooth images (4 s): a decoder that means something."""
    torch.manual_seed(0)
    m = HyperpriorCodec(variant="mean", N=16, M=24, lmbda=0.01)
    xs = torch.stack([torch.from_numpy(smooth_image(i, 64, 64)).permute(2, 0, 1).float() / 255 for i in range(8)])
    opt = torch.optim.Adam([p for n, p in m.named_parameters() if not n.endswith("quantiles")], lr=3e-3)
    for step in range(150):
        x = xs[(torch.arange(4) + 4 * step) % 8]
        out = m(x)
        bpp = sum(-torch.log2(v).sum() for v in out["likelihoods"].values()) / x[:, 0].numel()
        loss = 0.01 * 255**2 * ((out["x_hat"] - x) ** 2).mean() + bpp
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _model(lmbda: float | None = 0.01) -> HyperpriorCodec:
    m = HyperpriorCodec(variant="mean", N=16, M=24, lmbda=lmbda)
    m.load_state_dict(_trained_state(), strict=False)
    m.eval()
    m.update()
    return m


def _image() -> torch.Tensor:
    return torch.from_numpy(smooth_image(0, 40, 56)).permute(2, 0, 1).float() / 255


def _loss(m: HyperpriorCodec, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> float:
    with torch.no_grad():
        return float(m._refine_loss(x, y, z, torch.zeros(1, 1, 1, 1, dtype=torch.bool), *x.shape[2:]))


def test_refinement_lowers_the_rate_distortion_loss():
    m, x = _model(), _image()[None]
    padded, _ = pad_to_multiple(x, m.multiple)
    with torch.no_grad():
        y0 = m.g_a(padded)
        z0 = m.h_a(y0)
    y1, z1 = m.refine(x, y0, z0, steps=30)
    assert not y1.requires_grad and not torch.equal(y1, y0)
    assert _loss(m, x, y1, z1) < 0.97 * _loss(m, x, y0, z0)
    assert all(p.requires_grad for p in m.parameters())  # the model's own flags are restored


def test_refined_file_decodes_with_the_plain_decoder():
    m, x = _model(), _image()
    plain = m.compress(x)
    assert m.compress(x, refine_steps=0) == plain  # no steps: the same bytes
    with torch.inference_mode():  # as the CLI calls it
        refined = m.compress(x, refine_steps=10)
    assert refined != plain
    out = m.decompress(refined)
    assert out.shape == x.shape
    with torch.inference_mode():
        enc = m.encode_latents(x[None], refine_steps=10)
    assert torch.equal(m.latents(refined), enc["y_hat"][0])  # deterministic on one machine


def test_refinement_of_gray_and_batches():
    m = _model()
    gray = _image()[:1]
    blob = m.compress(gray, refine_steps=3)
    assert m.decompress(blob).shape == gray.shape
    batch = torch.stack([_image(), gray.expand(3, -1, -1)])
    blobs = m.compress(batch, refine_steps=3)
    out = m.decompress(blobs[1])
    assert torch.equal(out[0], out[1])


def test_refinement_needs_the_training_lambda():
    m = _model(lmbda=None)
    with pytest.raises(ValueError, match="lmbda"):
        m.compress(_image(), refine_steps=2)


def test_cli_refine_steps(tmp_path):
    from PIL import Image

    model = str(save(_model(), tmp_path / "hp")) + ".json"
    Image.fromarray(smooth_image(1, 40, 56)).save(tmp_path / "a.png")
    r = CliRunner().invoke(cli, ["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.ncf"), "-m", model,
                                 "--refine-steps", "3"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["decode", str(tmp_path / "a.ncf"), "-o", str(tmp_path / "b.png"), "-m", model])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "b.png").size == (56, 40)
    # a codec without the setting: a clear per-file error, no output
    r = CliRunner().invoke(cli, ["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "c.ncf"),
                                 "-m", "walloc-image-16x", "--refine-steps", "3"])
    assert r.exit_code != 0 and "--refine-steps" in r.output
    assert not (tmp_path / "c.ncf").exists()


def test_bench_encode_options_make_a_separate_curve(image_dir, tmp_path):  # noqa: F811
    model = str(save(_model(), tmp_path / "models" / "hp")) + ".json"
    out = tmp_path / "out"
    summary = bench.run_rd(image_dir, [f"plain={model}", f"refined={model}"], out, anchor="plain", plots=False,
                           progress=False, encode_options={"refined": {"refine_steps": 5}})
    assert summary["errors"] == 0
    plain = [json.loads(s) for s in (out / "plain.per_file.jsonl").read_text().splitlines()]
    refined = [json.loads(s) for s in (out / "refined.per_file.jsonl").read_text().splitlines()]
    assert all("options" not in r for r in plain) and all(r["options"] == {"refine_steps": 5} for r in refined)
    assert [r["bytes"] for r in plain] != [r["bytes"] for r in refined]
    assert json.loads((out / "refined.json").read_text())["encode_options"] == {"refine_steps": 5}
    # resuming with other options runs the points again instead of reusing them
    bench.run_rd(image_dir, [f"refined={model}"], out, resume=True, plots=False, progress=False,
                 encode_options={"refined": {"refine_steps": 2}})
    log = [json.loads(s) for s in (out / "refined.per_file.jsonl").read_text().splitlines()]
    assert sum(r.get("options") == {"refine_steps": 2} for r in log) == 3


def test_bench_rejects_options_for_unknown_or_classical_codecs(image_dir, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="not one of the codecs"):
        bench.run_rd(image_dir, ["jpeg"], tmp_path, encode_options={"nope": {"refine_steps": 1}}, progress=False)
    with pytest.raises(ValueError, match="neural codecs"):
        bench.run_rd(image_dir, ["jpeg"], tmp_path, encode_options={"jpeg": {"refine_steps": 1}}, progress=False)
    r = CliRunner().invoke(cli, ["bench", "rd", "--data", str(image_dir), "--codecs", "jpeg", "--out", str(tmp_path),
                                 "--encode-option", "jpeg-refine_steps"])
    assert r.exit_code == 2 and "LABEL:KEY=VALUE" in r.output
