"""``codec encode``, ``codec decode`` and ``codec info``: the command line over the codecs.

* ``codec encode photo.png -o photo.ncf [--model NAME|PATH] [--device cpu|cuda]``
* ``codec decode photo.ncf -o photo.png``
* ``codec info photo.ncf [--json]``

Several inputs, or a directory (walked recursively), make ``-o`` an output directory
where the input names are mirrored (``photos/a/b.png`` -> ``OUT/a/b.ncf``). Outputs are
written atomically and an existing output is refused unless ``-f/--overwrite``. A file
that fails is reported, the others go on, and the exit code is 1 at the end.

Exit codes: 0 success; 1 at least one file failed (unreadable input, missing model,
corrupted or foreign ``.ncf``, existing output, no CUDA); 2 wrong usage; 130 interrupted.

>>> from neuralcodec.apps.cli import main
>>> main(["info", "--help"]) == 0  # doctest: +ELLIPSIS
Usage: codec info ...
True
"""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import click

if TYPE_CHECKING:  # torch is imported when a command runs, so `codec --help` starts fast
    import torch

from ..errors import BitstreamError, MediaError, ModelMismatchError, ModelNotFoundError, NeuralCodecError

__all__ = ["DEFAULT_MODELS", "encode_command", "decode_command", "info_command"]

NCF_SUFFIX = ".ncf"
# The model `codec encode` uses for a modality when --model is not given.
DEFAULT_MODELS = {"image": "walloc-image-16x", "audio": "walloc-audio", "video": "walloc-video"}
# The file format `codec decode` writes when the output name is not given.
DEFAULT_DECODED_SUFFIX = {"image": ".png", "audio": ".wav", "video": ".mkv"}


# -- shared helpers ---------------------------------------------------------------------------


@dataclass
class _Job:
    source: Path
    target: Path  # for decode in batch mode: the target without its suffix (chosen per file)
    auto_suffix: bool = False


class _Failures:
    """Counts failed files and prints each failure without breaking the progress bar."""

    def __init__(self) -> None:
        self.count = 0

    def report(self, source: Path, error: BaseException) -> None:
        self.count += 1
        _echo_err(f"error: {_describe(source, error)}")


def _describe(source: Path, e: BaseException) -> str:
    text = str(e)
    if isinstance(e, FileExistsError):
        return f"{e.filename or source}: output already exists (pass -f/--overwrite to replace it)"
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or text}"
    if isinstance(e, NeuralCodecError):
        return text if str(source) in text else f"{source}: {text}"
    return f"{source}: {type(e).__name__}: {text}"  # an unexpected failure: say what it was


def _echo_err(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _progress(items: list[Any], quiet: bool, desc: str) -> Iterable[Any]:
    from tqdm import tqdm

    # Only for a person watching: never in pipes, logs or tests.
    disable = quiet or not sys.stderr.isatty() or len(items) < 2
    return tqdm(items, desc=desc, unit="file", file=sys.stderr, disable=disable, dynamic_ncols=True)


def _device(name: str) -> "torch.device":
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise click.BadParameter(f"{name!r} is not a device (use cpu, cuda or cuda:N)", param_hint="--device")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise NeuralCodecError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise NeuralCodecError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise click.BadParameter(f"{name!r}: only cpu and cuda are supported", param_hint="--device")
    return device


class _Models:
    """Loads each model once per run; a model that fails to load fails every file that needs it."""

    def __init__(self, device: "torch.device") -> None:
        self.device = device
        self._cache: dict[str, Any] = {}

    def get(self, name: str) -> tuple[Any, str]:
        """(codec, weights hash) for a shipped name or a saved model's path."""
        if name not in self._cache:
            try:
                from .. import load

                codec = load(name, device=self.device)
                self._cache[name] = (codec, codec.weights_hash())
            except NeuralCodecError as e:
                self._cache[name] = e
            except Exception as e:  # noqa: BLE001 - a broken model file: a clear error, not a traceback
                text = " ".join(str(e).split())  # torch's state-dict errors run to pages: keep the start
                text = text if len(text) <= 300 else text[:300] + " ..."
                self._cache[name] = NeuralCodecError(f"cannot load model {name!r}: {type(e).__name__}: {text}")
        entry = self._cache[name]
        if isinstance(entry, BaseException):
            raise entry
        return entry


def _plan(
    inputs: tuple[Path, ...],
    output: Path | None,
    walk_suffixes: tuple[str, ...],
    target_suffix: str | None,
    failures: _Failures,
) -> list[_Job]:
    """Expand the inputs (directories recursively) and give each file its output path.

    ``target_suffix=None`` leaves the suffix open (decode chooses it from the file's modality).
    """
    batch = len(inputs) > 1 or any(p.is_dir() for p in inputs) or (output is not None and output.is_dir())
    if batch and output is not None and output.exists() and not output.is_dir():
        raise click.UsageError(f"-o {output}: with several inputs or a directory, -o must be a directory")
    sources: list[tuple[Path, Path]] = []  # (file, name relative to the output directory)
    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in walk_suffixes)
            if not found:
                failures.report(item, MediaError(f"{item}: no files with suffix {' '.join(walk_suffixes)} found"))
            sources += [(p, p.relative_to(item)) for p in found]
        elif item.exists():
            sources.append((item, Path(item.name)))
        else:
            failures.report(item, MediaError(f"{item}: no such file or directory"))
    jobs: list[_Job] = []
    seen: dict[Path, Path] = {}
    for source, relative in sources:
        if batch:
            base = (output / relative) if output is not None else source
            auto = True
        elif output is not None:
            base, auto = output, False
        else:
            base, auto = source, True
        target = base.with_suffix(target_suffix) if auto and target_suffix else base
        key = target.resolve() if not (auto and target_suffix is None) else base.with_suffix("").resolve()
        if key in seen:
            failures.report(source, NeuralCodecError(f"{source}: same output as {seen[key]} (rename one of them)"))
            continue
        seen[key] = source
        jobs.append(_Job(source, target, auto_suffix=auto and target_suffix is None))
    return jobs


def _run(jobs: list[_Job], work: Callable[[_Job], str | None], quiet: bool, desc: str, failures: _Failures) -> int:
    """Run ``work`` on every job; return how many succeeded."""
    done = 0
    for job in _progress(jobs, quiet, desc):
        try:
            message = work(job)
        except Exception as e:  # noqa: BLE001 - report any failure of one file and go on
            failures.report(job.source, e)
            continue
        done += 1
        if message and not quiet:
            _echo_err(message)
    return done


def _finish(failures: _Failures, done: int, verb: str) -> None:
    if failures.count:
        if done + failures.count > 1:
            _echo_err(f"{verb} {done} file(s); {failures.count} failed")
        raise click.exceptions.Exit(1)


def _check_target(target: Path, overwrite: bool) -> None:
    # Refuse before any work is spent; the atomic writer checks again at the end.
    if not overwrite and target.exists():
        raise FileExistsError(17, "output already exists", str(target))
    target.parent.mkdir(parents=True, exist_ok=True)


def _human_bytes(n: int) -> str:
    return f"{n:,} bytes"


# -- encode -----------------------------------------------------------------------------------


@click.command("encode")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output .ncf file, or directory for several inputs. Default: next to each input.")
@click.option("-m", "--model", default=None, help="Shipped model name or a saved model's .safetensors/.json path. Default: walloc-image-16x for images, walloc-audio for audio, walloc-video for video.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("-f", "--overwrite", is_flag=True, help="Replace existing output files.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no per-file lines.")
@click.option("--quantizers", "num_quantizers", default=None, type=click.IntRange(min=1), help="Token codecs (walloc-audio-rvq): number of residual quantizers, i.e. the bitrate. Default: all.")
@click.option("--refine-steps", default=None, type=click.IntRange(min=0), help="Hyperprior models: optimise each image's latents for its own rate-distortion loss this many steps before coding (smaller files, same decoder; about 0.5 s per step for a 768x512 image on 2 CPU cores). Default: 0.")
def encode_command(inputs: tuple[Path, ...], output: Path | None, model: str | None, device: str, overwrite: bool, quiet: bool, num_quantizers: int | None = None, refine_steps: int | None = None) -> None:
    """Compress images, audio or video files (or directories of them) to .ncf files.

    \b
      codec encode photo.png -o photo.ncf
      codec encode photos/ -o compressed/        # mirrors photos/a.png -> compressed/a.ncf
      codec encode song.flac -o song.ncf --model walloc-audio
      codec encode song.flac -o song.ncf --model walloc-audio-rvq --quantizers 4
      codec encode photo.png -o photo.ncf --model hyperprior-mean-q2 --refine-steps 40
    """
    import inspect

    from ..datasets.media import AUDIO_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES, atomic_output, modality_of, read_media
    from ..entropy.container import Container

    models = _Models(_device(device))
    if model is not None:
        models.get(model)  # a missing --model fails every file: say so once, before any work
    failures = _Failures()
    jobs = _plan(inputs, output, IMAGE_SUFFIXES + AUDIO_SUFFIXES + VIDEO_SUFFIXES, NCF_SUFFIX, failures)

    def work(job: _Job) -> str:
        import torch

        _check_target(job.target, overwrite)
        modality = modality_of(job.source)
        try:
            codec, _ = models.get(model or DEFAULT_MODELS[modality])
        except ModelNotFoundError as e:
            if model is not None:
                raise
            raise ModelNotFoundError(f"no default {modality} model installed ({e}); pass --model NAME or PATH") from None
        if codec.modality != modality:
            raise NeuralCodecError(f"{job.source}: model {codec.name!r} codes {codec.modality}, but this file is {modality}")
        options = {}
        for key, value, flag, kind in (("num_quantizers", num_quantizers, "--quantizers", "token codecs"),
                                       ("refine_steps", refine_steps, "--refine-steps", "hyperprior models")):
            if value is None:
                continue
            if key not in inspect.signature(codec.compress).parameters:
                raise NeuralCodecError(f"model {codec.name!r} has no {flag} setting ({kind} only)")
            options[key] = value
        streamed = _encode_audio_stream(codec, job.source) if modality == "audio" and not options else None
        if streamed is None and modality == "video" and not options:
            streamed = _encode_video_stream(codec, job.source)
        if streamed is not None:  # long audio/video: bounded memory, same bytes as compress()
            blob, shape = streamed
        else:
            media = read_media(job.source)
            with torch.inference_mode():
                blob = codec.compress(media.data.to(models.device), metadata=media.metadata, **options)
            shape = tuple(media.data.shape)
        if not isinstance(blob, (bytes, bytearray)):
            raise NeuralCodecError(f"{job.source}: codec returned {type(blob).__name__}, not bytes")
        container = Container.from_bytes(blob)  # never write a file we could not read back
        if container.shape != shape:
            raise NeuralCodecError(f"{job.source}: codec stored shape {container.shape}, input is {shape}")
        with atomic_output(job.target, overwrite=overwrite) as tmp:
            tmp.write_bytes(blob)
        return f"{job.source} -> {job.target}: {_human_bytes(len(blob))}, {_rate_text(_rate(container.modality, container.shape, container.metadata, len(blob)))}"

    _finish(failures, _run(jobs, work, quiet, "encode", failures), "encoded")



# -- streaming audio ----------------------------------------------------------------------------

STREAM_FRAMES = 1 << 18  # samples read or written per step when an audio codec streams


def _encode_audio_stream(codec: Any, path: Path) -> tuple[bytes, tuple[int, ...]] | None:
    """Encode an audio file block by block when the codec streams at the file's rate, else None.

    Holds a few blocks of audio at a time (a 10-minute track never sits in memory whole); the
    bytes equal ``codec.compress(read_media(path).data, metadata)``.
    """
    import torch

    from ..datasets.media import audio_info, iter_audio

    can_stream = getattr(codec, "can_stream", None)
    info = audio_info(path)
    if can_stream is None or info["frames"] == 0 or not can_stream(info["sample_rate"]):
        return None
    meta = {k: info[k] for k in ("sample_rate", "subtype", "format", "source")}
    with torch.inference_mode():
        blob = codec.compress_stream(iter_audio(path, STREAM_FRAMES), info["sample_rate"], metadata=meta)
    return blob, (info["channels"], info["frames"])


def _decode_audio_stream(codec: Any, blob: bytes, container: Any, meta: dict[str, Any], target: Path,
                         overwrite: bool) -> bool:
    """Decode audio chunk by chunk straight into the output file when the codec can; True if done."""
    import torch

    from ..datasets.media import audio_writer

    if container.modality != "audio" or not hasattr(codec, "decompress_stream"):
        return False
    if not getattr(codec, "can_stream", lambda rate: False)(int(meta["sample_rate"])):
        return False
    channels, frames = container.shape
    written = 0
    with torch.inference_mode(), audio_writer(target, int(meta["sample_rate"]), channels,
                                              subtype=meta.get("subtype"), overwrite=overwrite) as out:
        for piece in codec.decompress_stream(blob):
            if piece.shape[0] != channels:
                raise NeuralCodecError(f"codec decoded {piece.shape[0]} channels, the file says {channels}")
            out.write(piece.float().cpu())
            written += piece.shape[1]
        if written != frames:  # raising inside the block leaves no output file
            raise NeuralCodecError(f"codec decoded {written} samples, the file says {frames}")
    return True

# -- streaming video ----------------------------------------------------------------------------


def _encode_video_stream(codec: Any, path: Path) -> tuple[bytes, tuple[int, ...]] | None:
    """Encode a video GOP by GOP when the codec can (``compress_stream``), else None.

    Holds one GOP of decoded frames at a time; the bytes equal
    ``codec.compress(read_media(path).data, metadata)``.
    """
    import torch

    from ..datasets.media import _fps_fraction, _open_video, iter_video

    if not hasattr(codec, "compress_stream") or codec.modality != "video":
        return None
    container, stream = _open_video(path)
    with container:
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        meta = {"codec": stream.codec_context.name, "format": container.format.name, "source": path.name}
    if not rate:
        raise MediaError(f"{path}: the video has no frame rate")
    fps = _fps_fraction(rate, path)
    seen = {"frames": 0, "size": None}

    def chunks() -> Any:
        for chunk in iter_video(path, chunk_frames=int(getattr(codec, "gop", 16))):
            seen["frames"] += chunk.shape[1]
            seen["size"] = tuple(chunk.shape[2:])
            yield chunk

    with torch.inference_mode():
        blob = codec.compress_stream(chunks(), f"{fps.numerator}/{fps.denominator}", metadata=meta)
    if not seen["frames"]:
        raise MediaError(f"{path}: the video has no frames")
    return blob, (3, seen["frames"], *seen["size"])


def _decode_video_stream(codec: Any, blob: bytes, container: Any, meta: dict[str, Any], target: Path,
                         overwrite: bool) -> bool:
    """Decode video GOP by GOP straight into the output file when the codec can; True if done.

    The output is written atomically: a failure (corrupted stream) leaves no file.
    """
    if container.modality != "video" or not hasattr(codec, "decompress_stream"):
        return False
    import numpy as np
    import torch

    import av  # only here: decoding images and audio must not need PyAV

    from ..datasets.media import _VIDEO_FORMATS, _fps_fraction, atomic_output

    suffix = target.suffix.lower()
    if suffix not in _VIDEO_FORMATS:
        raise MediaError(f"{target}: unknown video format {target.suffix!r}")
    fmt, encoder, pix_fmt = _VIDEO_FORMATS[suffix]
    _, frames, h, w = container.shape
    if pix_fmt == "yuv420p" and (h % 2 or w % 2):
        pix_fmt = "yuv444p"  # as write_video: 4:2:0 needs even sides
    options = {"libx264": {"crf": "12", "preset": "medium"}, "libvpx-vp9": {"crf": "15", "b": "0"}}.get(encoder, {})
    rate = _fps_fraction(meta["fps"], target)
    written = 0
    with torch.inference_mode(), atomic_output(target, overwrite=overwrite) as tmp:
        with av.open(str(tmp), mode="w", format=fmt) as out:
            stream = out.add_stream(encoder, rate=rate, options=options)
            stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
            for piece in codec.decompress_stream(blob):
                if tuple(piece.shape[2:]) != (h, w) or piece.shape[0] != 3:
                    raise NeuralCodecError(f"codec decoded frames of shape {tuple(piece.shape)}, the file says {container.shape}")
                a = np.rint(piece.clamp(0, 1).mul(255).cpu().numpy()).astype(np.uint8)
                for t in range(a.shape[1]):
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(a[:, t].transpose(1, 2, 0)), format="rgb24")
                    frame.pts = written
                    written += 1
                    for packet in stream.encode(frame):
                        out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        if written != frames:  # raising inside the block leaves no output file
            raise NeuralCodecError(f"codec decoded {written} frames, the file says {frames}")
    return True


# -- decode -----------------------------------------------------------------------------------


def _checked_media_metadata(container: Any, source: Path) -> dict[str, Any]:
    """The metadata the writer needs, validated: it comes from a file, so it is untrusted."""
    meta = dict(container.metadata)
    shape = container.shape
    if container.modality == "image":
        if len(shape) != 3 or shape[0] not in (1, 3, 4):
            raise BitstreamError(f"{source}: image shape {shape} is not (C, H, W) with C in 1, 3, 4")
        mode = meta.get("mode", None)
        channels = {"L": 1, "RGB": 3, "RGBA": 4}
        if (mode is not None and channels.get(mode) != shape[0]) or meta.get("bit_depth", 8) not in (8, 16):
            raise BitstreamError(f"{source}: invalid image metadata (mode {mode!r} for {shape[0]} channels, bit depth {meta.get('bit_depth')!r})")
    elif container.modality == "audio":
        rate = meta.get("sample_rate")
        if len(shape) != 2 or not isinstance(rate, int) or isinstance(rate, bool) or not 1 <= rate <= 10_000_000:
            raise BitstreamError(f"{source}: invalid audio header (shape {shape}, sample rate {rate!r})")
        if not isinstance(meta.get("subtype", ""), str):
            raise BitstreamError(f"{source}: invalid audio subtype")
    elif container.modality == "video":
        from ..datasets.media import _fps_fraction

        if len(shape) != 4 or shape[0] != 3:
            raise BitstreamError(f"{source}: video shape {shape} is not (3, T, H, W)")
        try:
            _fps_fraction(meta.get("fps"), source)
        except MediaError:
            raise BitstreamError(f"{source}: invalid video frame rate {meta.get('fps')!r}") from None
    else:
        raise MediaError(f"{source}: cannot write {container.modality!r} files (image, audio and video are supported)")
    return meta


@click.command("decode")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output file (its suffix picks the format), or directory for several inputs. Default: next to each input.")
@click.option("-m", "--model", default=None, help="Decode with this model (name or path) instead of the one named in the file; its weights must match.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--format", "fmt", default=None, help="Suffix for outputs named automatically, e.g. png, webp, wav, flac, mkv, mp4. Default: png for images, wav for audio, mkv (lossless FFV1) for video.")
@click.option("-f", "--overwrite", is_flag=True, help="Replace existing output files.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no per-file lines.")
def decode_command(inputs: tuple[Path, ...], output: Path | None, model: str | None, device: str, fmt: str | None, overwrite: bool, quiet: bool) -> None:
    """Decompress .ncf files (or directories of them) to images, audio or video.

    The model named in each file is used unless --model is given. The output keeps the
    original mode (gray/RGB/RGBA) and bit depth, or sample rate and sample format.

    \b
      codec decode photo.ncf -o photo.png
      codec decode compressed/ -o decoded/ --format webp
    """
    from ..datasets.media import AUDIO_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES, write_media
    from ..entropy.container import Container

    suffix = None
    if fmt is not None:
        suffix = "." + fmt.lower().lstrip(".")
        if suffix not in IMAGE_SUFFIXES + AUDIO_SUFFIXES + VIDEO_SUFFIXES:
            raise click.BadParameter(f"unknown format {fmt!r}", param_hint="--format")
    models = _Models(_device(device))
    if model is not None:
        models.get(model)
    failures = _Failures()
    jobs = _plan(inputs, output, (NCF_SUFFIX,), None, failures)

    def work(job: _Job) -> str:
        import torch

        blob = job.source.read_bytes()
        try:
            container = Container.from_bytes(blob)
        except BitstreamError as e:
            raise BitstreamError(f"{job.source}: {e}") from None
        meta = _checked_media_metadata(container, job.source)
        target = job.target
        if job.auto_suffix:
            wanted = suffix or DEFAULT_DECODED_SUFFIX[container.modality]
            modality_suffixes = {"image": IMAGE_SUFFIXES, "audio": AUDIO_SUFFIXES, "video": VIDEO_SUFFIXES}
            if wanted not in modality_suffixes[container.modality]:
                raise MediaError(f"{job.source}: --format {wanted[1:]} cannot hold {container.modality}")
            target = target.with_suffix(wanted)
        _check_target(target, overwrite)
        if model is None:
            from .. import available

            # The name comes from the file: only ever a shipped model, never a path.
            if container.codec not in available():
                raise ModelNotFoundError(
                    f"{job.source}: made by model {container.codec!r}, which is not installed "
                    f"(available: {', '.join(available()) or 'none'}); pass --model NAME or PATH"
                )
        codec, weights_hash = models.get(model or container.codec)
        if container.weights_hash and weights_hash != container.weights_hash:
            raise ModelMismatchError(
                f"{job.source}: made by {container.codec!r} with weights {container.weights_hash}, but model "
                f"{codec.name!r} has weights {weights_hash}; decode with the model that encoded it (--model)"
            )
        if codec.modality != container.modality:
            raise ModelMismatchError(f"{job.source}: model {codec.name!r} codes {codec.modality}, the file holds {container.modality}")
        if _decode_audio_stream(codec, blob, container, meta, target, overwrite):
            return f"{job.source} -> {target}"
        if _decode_video_stream(codec, blob, container, meta, target, overwrite):
            return f"{job.source} -> {target}"
        with torch.inference_mode():
            decoded = codec.decompress(blob)
        if not isinstance(decoded, torch.Tensor):
            raise NeuralCodecError(f"{job.source}: codec returned {type(decoded).__name__}, not a tensor")
        if decoded.dim() == len(container.shape) + 1 and decoded.shape[0] == 1:
            decoded = decoded[0]  # a batch of one
        if tuple(decoded.shape) != container.shape:
            raise NeuralCodecError(f"{job.source}: codec decoded shape {tuple(decoded.shape)}, the file says {container.shape}")
        with warnings.catch_warnings(record=True) as caught:  # format limits (16-bit -> JPEG, ...)
            warnings.simplefilter("always")
            write_media(target, decoded.float().cpu(), container.modality, meta, overwrite=overwrite)
        for w in caught:
            _echo_err(f"warning: {target}: {w.message}")
        return f"{job.source} -> {target}"

    _finish(failures, _run(jobs, work, quiet, "decode", failures), "decoded")


# -- info -------------------------------------------------------------------------------------


def _rate(modality: str, shape: tuple[int, ...], metadata: dict[str, Any], n_bytes: int) -> dict[str, Any]:
    """Bits per pixel for images, kilobits per second for audio (None when unknown)."""
    if modality == "image" and len(shape) == 3:
        return {"pixels": shape[1] * shape[2], "bpp": 8.0 * n_bytes / (shape[1] * shape[2])}
    rate = metadata.get("sample_rate")
    if modality == "audio" and len(shape) == 2 and isinstance(rate, (int, float)) and rate > 0:
        seconds = shape[1] / rate
        return {"duration_s": seconds, "kbps": 8.0 * n_bytes / seconds / 1000.0}
    if modality == "video" and len(shape) == 4:
        from fractions import Fraction

        try:
            fps = Fraction(metadata.get("fps"))
        except (TypeError, ValueError, ZeroDivisionError):
            fps = None
        pixels = shape[1] * shape[2] * shape[3]
        out = {"pixels": pixels, "bpp": 8.0 * n_bytes / pixels}
        if fps is not None and fps > 0:
            seconds = float(shape[1] / fps)
            out.update(duration_s=seconds, kbps=8.0 * n_bytes / seconds / 1000.0)
        return out
    return {}


def _rate_text(rate: dict[str, Any]) -> str:
    if "bpp" in rate and "kbps" in rate:  # video
        return f"{rate['kbps']:.2f} kbps over {rate['duration_s']:.3f} s, {rate['bpp']:.4f} bpp"
    if "bpp" in rate:
        return f"{rate['bpp']:.4f} bpp"
    if "kbps" in rate:
        return f"{rate['kbps']:.2f} kbps over {rate['duration_s']:.3f} s"
    return "rate unknown"


def _raw_bytes(modality: str, shape: tuple[int, ...], metadata: dict[str, Any]) -> int | None:
    """Size of the uncompressed original (8/16-bit pixels, 16-bit or stored PCM samples)."""
    count = 1
    for d in shape:
        count *= d
    if modality == "image":
        return count * (2 if metadata.get("bit_depth") == 16 else 1)
    if modality == "video":
        return count
    if modality == "audio":
        bits = {"PCM_S8": 8, "PCM_U8": 8, "PCM_24": 24, "PCM_32": 32, "FLOAT": 32, "DOUBLE": 64}.get(metadata.get("subtype"), 16)
        return count * bits // 8
    return None


def describe_ncf(path: Path) -> dict[str, Any]:
    """What ``codec info --json`` prints for one file.

    ``bpp``/``kbps`` count the whole file; ``payload_bpp``/``payload_kbps`` only its sections
    (the header's codec name and metadata are a fixed cost of a few hundred bytes).

    >>> import tempfile, os
    >>> from neuralcodec.entropy.container import Container, write_container
    >>> p = os.path.join(tempfile.mkdtemp(), "x.ncf")
    >>> write_container(p, Container("demo", "ab", "image", (3, 4, 8), {"bit_depth": 8}, {"latent": b"1234"}))
    >>> d = describe_ncf(Path(p))
    >>> d["codec"], d["shape"], d["sections"], d["crc_ok"]
    ('demo', [3, 4, 8], {'latent': 4}, True)
    >>> d["bpp"] == 8 * os.path.getsize(p) / 32, d["payload_bpp"]  # whole file; sections only
    (True, 1.0)
    """
    from ..entropy.container import peek

    info = peek(path)
    shape = tuple(info["shape"])
    payload = sum(info["sections"].values())  # without the header: what the entropy coder spent
    out = {
        "path": str(path),
        "codec": info["codec"],
        "weights_hash": info["weights_hash"],
        "modality": info["modality"],
        "shape": list(shape),
        "file_bytes": info["total_bytes"],
        "header_bytes": info["header_bytes"],
        "sections": info["sections"],
        "raw_bytes": _raw_bytes(info["modality"], shape, info["metadata"]),
        **_rate(info["modality"], shape, info["metadata"], info["total_bytes"]),
        **{f"payload_{k}": v for k, v in _rate(info["modality"], shape, info["metadata"], payload).items() if k in ("bpp", "kbps")},
        "metadata": info["metadata"],
        "format_version": info["format_version"],
        "crc_ok": info["crc_ok"],
    }
    return out


def _info_text(d: dict[str, Any]) -> str:
    shape = "×".join(str(s) for s in d["shape"])
    meta = d["metadata"]
    if d["modality"] == "image":
        what = f"{meta.get('mode', '?')}, {meta.get('bit_depth', '?')}-bit"
    elif d["modality"] == "audio":
        what = f"{meta.get('sample_rate', '?')} Hz, {meta.get('subtype', '?')}"
    elif d["modality"] == "video":
        what = f"{meta.get('fps', '?')} fps"
    else:
        what = d["modality"]
    lines = [
        f"{d['path']}",
        f"  codec        {d['codec']} (weights {d['weights_hash'] or 'unrecorded'})",
        f"  modality     {d['modality']}",
        f"  shape        {shape} ({what})" + (f", {d['duration_s']:.3f} s" if "duration_s" in d else ""),
    ]
    if meta.get("source"):
        lines.append(f"  source       {meta['source']}")
    size = f"  file size    {_human_bytes(d['file_bytes'])} (header {d['header_bytes']:,})"
    lines.append(size)
    if d["raw_bytes"]:
        lines.append(f"  original     {_human_bytes(d['raw_bytes'])} uncompressed, ratio {d['raw_bytes'] / d['file_bytes']:.1f}:1")
    payload = ", ".join(f"{d['payload_' + k]:.4f} {k}" for k in ("bpp", "kbps") if "payload_" + k in d)
    lines.append(f"  rate         {_rate_text(d)}" + (f" (sections only: {payload})" if payload else ""))
    sections = ", ".join(f"{name} {size:,}" for name, size in d["sections"].items()) or "none"
    lines.append(f"  sections     {sections}")
    lines.append(f"  metadata     {json.dumps(meta, sort_keys=True)}")
    lines.append(f"  checksum     {'ok' if d['crc_ok'] else 'MISMATCH: the file is corrupted'}")
    return "\n".join(lines)


@click.command("info")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file (JSON Lines) on stdout.")
def info_command(inputs: tuple[Path, ...], as_json: bool) -> None:
    """Describe .ncf files: codec, modality, shape, sizes, bpp or kbps, sections, metadata.

    A file whose checksum does not match is still described, and the exit code is 1.

    \b
      codec info photo.ncf
      codec info compressed/ --json
    """
    failures = _Failures()
    jobs = _plan(inputs, None, (NCF_SUFFIX,), NCF_SUFFIX, failures)
    for job in jobs:
        try:
            d = describe_ncf(job.source)
        except (NeuralCodecError, OSError) as e:
            failures.report(job.source, e)
            continue
        click.echo(json.dumps(d, sort_keys=False) if as_json else _info_text(d))
        if not d["crc_ok"]:
            failures.report(job.source, BitstreamError(f"{job.source}: checksum mismatch (corrupted file)"))
    if failures.count:
        raise click.exceptions.Exit(1)
