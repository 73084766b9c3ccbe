"""``codec bench``: rate-distortion and speed benchmarks of neural and classical codecs.

``run_rd`` (and ``codec bench rd``) encodes and decodes every file of a folder at every
quality point of every codec and writes, under ``out``:

* ``<codec>.json``: CompressAI's results layout, one entry per quality point, averaged
  over files (images: ``bpp``, ``psnr-rgb``, ``ms-ssim``, ``encoding_time``,
  ``decoding_time``; audio: ``kbps``, ``snr``, ``si-sdr``, ``mel-distance``, times;
  video: ``kbps``, ``psnr-y``, ``psnr-rgb`` (mean per-frame PSNR), times),
  plus ``quality`` (the knob or model name), ``n_files`` and the ``errors``;
* ``<codec>.per_file.jsonl``: one record per file x quality point. It is also the resume
  log: with ``resume=True`` every successful record found there is kept and not re-run
  (failed ones are tried again);
* ``bd_rate.json`` / ``bd_rate.md``: BD-rate and BD-distortion of every codec against the
  anchor, with both the cubic (default) and the piecewise-cubic (pchip) Bjøntegaard fits,
  on the mean curves (each point = mean rate and mean quality over the files); beside them
  the per-file BD-rate (MPEG/JVET CTC style: each file's own curve against the anchor's
  curve on that file, pchip, then mean and median over the files, with every skipped
  file and its reason; see :func:`neuralcodec.apps.bdrate.bd_rate_per_item`);
* ``rd_<metric>.png`` / ``.svg``: RD plots, one curve per codec.

Codecs are named in ``codecs``:

* a classical baseline (``jpeg``, ``webp``, ``jpeg2000``, ``avif``, ``jxl``, ``opus``,
  ``mp3``, ``vorbis``, ``x264``, ``x265``, ``svtav1``; see :mod:`neuralcodec.apps.baselines`),
  swept over its default
  quality points or the ones given in ``qualities``;
* a shipped neural model, ``neuralcodec.load(name)``: one point, or one point per entry
  of the model's ``qualities`` attribute if it has one (then ``compress(x, quality=q)``);
* a family of models, one point per model: ``"label=name1+name2+name3"`` (or
  ``"name1+name2"``, labelled by the first name) or, from Python, a list of names.

``encode_options`` (``--encode-option LABEL:KEY=VALUE``) passes keyword arguments to a
neural codec's ``compress``, e.g. ``{"hp-refined": {"refine_steps": 40}}`` with
``"hp-refined=hyperprior-mean-q1+hyperprior-mean-q2+hyperprior-mean-q3"``: the same models
as another curve of the run, encoded with more effort. The options are stored in the
codec's results JSON.

Rates count the actual bytes: images ``bpp = 8 * bytes / (H * W)`` with the whole file
or ``.ncf`` blob; audio ``kbps`` from the raw codec packets for the classical codecs (a
``kbps-file`` column keeps the whole file) and from the whole ``.ncf`` blob for neural
ones. Neural reconstructions are clamped to [0, 1] and rounded to 8 bits before scoring,
as they would be when written to a PNG, so they are scored like the classical decoders.

A codec that fails on a file is recorded with its error and the run goes on.

>>> # run_rd("../shared/data/images/eval24", ["jpeg", "webp"], "results/", anchor="jpeg")
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import MediaError
from . import bdrate, metrics
from .baselines import Audio, Video, get_baseline, is_baseline

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp"}
AUDIO_EXTS = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif"}
VIDEO_EXTS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v"}

IMAGE_METRICS = ("psnr-rgb", "ms-ssim")
AUDIO_METRICS = ("snr", "si-sdr", "mel-distance")
VIDEO_METRICS = ("psnr-y", "psnr-rgb")
TIME_KEYS = ("encoding_time", "decoding_time")


# ----------------------------------------------------------------------------- media
def _kind(path: Path) -> str | None:
    ext = path.suffix.lower()
    return "image" if ext in IMAGE_EXTS else "audio" if ext in AUDIO_EXTS else "video" if ext in VIDEO_EXTS else None


def find_media(data: str | Path, limit: int | None = None) -> tuple[str, list[Path]]:
    """The modality (``"image"``/``"audio"``/``"video"``) and the sorted media files of a folder.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); (d / "a.png").write_bytes(b"")
    0
    >>> find_media(d)[0]
    'image'
    """
    root = Path(data)
    if not root.is_dir():
        raise MediaError(f"no such folder: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and _kind(p))
    kinds = {_kind(p) for p in files}
    if not files:
        raise MediaError(f"no image, audio or video files in {root}")
    if len(kinds) > 1:
        raise MediaError(f"{root} mixes {' and '.join(sorted(kinds))}; benchmark one modality per folder")
    if limit is not None:
        files = files[: max(0, int(limit))]
    return kinds.pop(), files


def read_image_uint8(path: str | Path) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB (through ``neuralcodec.datasets.media`` when present)."""
    try:
        from ..datasets.media import read_image  # written by the media I/O module
    except ImportError:
        read_image = None
    if read_image is not None:
        x = read_image(path)
        t = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim == 3:  # read_image gives (C, H, W), C = 1, 3 or 4
            t = np.transpose(t, (1, 2, 0))
        if t.dtype != np.uint8:
            t = np.clip(np.round(t.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
        if t.ndim == 2:
            t = np.repeat(t[:, :, None], 3, axis=2)
        if t.shape[2] == 1:
            t = np.repeat(t, 3, axis=2)
        return np.ascontiguousarray(t[:, :, :3])
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")).copy()
    except Exception as e:
        raise MediaError(f"cannot read image {path}: {e}") from e


def read_audio(path: str | Path, max_seconds: float | None = None) -> Audio:
    """An audio file as :class:`Audio` ``(C, T)`` float32, optionally cut to its first ``max_seconds``."""
    import soundfile as sf

    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise MediaError(f"cannot read audio {path}: {e}") from e
    samples = samples.T
    if max_seconds is not None:
        samples = samples[:, : int(round(max_seconds * rate))]
    return Audio(samples, rate)


def read_video(path: str | Path, max_seconds: float | None = None) -> Video:
    """A video file's first video stream as :class:`Video` (RGB frames), optionally its first seconds.

    Frames of odd width or height lose their last column/row (4:2:0 codecs need even sizes).
    """
    import av

    frames = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            if not fps > 0:
                raise MediaError(f"{path}: unknown frame rate")
            limit = None if max_seconds is None else max(1, int(round(max_seconds * fps)))
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if limit is not None and len(frames) >= limit:
                    break
    except av.error.FFmpegError as e:
        raise MediaError(f"cannot read video {path}: {e}") from e
    if not frames:
        raise MediaError(f"{path}: no video frames")
    video = np.stack(frames)
    h, w = video.shape[1] // 2 * 2, video.shape[2] // 2 * 2
    return Video(video[:, :h, :w], fps)


@lru_cache(maxsize=2)
def _load_media(path: str, modality: str, max_seconds: float | None) -> Any:
    if modality == "image":
        return read_image_uint8(path)
    if modality == "audio":
        return read_audio(path, max_seconds)
    return read_video(path, max_seconds)


# ---------------------------------------------------------------------------- scoring
def score_image(original: np.ndarray, decoded: np.ndarray, n_bytes: int) -> dict[str, float]:
    h, w = original.shape[:2]
    return {
        "bpp": n_bytes * 8.0 / (h * w),
        "psnr-rgb": metrics.psnr(original, decoded),
        "ms-ssim": metrics.ms_ssim(original, decoded),
    }


def score_audio(original: Audio, decoded: Audio, n_bytes: int, file_bytes: int | None = None) -> dict[str, float]:
    ref, est = original.samples, decoded.samples
    out = {
        "kbps": n_bytes * 8.0 / original.seconds / 1000.0,
        "snr": metrics.snr(ref, est),
        "si-sdr": metrics.si_sdr(ref, est),
        "mel-distance": metrics.mel_distance(ref, est, original.sample_rate),
    }
    if file_bytes is not None:
        out["kbps-file"] = file_bytes * 8.0 / original.seconds / 1000.0
    return out


def _luma(rgb: np.ndarray) -> np.ndarray:
    # BT.601 luma of 8-bit RGB, on the [0, 1] scale
    return (rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114) / 255.0


def score_video(original: Video, decoded: Video, n_bytes: int, file_bytes: int | None = None) -> dict[str, float]:
    """kbps, mean per-frame PSNR of RGB and of BT.601 luma (Y computed from RGB)."""
    if decoded.frames.shape != original.frames.shape:
        raise MediaError(f"decoded {decoded.frames.shape}, original {original.frames.shape}")
    rgb, y = [], []
    for a, b in zip(original.frames, decoded.frames):  # frame by frame: bounded memory
        rgb.append(metrics.psnr(a, b))
        y.append(metrics.psnr(_luma(a.astype(np.float64)), _luma(b.astype(np.float64))))
    out = {
        "kbps": n_bytes * 8.0 / original.seconds / 1000.0,
        "psnr-rgb": float(np.mean(rgb)),
        "psnr-y": float(np.mean(y)),
    }
    if file_bytes is not None:
        out["kbps-file"] = file_bytes * 8.0 / original.seconds / 1000.0
    return out


def _error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def run_baseline_point(name: str, path: str, modality: str, quality: Any, max_seconds: float | None) -> dict:
    """Encode + decode + score one file at one quality with a classical baseline (never raises)."""
    record: dict[str, Any] = {}
    try:
        baseline = get_baseline(name)
        media = _load_media(path, modality, max_seconds)
        t0 = time.perf_counter()
        data = baseline.encode(media, quality)
        t1 = time.perf_counter()
        decoded = baseline.decode(data, like=media)
        t2 = time.perf_counter()
        if modality == "image":
            record.update(score_image(media, decoded, len(data)))
        elif modality == "audio":
            record.update(score_audio(media, decoded, baseline.payload_size(data), len(data)))
        else:
            record.update(score_video(media, decoded, baseline.payload_size(data), len(data)))
        record.update({"bytes": len(data), "encoding_time": t1 - t0, "decoding_time": t2 - t1, "error": None})
    except Exception as e:  # a failing codec is a result, not a crash of the run
        record["error"] = _error_text(e)
    return record


def _worker_init() -> None:
    # Parallelism comes from the processes; keep each one single-threaded.
    import torch

    torch.set_num_threads(1)


# ---------------------------------------------------------------------------- codecs
@dataclass
class CodecSpec:
    """One curve of the benchmark: a label, how to run it and its points."""

    label: str
    kind: str  # "baseline" | "neural" | "family" | "invalid"
    points: list = field(default_factory=list)
    baseline: str | None = None
    models: list[str] = field(default_factory=list)
    description: str = ""
    quality_name: str = "quality"
    error: str | None = None
    options: dict = field(default_factory=dict)  # keyword arguments of a neural codec's compress


def _safe_label(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in label)


def resolve_codec(spec: str | Sequence[str], modality: str, qualities: dict | None = None) -> CodecSpec:
    """A codec spec (see the module docstring) -> :class:`CodecSpec`; failures become ``kind="invalid"``."""
    qualities = qualities or {}
    if not isinstance(spec, str):
        names = [str(s) for s in spec]
        return CodecSpec(label=names[0], kind="family", points=names, models=names, quality_name="model")
    spec = spec.strip()
    if "+" in spec or "=" in spec:
        label, _, members = spec.rpartition("=")
        names = [n for n in members.split("+") if n]
        label = label or (names[0] if names else spec)
        if not names:
            return CodecSpec(label=spec, kind="invalid", error=f"empty model family {spec!r}")
        return CodecSpec(label=label, kind="family", points=names, models=names, quality_name="model")
    if is_baseline(spec):
        try:
            b = get_baseline(spec)
        except Exception as e:
            return CodecSpec(label=spec, kind="invalid", error=_error_text(e))
        cs = CodecSpec(
            label=spec,
            kind="baseline",
            points=list(qualities.get(spec, b.qualities)),
            baseline=spec,
            description=b.description,
            quality_name=b.quality_name,
        )
        reason = b.unavailable_reason()
        if reason:
            cs.kind, cs.error = "invalid", f"unavailable: {reason}"
        elif b.modality != modality:
            cs.kind, cs.error = "invalid", f"{spec} is a {b.modality} codec; the data is {modality}"
        return cs
    return CodecSpec(label=spec, kind="neural", points=[spec], models=[spec], quality_name="model")


class _NeuralRunner:
    """Loads neural models lazily (one at a time) and scores files with them."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._name: str | None = None
        self._model = None

    def model(self, name: str):
        if self._name != name:
            import neuralcodec

            self._model, self._name = None, None
            self._model = neuralcodec.load(name, device=self.device)
            self._name = name
        return self._model

    def points(self, spec: CodecSpec, modality: str) -> list[tuple[str, Any]]:
        """(model name, quality or None) pairs: one per model, or per model quality."""
        out = []
        for name in spec.models:
            model = self.model(name)
            model_modality = getattr(model, "modality", "")
            if model_modality and model_modality != modality:
                raise MediaError(f"{name} is a {model_modality} codec; the data is {modality}")
            qs = list(getattr(model, "qualities", None) or [])
            out.extend((name, q) for q in qs) if qs else out.append((name, None))
        return out

    def run(self, name: str, quality: Any, path: str, modality: str, max_seconds: float | None,
            options: dict | None = None) -> dict:
        import torch

        record: dict[str, Any] = {}
        try:
            model = self.model(name)
            media = _load_media(path, modality, max_seconds)
            if modality == "image":
                x = torch.from_numpy(media).permute(2, 0, 1).float().div(255.0).to(self.device)
            elif modality == "video":  # (C, T, H, W) in [0, 1]
                x = torch.from_numpy(media.frames).permute(3, 0, 1, 2).float().div(255.0).to(self.device)
            else:
                x = torch.from_numpy(media.samples).to(self.device)
                model_rate = getattr(model, "sample_rate", None)
                if model_rate and int(model_rate) != media.sample_rate:
                    import torchaudio.functional as AF

                    x = AF.resample(x, media.sample_rate, int(model_rate))
            kwargs = dict(options or {}) if quality is None else {**(options or {}), "quality": quality}
            with torch.inference_mode():
                _sync(self.device)
                t0 = time.perf_counter()
                blob = model.compress(x, **kwargs)
                _sync(self.device)
                t1 = time.perf_counter()
                if not isinstance(blob, (bytes, bytearray)):
                    raise TypeError(f"compress returned {type(blob).__name__}, not bytes")
                y = model.decompress(bytes(blob))
                _sync(self.device)
                t2 = time.perf_counter()
            y = y.detach().float().cpu()
            if modality == "image":
                if y.ndim == 4 and y.shape[0] == 1:
                    y = y[0]
                decoded = (y.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
                if decoded.shape != media.shape:
                    raise MediaError(f"decoded shape {decoded.shape} differs from the input {media.shape}")
                record.update(score_image(media, decoded, len(blob)))
            elif modality == "video":
                if y.ndim == 5 and y.shape[0] == 1:
                    y = y[0]
                frames = (y.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
                record.update(score_video(media, Video(frames, media.fps), len(blob)))
            else:
                if y.ndim == 3 and y.shape[0] == 1:
                    y = y[0]
                model_rate = getattr(model, "sample_rate", None)
                if model_rate and int(model_rate) != media.sample_rate:
                    import torchaudio.functional as AF

                    y = AF.resample(y, int(model_rate), media.sample_rate)
                est = y.clamp(-1, 1).numpy()
                if est.shape[0] != media.channels or est.shape[1] < media.samples.shape[1]:
                    raise MediaError(f"decoded shape {tuple(est.shape)} does not cover the input {media.samples.shape}")
                decoded = Audio(est[:, : media.samples.shape[1]], media.sample_rate)
                record.update(score_audio(media, decoded, len(blob)))
            record.update({"bytes": len(blob), "encoding_time": t1 - t0, "decoding_time": t2 - t1, "error": None})
        except Exception as e:
            record["error"] = _error_text(e)
        return record


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# --------------------------------------------------------------------------- storage
def _qkey(quality: Any) -> str:
    return json.dumps(quality)


def _read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by an interrupted run; that point is simply re-run
    return records


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are ordinary readable files
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, allow_nan=True)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _finite_mean(values: Iterable[float]) -> float | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return float(np.mean(vals))


def _current_records(spec: CodecSpec, records: list[dict]) -> list[dict]:
    """The records made with the spec's encode options (and codec-level errors); a log can
    hold older records of the same points made with other options."""
    return [r for r in records if r.get("file") == "*" or r.get("options", {}) == spec.options]


def aggregate(spec: CodecSpec, records: list[dict], files: list[str], modality: str, data: str) -> dict:
    """Per-file records -> one CompressAI-layout results dict (mean over files per point)."""
    keys = {
        "image": ("bpp",) + IMAGE_METRICS,
        "audio": ("kbps", "kbps-file") + AUDIO_METRICS,
        "video": ("kbps", "kbps-file") + VIDEO_METRICS,
    }[modality]
    latest: dict[tuple[str, str], dict] = {}
    for r in _current_records(spec, records):
        latest[(r.get("file"), _qkey(r.get("quality")))] = r
    results: dict[str, list] = {"quality": []}
    for k in keys + TIME_KEYS:
        results[k] = []
    results["n_files"] = []
    errors = [
        {"file": r.get("file"), "quality": r.get("quality"), "error": r["error"]}
        for r in latest.values()
        if r.get("error") and (r.get("file") in files or r.get("file") == "*")
    ]
    for q in spec.points:
        ok = [
            latest[(f, _qkey(q))]
            for f in files
            if (f, _qkey(q)) in latest and not latest[(f, _qkey(q))].get("error")
        ]
        if not ok:
            continue
        results["quality"].append(q)
        for k in keys + TIME_KEYS:
            if all(k in r for r in ok):
                results[k].append(_finite_mean(r[k] for r in ok))
            else:
                results[k].append(None)
        results["n_files"].append(len(ok))
    results = {k: v for k, v in results.items() if any(x is not None for x in v) or k in ("quality", "n_files")}
    if modality == "image" and results.get("ms-ssim"):
        results["ms-ssim-db"] = [None if v is None else metrics.ms_ssim_db(v) for v in results["ms-ssim"]]
    return {
        "name": spec.label,
        "description": spec.description or ("neuralcodec model(s) " + ", ".join(spec.models)),
        "modality": modality,
        "quality_name": spec.quality_name,
        "data": data,
        "files": len(files),
        "results": results,
        "errors": errors,
        **({"encode_options": spec.options} if spec.options else {}),
    }


# ------------------------------------------------------------------------------ BD
PER_FILE_METHOD = "pchip"  # per-file curves have as few as 2-3 points; the cubic fit needs 4
AGGREGATIONS = {
    "mean-curve": "BD between the mean RD curves (each point = mean rate and mean quality over the files)",
    "per-file": (
        "BD-rate of each file's own RD curve against the anchor's on the same file (pchip), then the"
        " mean / median over the files where it exists (MPEG/JVET common-test-conditions style)"
    ),
}


def _record_value(record: dict, key: str) -> float | None:
    """One metric of one per-file record (``ms-ssim-db`` derived from ``ms-ssim``), None if absent."""
    if key == "ms-ssim-db":
        v = record.get("ms-ssim")
        return None if not isinstance(v, (int, float)) else metrics.ms_ssim_db(v)
    v = record.get(key)
    return float(v) if isinstance(v, (int, float)) else None


def per_file_curves(
    records: Iterable[dict],
    points: Sequence[Any],
    rate_key: str,
    key: str,
    files: Sequence[str] | None = None,
    sign: int = 1,
) -> dict[str, tuple[list[float], list[float]]]:
    """Per-file records (a ``*.per_file.jsonl`` log) -> ``file -> (rates, sign * qualities)``.

    Only the quality points in ``points`` count; the latest record of a (file, point) wins, as in
    the aggregated results. Failed or non-finite points are left out of that file's curve.
    Every file of ``files`` (default: every file in the records) gets an entry, possibly with
    fewer than two points, so a BD over it reports the file as skipped instead of losing it.

    >>> recs = [{"file": "a.png", "quality": q, "bpp": b, "psnr-rgb": p, "error": None}
    ...         for q, b, p in ((10, 0.2, 28.0), (50, 0.6, 33.0))]
    >>> per_file_curves(recs, [10, 50], "bpp", "psnr-rgb")
    {'a.png': ([0.2, 0.6], [28.0, 33.0])}
    """
    wanted = {_qkey(q): i for i, q in enumerate(points)}
    latest: dict[tuple[str, str], dict] = {}
    for r in records:
        f = r.get("file")
        if f is None or f == "*" or _qkey(r.get("quality")) not in wanted:
            continue
        latest[(f, _qkey(r.get("quality")))] = r
    names = list(files) if files is not None else sorted({f for f, _ in latest})
    out: dict[str, tuple[list[float], list[float]]] = {f: ([], []) for f in names}
    for (f, q), r in sorted(latest.items(), key=lambda kv: wanted[kv[0][1]]):
        if f not in out or r.get("error"):
            continue
        rate, value = _record_value(r, rate_key), _record_value(r, key)
        if rate is None or value is None or not (math.isfinite(rate) and math.isfinite(value)) or rate <= 0:
            continue
        out[f][0].append(rate)
        out[f][1].append(sign * value)
    return out


def bd_table(
    entries: list[dict],
    anchor: str,
    modality: str,
    records: dict[str, list[dict]] | None = None,
    files: Sequence[str] | None = None,
) -> dict:
    """BD-rate / BD-distortion of every entry against ``anchor``: mean curves with both fits,
    and, given the per-file ``records`` (codec label -> its per-file log), the per-file BD-rate.

    Mean-curve columns are keyed ``bd-rate[<metric>](<method>)`` / ``bd-dist[...]`` in each row;
    the per-file results are under ``row["per-file"]["bd-rate[<metric>](pchip)"]``, each the
    :meth:`~neuralcodec.apps.bdrate.PerItemBD.to_dict` of
    :func:`~neuralcodec.apps.bdrate.bd_rate_per_item` (mean, median, n, skipped files with reasons).

    >>> e = {"name": "c", "results": {"quality": [1, 2], "bpp": [0.5, 1.0], "psnr-rgb": [30.0, 33.0]}}
    >>> recs = [{"file": "a.png", "quality": q, "bpp": b, "psnr-rgb": p} for q, b, p in ((1, 0.5, 30.0), (2, 1.0, 33.0))]
    >>> t = bd_table([e], "c", "image", records={"c": recs})
    >>> t["rows"][0]["bd-rate[psnr-rgb](pchip)"], t["rows"][0]["per-file"]["bd-rate[psnr-rgb](pchip)"]["mean"]
    (0.0, 0.0)
    """
    rate_key = "bpp" if modality == "image" else "kbps"
    # (column key, also report BD-distortion, sign making higher better). The log-mel distance
    # is lower-is-better, so its BD-rate is taken on its negative.
    measures = {
        "image": [("psnr-rgb", True, 1), ("ms-ssim-db", False, 1)],
        "audio": [("si-sdr", True, 1), ("snr", True, 1), ("mel-distance", False, -1)],
        "video": [("psnr-y", True, 1), ("psnr-rgb", True, 1)],
    }[modality]
    by_name = {e["name"]: e for e in entries}
    table: dict[str, Any] = {"anchor": anchor, "rate": rate_key, "rows": []}
    if records is not None:
        table["aggregation"] = dict(AGGREGATIONS)
    if anchor not in by_name:
        table["error"] = f"anchor {anchor!r} has no results"
        return table

    def file_curves(entry: dict, key: str, sign: int):
        points = entry["results"].get("quality", [])
        return per_file_curves(records.get(entry["name"], []), points, rate_key, key, files, sign)

    def curve(entry: dict, key: str, sign: int):
        res = entry["results"]
        pts = [
            (r, sign * d)
            for r, d in zip(res.get(rate_key, []), res.get(key, []))
            if r is not None and d is not None and math.isfinite(r) and math.isfinite(d) and r > 0
        ]
        return [p[0] for p in pts], [p[1] for p in pts]

    for entry in entries:
        row: dict[str, Any] = {"codec": entry["name"]}
        for key, with_distortion, sign in measures:
            ra, da = curve(by_name[anchor], key, sign)
            rt, dt = curve(entry, key, sign)
            for method in bdrate.METHODS:
                for what, fn in (("bd-rate", bdrate.bd_rate), ("bd-dist", bdrate.bd_psnr)):
                    if what == "bd-dist" and not with_distortion:
                        continue
                    col = f"{what}[{key}]({method})"
                    try:
                        row[col] = fn(ra, da, rt, dt, method=method)
                    except ValueError as e:
                        row[col] = None
                        row.setdefault("notes", []).append(f"{col}: {e}")
        if records is not None:
            per_file: dict[str, Any] = {}
            for key, _, sign in measures:
                anchor_curves = file_curves(by_name[anchor], key, sign)
                test_curves = file_curves(entry, key, sign)
                if not any(d for _, d in anchor_curves.values()) and not any(d for _, d in test_curves.values()):
                    continue  # the metric is not measured at all (as the mean-curve column would be empty)
                result = bdrate.bd_rate_per_item(anchor_curves, test_curves, method=PER_FILE_METHOD)
                per_file[f"bd-rate[{key}]({PER_FILE_METHOD})"] = result.to_dict()
            row["per-file"] = per_file
        table["rows"].append(row)
    return table


def _skipped_summary(skipped: dict[str, str], show: int = 6) -> str:
    """``{file: "reason: detail"}`` -> "no overlap (2): a.png, b.png; too few points (1): c.png"."""
    by_reason: dict[str, list[str]] = {}
    for item, why in skipped.items():
        by_reason.setdefault(why.split(":", 1)[0], []).append(item)
    parts = []
    for reason, items in by_reason.items():
        names = ", ".join(items[:show]) + (f", ... ({len(items) - show} more)" if len(items) > show else "")
        parts.append(f"{reason} ({len(items)}): {names}")
    return "; ".join(parts)


def bd_markdown(table: dict) -> str:
    """The BD table as markdown (numbers rounded; 'n/a' where a fit was impossible).

    Mean-curve columns first, then, when the table has them, the per-file columns (mean,
    median, files used / skipped) and a list of the skipped files with their reasons.

    >>> e = {"name": "c", "results": {"quality": [1, 2], "bpp": [0.5, 1.0], "psnr-rgb": [30.0, 33.0]}}
    >>> recs = [{"file": "a.png", "quality": q, "bpp": b, "psnr-rgb": p} for q, b, p in ((1, 0.5, 30.0), (2, 1.0, 33.0))]
    >>> print(bd_markdown(bd_table([e], "c", "image", records={"c": recs})).splitlines()[-1])
    | c | n/a | n/a | +0.0 | +0.00 | n/a | n/a | +0.0 | +0.0 | 1 / 0 |
    """
    if "error" in table:
        return f"BD table unavailable: {table['error']}\n"
    rows = table["rows"]
    cols = [c for c in rows[0] if c not in ("codec", "notes", "per-file")] if rows else []
    per_file_cols: list[str] = []
    for r in rows:
        per_file_cols += [c for c in r.get("per-file", {}) if c not in per_file_cols]

    def head(c: str) -> str:
        what, rest = c.split("[", 1)
        key, method = rest.split("](")
        unit = "%" if what == "bd-rate" else "dB"
        what = "BD-rate" if what == "bd-rate" else "BD-" + key.upper().replace("-RGB", "")
        return f"{what} {key} {method[:-1]} ({unit})"

    heads = [head(c) for c in cols]
    for c in per_file_cols:
        key, method = c.split("[", 1)[1].split("](")
        heads += [f"per-file BD-rate {key} {method[:-1]} mean (%)", "median (%)", "files used / skipped"]
    intro = f"Anchor: **{table['anchor']}** (rate: {table['rate']}). BD-rate < 0 and BD-dB > 0 mean better than the anchor."
    if per_file_cols:
        intro += (
            f" Mean-curve columns: {AGGREGATIONS['mean-curve']}. Per-file columns: {AGGREGATIONS['per-file']};"
            " skipped files are listed below the table."
        )
    lines = [intro, "", "| codec | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    notes = []
    for r in rows:
        cells = [("n/a" if r.get(c) is None else f"{r[c]:+.1f}" if "rate" in c else f"{r[c]:+.2f}") for c in cols]
        for c in per_file_cols:
            res = r.get("per-file", {}).get(c)
            if res is None:
                cells += ["n/a", "n/a", "n/a"]
                continue
            cells += [
                "n/a" if res["mean"] is None else f"{res['mean']:+.1f}",
                "n/a" if res["median"] is None else f"{res['median']:+.1f}",
                f"{res['n']} / {res['n_skipped']}",
            ]
            key = c.split("[", 1)[1].split("]")[0]
            if res["skipped"]:
                notes.append(f"- {r['codec']}, {key}: skipped {_skipped_summary(res['skipped'])}")
            if res.get("notes"):
                used = ", ".join(f"{f} ({why})" for f, why in res["notes"].items())
                notes.append(f"- {r['codec']}, {key}: used after merging identical points: {used}")
        lines.append(f"| {r['codec']} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "Per-file remarks (a skipped file is not in the per-file mean or median):", ""] + notes
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ run
def run_rd(
    data: str | Path,
    codecs: Sequence[str | Sequence[str]],
    out: str | Path,
    anchor: str | None = None,
    resume: bool = False,
    jobs: int = 1,
    limit: int | None = None,
    qualities: dict[str, Sequence] | None = None,
    max_seconds: float | None = None,
    device: str = "cpu",
    plots: bool = True,
    progress: bool = True,
    encode_options: dict[str, dict] | None = None,
) -> dict:
    """Run the rate-distortion benchmark; returns a summary dict (see the module docstring).

    >>> # summary = run_rd("../shared/data/images/eval24", ["jpeg", "webp"], "out/", anchor="jpeg", jobs=2)
    """
    from tqdm import tqdm

    data = Path(data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    modality, paths = find_media(data, limit)
    files = [str(p.relative_to(data)) for p in paths]
    specs = [resolve_codec(c, modality, qualities) for c in codecs]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"two codecs share a label: {labels}")
    for label, opts in (encode_options or {}).items():
        spec = next((s for s in specs if s.label == label), None)
        if spec is None:
            raise ValueError(f"encode options for {label!r}, which is not one of the codecs {labels}")
        if spec.kind not in ("neural", "family"):
            raise ValueError(f"encode options apply to neural codecs; {label!r} is {spec.kind}")
        spec.options = dict(opts)
    anchor = anchor or specs[0].label

    runner = _NeuralRunner(device)
    logs: dict[str, Path] = {s.label: out / f"{_safe_label(s.label)}.per_file.jsonl" for s in specs}
    done: dict[str, set] = {}
    for s in specs:
        if not resume and logs[s.label].exists():
            logs[s.label].unlink()
        done[s.label] = {
            (r.get("file"), _qkey(r.get("quality"))) for r in _current_records(s, _read_log(logs[s.label]))
            if not r.get("error")  # records made with other options are run again
        }

    def append(label: str, record: dict) -> None:
        with open(logs[label], "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")

    def codec_error(s: CodecSpec) -> None:
        # A codec-level failure replaces any earlier one, so resumed runs do not pile them up.
        kept = [r for r in _read_log(logs[s.label]) if r.get("file") != "*"]
        logs[s.label].write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in kept), encoding="utf-8")
        append(s.label, {"codec": s.label, "file": "*", "quality": None, "error": s.error})

    # Resolve each codec's points; failures to resolve (unknown name, unavailable library,
    # wrong modality, a model that does not load) are recorded once with file "*".
    tasks: list[tuple[CodecSpec, Any, Any, str]] = []  # (spec, quality, model, file)
    for s in specs:
        if s.kind == "invalid":
            codec_error(s)
            continue
        try:
            if s.kind == "baseline":
                pts = [(None, q) for q in s.points]
            else:
                pairs = runner.points(s, modality)
                if s.kind == "neural" and any(q is not None for _, q in pairs):
                    s.points = [q for _, q in pairs]
                    pts = [(m, q) for m, q in pairs]
                else:
                    s.points = [m if q is None else f"{m}@{q}" for m, q in pairs]
                    pts = [(m, q) for m, q in pairs]
        except Exception as e:
            s.error = _error_text(e)
            codec_error(s)
            s.kind = "invalid"
            continue
        for point_label, (model, q) in zip(s.points, pts):
            for f in files:
                if (f, _qkey(point_label)) in done[s.label]:
                    continue
                tasks.append((s, point_label, (model, q), f))

    total = sum(len(s.points) * len(files) for s in specs if s.kind != "invalid")
    bar = tqdm(total=total, initial=total - len(tasks), desc="bench rd", unit="run", disable=not progress, file=sys.stderr)

    def finish(s: CodecSpec, point_label: Any, f: str, record: dict) -> None:
        record = {"codec": s.label, "file": f, "quality": point_label, **record}
        if s.options:
            record["options"] = s.options
        append(s.label, record)
        bar.update(1)
        if record.get("error"):
            bar.write(f"[{s.label}] {f} @ {point_label}: {record['error']}")

    baseline_tasks = [t for t in tasks if t[0].kind == "baseline"]
    neural_tasks = [t for t in tasks if t[0].kind != "baseline"]
    if jobs > 1 and baseline_tasks:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: safe with torch's threads; workers re-import only what a baseline needs.
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
            futures = {
                pool.submit(run_baseline_point, s.baseline, str(data / f), modality, q, max_seconds): (s, q, f)
                for s, q, _, f in baseline_tasks
            }
            for fut in as_completed(futures):
                s, q, f = futures[fut]
                try:
                    rec = fut.result()
                except Exception as e:  # the worker itself died
                    rec = {"error": _error_text(e)}
                finish(s, q, f, rec)
    elif baseline_tasks:
        import torch

        # The classical codecs and the metrics are timed one thread each, as in the
        # parallel workers; torch's default threads only contend on a shared machine.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for s, q, _, f in baseline_tasks:
                finish(s, q, f, run_baseline_point(s.baseline, str(data / f), modality, q, max_seconds))
        finally:
            torch.set_num_threads(threads)
    for s, point_label, (model, q), f in neural_tasks:
        finish(s, point_label, f, runner.run(model, q, str(data / f), modality, max_seconds, s.options))
    bar.close()

    entries = []
    written: dict[str, str] = {}
    for s in specs:
        entry = aggregate(s, _read_log(logs[s.label]), files, modality, str(data))
        path = out / f"{_safe_label(s.label)}.json"
        _write_json(path, entry)
        written[s.label] = str(path)
        entries.append(entry)

    table = bd_table(entries, anchor, modality, records={s.label: _current_records(s, _read_log(logs[s.label])) for s in specs}, files=files)
    table["data"] = str(data)
    table["files"] = len(files)
    _write_json(out / "bd_rate.json", table)
    md = bd_markdown(table)
    (out / "bd_rate.md").write_text(md, encoding="utf-8")

    plot_paths: list[str] = []
    if plots:
        from .plots import plot_rd

        title = f"{data.name} ({len(files)} {modality} files)"
        if modality == "image":
            figs = [
                ("psnr-rgb", "rd_psnr", "PSNR RGB (dB)", None),
                ("ms-ssim", "rd_ms-ssim", "MS-SSIM (dB) = -10 log10(1 - MS-SSIM)", metrics.ms_ssim_db),
            ]
            xlabel, log_x = "bits per pixel", False
        elif modality == "video":
            figs = [("psnr-y", "rd_psnr-y", "PSNR Y (dB, BT.601 luma)", None), ("psnr-rgb", "rd_psnr-rgb", "PSNR RGB (dB)", None)]
            xlabel, log_x = "kbps", True
        else:
            figs = [
                ("si-sdr", "rd_si-sdr", "SI-SDR (dB)", None),
                ("snr", "rd_snr", "SNR (dB)", None),
                ("mel-distance", "rd_mel-distance", "log-mel L1 distance (lower is better)", None),
            ]
            xlabel, log_x = "kbps", True
        for key, stem, ylabel, fn in figs:
            paths = plot_rd(
                entries, "bpp" if modality == "image" else "kbps", key, out / stem,
                title=title, xlabel=xlabel, ylabel=ylabel, log_x=log_x, transform=fn,
            )
            plot_paths += [str(p) for p in paths]

    n_err = sum(len(e["errors"]) for e in entries)
    return {
        "modality": modality,
        "data": str(data),
        "files": len(files),
        "codecs": written,
        "anchor": anchor,
        "bd": table,
        "bd_markdown": md,
        "plots": plot_paths,
        "errors": n_err,
        "runs": total,
        "ran": len(tasks),
    }


# ----------------------------------------------------------------------------- speed
def run_speed(
    codec: str,
    files: Sequence[str | Path],
    device: str = "cpu",
    runs: int = 5,
    quality: Any = None,
    max_seconds: float | None = None,
) -> dict:
    """Encode/decode throughput of one codec on files: min and median over ``runs`` timed runs.

    One untimed warm-up run precedes the timed ones. Images report megapixels per second,
    audio the real-time factor (seconds of audio per second of compute).
    """
    import torch

    if runs < 1:
        raise ValueError("runs must be >= 1")
    paths = [Path(f) for f in files]
    if not paths:
        raise MediaError("no files given")
    kinds = {_kind(p) for p in paths}
    if None in kinds or len(kinds) != 1:
        raise MediaError("give image, audio or video files (one modality) with known extensions")
    modality = kinds.pop()

    if is_baseline(codec):
        b = get_baseline(codec)
        if b.modality != modality:
            raise MediaError(f"{codec} is a {b.modality} codec; the files are {modality}")
        q = quality if quality is not None else b.qualities[len(b.qualities) // 2]
        q = type(b.qualities[0])(q) if b.qualities else q

        def enc(media):
            return b.encode(media, q)

        def dec(data, media):
            return b.decode(data, like=media)

        label, device = f"{codec}@{q}", "cpu"
    else:
        import neuralcodec

        model = neuralcodec.load(codec, device=device)
        kwargs = {} if quality is None else {"quality": quality}

        def to_tensor(media):
            if modality == "image":
                return torch.from_numpy(media).permute(2, 0, 1).float().div(255.0).to(device)
            if modality == "video":
                return torch.from_numpy(media.frames).permute(3, 0, 1, 2).float().div(255.0).to(device)
            return torch.from_numpy(media.samples).to(device)

        def enc(media):
            with torch.inference_mode():
                blob = model.compress(to_tensor(media), **kwargs)
            _sync(device)
            return blob

        def dec(data, media):
            with torch.inference_mode():
                y = model.decompress(data)
            _sync(device)
            return y

        label = codec

    per_file = []
    for p in paths:
        media = _load_media(str(p), modality, max_seconds)
        size = (media.shape[0] * media.shape[1] / 1e6) if modality == "image" else media.seconds
        data = enc(media)
        dec(data, media)  # warm-up
        te, td = [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            data = enc(media)
            t1 = time.perf_counter()
            dec(data, media)
            t2 = time.perf_counter()
            te.append(t1 - t0)
            td.append(t2 - t1)
        per_file.append(
            {
                "file": str(p),
                "size": size,
                "bytes": len(data),
                "encode_s_min": min(te),
                "encode_s_median": statistics.median(te),
                "decode_s_min": min(td),
                "decode_s_median": statistics.median(td),
            }
        )
    unit = "MP/s" if modality == "image" else "x realtime"
    total = sum(r["size"] for r in per_file)
    summary = {
        "codec": label,
        "device": device,
        "modality": modality,
        "runs": runs,
        "files": len(per_file),
        "unit": unit,
        # throughput over all files: total size / sum of per-file min (or median) times
        "encode_min": total / sum(r["encode_s_min"] for r in per_file),
        "encode_median": total / sum(r["encode_s_median"] for r in per_file),
        "decode_min": total / sum(r["decode_s_min"] for r in per_file),
        "decode_median": total / sum(r["decode_s_median"] for r in per_file),
        "per_file": per_file,
    }
    return summary


# ------------------------------------------------------------------------------- CLI
def _click_group():
    import click

    @click.group("bench")
    def bench() -> None:
        """Rate-distortion and speed benchmarks (classical and neural codecs)."""

    @bench.command("rd")
    @click.option("--data", "data", required=True, type=click.Path(exists=True, file_okay=False), help="folder of images or audio")
    @click.option("--codecs", required=True, help="comma-separated: jpeg,webp,...,<model>, label=<m1>+<m2> for a family")
    @click.option("--out", required=True, type=click.Path(file_okay=False), help="output folder")
    @click.option("--anchor", default=None, help="BD-rate anchor codec (default: the first)")
    @click.option("--resume", is_flag=True, help="keep finished points from the per-file logs in --out")
    @click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 64), help="parallel processes for classical codecs")
    @click.option("--limit", default=None, type=click.IntRange(1), help="use only the first N files")
    @click.option("--quality", "quality_opts", multiple=True, metavar="CODEC=Q1/Q2/...", help="override a baseline's sweep")
    @click.option("--max-seconds", default=None, type=float, help="audio/video: use only the first S seconds of each file")
    @click.option("--device", default="cpu", show_default=True, help="device for neural codecs")
    @click.option("--no-plots", is_flag=True, help="skip the matplotlib plots")
    @click.option("--encode-option", "encode_opts", multiple=True, metavar="LABEL:KEY=VALUE",
                  help="keyword argument of a neural codec's compress, e.g. hp-refined:refine_steps=40")
    def rd_command(data, codecs, out, anchor, resume, jobs, limit, quality_opts, max_seconds, device, no_plots,
                   encode_opts) -> None:
        """Rate-distortion curves, BD-rate table and plots for every codec on every file.

        \b
        Example (the hyperprior family, plain and with 40 refinement steps, against JPEG):
          codec bench rd --data ../shared/data/images/eval24 --out results --anchor jpeg \\
              --codecs jpeg,hp=hyperprior-mean-q1+hyperprior-mean-q2+hyperprior-mean-q3,\\
          hp-refined=hyperprior-mean-q1+hyperprior-mean-q2+hyperprior-mean-q3 \\
              --encode-option hp-refined:refine_steps=40
        """
        encode_options: dict[str, dict] = {}
        for opt in encode_opts:
            label, _, assignment = opt.partition(":")
            key, _, value = assignment.partition("=")
            if not (label and key.isidentifier() and value):
                raise click.BadParameter(f"expected LABEL:KEY=VALUE, got {opt!r}", param_hint="--encode-option")
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = value  # a bare word: a string
            encode_options.setdefault(label, {})[key] = parsed
        qualities = {}
        for opt in quality_opts:
            name, _, values = opt.partition("=")
            if not values:
                raise click.BadParameter(f"expected CODEC=Q1/Q2/..., got {opt!r}", param_hint="--quality")
            try:
                qualities[name] = [float(v) if "." in v else int(v) for v in values.split("/") if v]
            except ValueError as e:
                raise click.BadParameter(str(e), param_hint="--quality") from e
        names = [c.strip() for c in codecs.split(",") if c.strip()]
        try:
            summary = run_rd(
                data, names, out, anchor=anchor, resume=resume, jobs=jobs, limit=limit,
                qualities=qualities, max_seconds=max_seconds, device=device, plots=not no_plots,
                encode_options=encode_options,
            )
        except ValueError as e:  # a bad codec list or options, found before any work
            raise click.UsageError(str(e)) from None
        click.echo(summary["bd_markdown"])
        for label, path in summary["codecs"].items():
            click.echo(f"{label}: {path}")
        for p in summary["plots"]:
            click.echo(f"plot: {p}")
        if summary["errors"]:
            click.echo(f"{summary['errors']} failed runs recorded in the results (see 'errors' in the JSON files)", err=True)
        click.echo(json.dumps({k: summary[k] for k in ("modality", "files", "anchor", "errors", "runs", "ran")}))

    @bench.command("speed")
    @click.option("--codec", required=True, help="baseline name or shipped model name")
    @click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
    @click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
    @click.option("--runs", default=5, show_default=True, type=click.IntRange(1, 1000))
    @click.option("--quality", default=None, help="quality point (default: middle of the baseline's sweep)")
    @click.option("--max-seconds", default=None, type=float, help="audio/video: first S seconds only")
    def speed_command(codec, files, device, runs, quality, max_seconds) -> None:
        """Encode/decode throughput of one codec: min and median over --runs runs."""
        q: Any = quality
        if quality is not None:
            try:
                q = float(quality)
            except ValueError:
                q = quality
        s = run_speed(codec, files, device=device, runs=runs, quality=q, max_seconds=max_seconds)
        for r in s["per_file"]:
            click.echo(
                f"{Path(r['file']).name}: encode min {r['encode_s_min'] * 1e3:.1f} ms / median {r['encode_s_median'] * 1e3:.1f} ms,"
                f" decode min {r['decode_s_min'] * 1e3:.1f} ms / median {r['decode_s_median'] * 1e3:.1f} ms"
            )
        click.echo(
            f"{s['codec']} on {s['device']}, {s['files']} files x {s['runs']} runs: "
            f"encode {s['encode_median']:.2f} {s['unit']} (median; best {s['encode_min']:.2f}), "
            f"decode {s['decode_median']:.2f} {s['unit']} (median; best {s['decode_min']:.2f})"
        )
        click.echo(json.dumps({k: v for k, v in s.items() if k != "per_file"}))

    return bench


bench = _click_group()

__all__ = [
    "run_rd",
    "run_speed",
    "find_media",
    "read_image_uint8",
    "read_audio",
    "bd_table",
    "bd_markdown",
    "per_file_curves",
    "bench",
]
