"""Robustness of every decoder path of the shipped models against damaged and tampered files.

Each shipped model codes one tiny input; then a fixed, seeded set of corruptions of its
``.ncf`` bytes goes through every decode path: ``decompress``, ``latents``, ``decompress_stream``
(audio, video), ``tokens`` and ``truncate`` (token codec), and the training loader's batched
``decode_latents`` (alone and between good files) and ``decode_media``.

* **raw** damage (truncation, bit flips, zeroed bytes, appended garbage, empty file): the
  container's CRC32 sees it, so the decoder must raise :class:`neuralcodec.BitstreamError`.
* **sealed** tampering (the same kinds of damage inside one section, or edited header fields,
  with the CRC recomputed, as a deliberate forger would do): the decoder must raise one of
  the documented errors (``BitstreamError``, ``ModelMismatchError``, ``MediaError``) or return
  a finite tensor of the shape the file declares. Any other exception, a hang, or an output of
  another shape is a failure.
* a file of another model, or one renamed to another model: ``ModelMismatchError`` (or a
  ``BitstreamError`` when the forged name matches the decoding model but the content does not).

Every decode runs in a worker thread joined with a generous deadline, so a hang fails its
case instead of freezing the suite (the deadline is a guard, not a timing assertion).
A few representative cases also go through ``codec decode`` (one clear line, exit 1, no output),
and the encoding side gets odd inputs (1x1, gray/RGBA, silence, one sample, one frame: a correct
round trip) and bad media (NaN, empty, wrong layout: a ``ValueError`` that says what is wrong).
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable

import numpy as np
import pytest
import torch

import neuralcodec
from neuralcodec import BitstreamError, MediaError, ModelMismatchError
from neuralcodec.entropy.container import Container

DOCUMENTED = (BitstreamError, ModelMismatchError, MediaError)
HANG_GUARD_S = 120.0  # a decode of these tiny files takes well under a second; this only catches hangs

MODELS = ["walloc-image-16x", "hyperprior-mean-q1", "walloc-audio", "walloc-audio-rvq", "walloc-video"]
MODALITY = {"walloc-image-16x": "image", "hyperprior-mean-q1": "image", "walloc-audio": "audio", "walloc-audio-rvq": "audio",
            "walloc-video": "video"}


def _tiny_input(name: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    if name in ("walloc-image-16x", "hyperprior-mean-q1"):
        # a smooth gradient plus noise: an odd-sized 24x40 image (not a multiple of 16 in both sides)
        ramp = torch.linspace(0, 1, 40).expand(3, 24, 40)
        return (0.6 * ramp + 0.4 * torch.rand(3, 24, 40, generator=g)).clamp(0, 1)
    if name in ("walloc-audio", "walloc-audio-rvq"):
        t = torch.arange(8820) / 44100.0  # 0.2 s of stereo at 44.1 kHz
        tone = 0.2 * torch.sin(2 * torch.pi * 440 * t)
        return torch.stack([tone, 0.5 * tone]) + 0.02 * torch.randn(2, 8820, generator=g)
    if name == "walloc-video":
        return torch.rand(3, 2, 16, 16, generator=g)  # two 16x16 frames
    raise KeyError(name)


class _Coded:
    """A loaded shipped model, its tiny input's file, and the reference outputs' shapes."""

    def __init__(self, name: str) -> None:
        torch.manual_seed(0)
        self.name = name
        self.model = neuralcodec.load(name)
        with torch.inference_mode():
            self.blob: bytes = self.model.compress(_tiny_input(name))
            self.out_shape = tuple(self.model.decompress(self.blob).shape)
        self.container = Container.from_bytes(self.blob)
        assert self.out_shape == self.container.shape
        # what every decode path gives for the intact file: the reference for tampered ones
        self.shapes = {path: tuple(fn(self.blob).shape) for path, fn in _paths(self.model, self.blob).items()}


_CACHE: dict[str, _Coded] = {}


def coded(name: str) -> _Coded:
    if name not in _CACHE:
        _CACHE[name] = _Coded(name)
    return _CACHE[name]


# -- layout of a file -------------------------------------------------------------------------


def _layout(blob: bytes) -> dict[str, Any]:
    """Byte offsets of the header and of each section in a valid ``.ncf`` file."""
    header_len = int.from_bytes(blob[6:10], "little")
    c = Container.from_bytes(blob)
    spans, pos = [], 10 + header_len
    for name, data in c.sections.items():
        spans.append((name, pos, pos + len(data)))
        pos += len(data)
    return {"header": (10, 10 + header_len), "sections": spans, "crc": len(blob) - 4}


def _pick_sections(spans: list[tuple[str, int, int]]) -> dict[str, tuple[str, int, int]]:
    nonempty = [s for s in spans if s[2] > s[1]]
    return {"first": nonempty[0], "middle": nonempty[len(nonempty) // 2], "last": nonempty[-1], "largest": max(nonempty, key=lambda s: s[2] - s[1])}


def _reseal(c: Container, **changes: Any) -> bytes:
    """A valid container (header checks and CRC pass) with some fields replaced."""
    fields = {k: getattr(c, k) for k in ("codec", "weights_hash", "modality", "shape", "metadata", "sections")}
    fields.update(changes)
    return Container(**fields).to_bytes()


# -- the corruptions ----------------------------------------------------------------------------

TRUNCATIONS = ["empty", "magic", "prefix-1", "prefix", "header-mid", "header-end-1", "header-end",
               "first-section+1", "first-section-mid", "middle-section-mid", "last-section-mid",
               "before-crc", "crc-mid", "one-short"]
N_FLIPS = 16
RAW_OTHER = ["flip-magic", "flip-version", "flip-header-len", "flip-header", "flip-crc", "zero-largest-section-raw",
             "zero-header-raw", "append-1", "append-64", "duplicated", "ones"]
N_SEALED_FLIPS = 12
SEALED = ["zero-first", "zero-middle", "zero-last", "zero-largest", "zero-all", "ones-largest",
          "short1-first", "short1-last", "half-largest", "empty-largest", "empty-all", "grow1-last", "grow64-largest",
          "swap-first-last", "reverse-order", "drop-first", "drop-last", "extra-section", "no-sections",
          "shape-first+1", "shape-last+1", "shape-last-1", "shape-last*2", "shape-huge", "shape-drop-dim",
          "shape-add-dim", "shape-empty", "modality", "metadata-empty", "metadata-other-model"]
FOREIGN = ["renamed-codec", "other-weights-hash", "no-weights-hash", "other-model-file", "forged-as-other-model"]


def raw_case(blob: bytes, case: str) -> bytes:
    lay = _layout(blob)
    h0, h1 = lay["header"]
    secs = _pick_sections(lay["sections"])
    n = len(blob)
    cuts = {"empty": 0, "magic": 4, "prefix-1": 9, "prefix": 10, "header-mid": (h0 + h1) // 2,
            "header-end-1": h1 - 1, "header-end": h1, "first-section+1": secs["first"][1] + 1,
            "first-section-mid": (secs["first"][1] + secs["first"][2]) // 2,
            "middle-section-mid": (secs["middle"][1] + secs["middle"][2]) // 2,
            "last-section-mid": (secs["last"][1] + secs["last"][2]) // 2,
            "before-crc": n - 4, "crc-mid": n - 2, "one-short": n - 1}
    if case in cuts:
        return blob[: cuts[case]]
    if case.startswith("flip-") and case[5:].isdigit():
        rng = np.random.default_rng(1000 + int(case[5:]))
        # spread over the file: the k-th flip lands in the k-th sixteenth
        k = int(case[5:])
        lo, hi = k * n // N_FLIPS, max(k * n // N_FLIPS + 1, (k + 1) * n // N_FLIPS)
        pos, bit = int(rng.integers(lo, hi)), int(rng.integers(0, 8))
        b = bytearray(blob)
        b[pos] ^= 1 << bit
        return bytes(b)
    b = bytearray(blob)
    flips = {"flip-magic": 1, "flip-version": 4, "flip-header-len": 7, "flip-header": (h0 + h1) // 2, "flip-crc": n - 3}
    if case in flips:
        b[flips[case]] ^= 0x10
        return bytes(b)
    if case == "zero-largest-section-raw":
        _, a, e = secs["largest"]
        b[a:e] = bytes(e - a)
        return bytes(b)
    if case == "zero-header-raw":
        b[h0:h1] = b" " * (h1 - h0)
        return bytes(b)
    if case == "append-1":
        return blob + b"\x00"
    if case == "append-64":
        return blob + bytes(np.random.default_rng(5).integers(0, 256, 64, dtype=np.uint8))
    if case == "duplicated":
        return blob + blob
    if case == "ones":
        return b"\xff" * n
    raise KeyError(case)


def sealed_case(c: Container, case: str, other: Container) -> bytes:
    sections = dict(c.sections)
    names = [k for k, v in sections.items() if v]
    first, last = names[0], names[-1]
    middle = names[len(names) // 2]
    largest = max(names, key=lambda k: len(sections[k]))
    pick = {"first": first, "last": last, "middle": middle, "largest": largest}
    if case.startswith("sflip-"):
        k = int(case[6:])
        rng = np.random.default_rng(2000 + k)
        # walk the sections round-robin so every section gets flipped
        name = names[k % len(names)]
        data = bytearray(sections[name])
        data[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
        sections[name] = bytes(data)
        return _reseal(c, sections=sections)
    kind, _, which = case.partition("-")
    if kind in ("zero", "ones", "short1", "half", "empty", "grow1", "grow64"):
        targets = names if which == "all" else [pick[which]]
        for name in targets:
            data = sections[name]
            sections[name] = {"zero": bytes(len(data)), "ones": b"\xff" * len(data), "short1": data[:-1],
                              "half": data[: len(data) // 2], "empty": b"", "grow1": data + b"\x00",
                              "grow64": data + bytes(range(64))}[kind]
        return _reseal(c, sections=sections)
    if case == "swap-first-last":
        sections[first], sections[last] = sections[last], sections[first]
        return _reseal(c, sections=sections)
    if case == "reverse-order":
        return _reseal(c, sections=dict(reversed(list(sections.items()))))
    if case == "drop-first":
        del sections[first]
        return _reseal(c, sections=sections)
    if case == "drop-last":
        del sections[last]
        return _reseal(c, sections=sections)
    if case == "extra-section":
        return _reseal(c, sections={**sections, "extra": b"\x01\x02\x03"})
    if case == "no-sections":
        return _reseal(c, sections={})
    shape = list(c.shape)
    if case.startswith("shape-"):
        change = case[6:]
        if change == "first+1":
            shape[0] += 1
        elif change == "last+1":
            shape[-1] += 1
        elif change == "last-1":
            shape[-1] = max(1, shape[-1] - 1) if shape[-1] > 1 else shape[-1] + 2
        elif change == "last*2":
            shape[-1] *= 2
        elif change == "huge":
            shape[-1] = 1 << 30
        elif change == "drop-dim":
            shape = shape[1:]
        elif change == "add-dim":
            shape = [1] + shape
        elif change == "empty":
            shape = []
        return _reseal(c, shape=tuple(shape))
    if case == "modality":
        return _reseal(c, modality="image" if c.modality != "image" else "audio")
    if case == "metadata-empty":
        return _reseal(c, metadata={})
    if case == "metadata-other-model":
        return _reseal(c, metadata=other.metadata)
    raise KeyError(case)


def foreign_case(c: Container, case: str, other: _Coded) -> tuple[bytes, type]:
    """(file, the error it must raise)."""
    if case == "renamed-codec":
        return _reseal(c, codec=c.codec + "-x"), ModelMismatchError
    if case == "other-weights-hash":
        h = c.weights_hash
        return _reseal(c, weights_hash=("f" if h[:1] != "f" else "0") + h[1:]), ModelMismatchError
    if case == "no-weights-hash":
        return _reseal(c, weights_hash=""), ModelMismatchError
    if case == "other-model-file":
        return other.blob, ModelMismatchError
    if case == "forged-as-other-model":
        # this model's file carrying another model's name and weights hash, given to that model:
        # the origin check passes, so the content checks must refuse it
        return _reseal(c, codec=other.container.codec, weights_hash=other.container.weights_hash), BitstreamError
    raise KeyError(case)


# -- running a decode safely --------------------------------------------------------------------


def _guarded(fn: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """Run ``fn`` in a daemon thread; fail (not freeze) if it does not finish."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            with torch.inference_mode():
                box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - classified by the caller
            box["error"] = e

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(HANG_GUARD_S)
    if worker.is_alive():
        pytest.fail(f"decode did not finish within {HANG_GUARD_S:.0f} s (hang)")
    return box.get("value"), box.get("error")


def _paths(model: Any, good: bytes) -> dict[str, Callable[[bytes], Any]]:
    """Every way a file gets decoded: the codec's methods and the training loader's batched decoders."""
    from neuralcodec.datasets.latent import decode_latents, decode_media

    paths = {"decompress": model.decompress, "latents": model.latents}
    if hasattr(model, "decompress_stream"):
        paths["decompress_stream"] = lambda blob: torch.cat(list(model.decompress_stream(blob)), 1)
    # LatentDataset decodes batches: alone, and next to a good file (batched stages share rANS calls)
    paths["decode_latents"] = lambda blob: decode_latents(model, [blob])[0]
    paths["decode_latents_batch"] = lambda blob: decode_latents(model, [good, blob, good])[1]
    paths["decode_media"] = lambda blob: decode_media(model, [blob], decode_latents(model, [blob]))[0]
    if hasattr(model, "tokens"):  # token codecs: the tokens, and the file cut to fewer quantizers
        paths["tokens"] = model.tokens
        paths["truncate_decompress"] = lambda blob: model.decompress(model.truncate(blob, 2))
    return paths


MEDIA_PATHS = ("decompress", "decompress_stream", "decode_media", "truncate_decompress")


def _declared_shape(blob: bytes) -> tuple[int, ...] | None:
    try:
        return Container.from_bytes(blob).shape
    except BitstreamError:
        return None


def _check(entry: _Coded, blob: bytes, must_raise: type | None, unchanged_header: bool = False,
           skip: tuple[str, ...] = ()) -> None:
    """Every decode path raises a documented error (``must_raise`` if given) or returns a sane result."""
    problems = []
    for path, fn in _paths(entry.model, entry.blob).items():
        if path in skip:
            continue
        value, error = _guarded(lambda: fn(blob))
        if error is not None:
            if not isinstance(error, DOCUMENTED):
                problems.append(f"{path}: undocumented {type(error).__name__}: {error}")
            elif must_raise is not None and not isinstance(error, must_raise):
                problems.append(f"{path}: raised {type(error).__name__} ({error}), expected {must_raise.__name__}")
            continue
        if must_raise is not None:
            problems.append(f"{path}: returned a result, expected {must_raise.__name__}")
            continue
        if not isinstance(value, torch.Tensor):
            problems.append(f"{path}: returned {type(value).__name__}")
            continue
        if not bool(torch.isfinite(value.float()).all()):
            problems.append(f"{path}: non-finite values")
        if path not in MEDIA_PATHS:
            if unchanged_header and tuple(value.shape) != entry.shapes[path]:
                problems.append(f"{path}: shape {tuple(value.shape)}, the intact file's is {entry.shapes[path]}")
        elif tuple(value.shape) != _declared_shape(blob):
            problems.append(f"{path}: shape {tuple(value.shape)}, the file declares {_declared_shape(blob)}")
    assert not problems, "; ".join(problems)


def _other(name: str) -> str:
    # another modality's model for foreign files: image <-> audio, video -> image
    return {"walloc-image-16x": "walloc-audio", "hyperprior-mean-q1": "walloc-image-16x", "walloc-audio": "walloc-image-16x",
            "walloc-audio-rvq": "walloc-audio", "walloc-video": "walloc-image-16x"}[name]


# -- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_intact_file_decodes(name):
    entry = coded(name)
    _check(entry, entry.blob, None, unchanged_header=True)


@pytest.mark.parametrize("case", TRUNCATIONS + [f"flip-{k}" for k in range(N_FLIPS)] + RAW_OTHER)
@pytest.mark.parametrize("name", MODELS)
def test_raw_damage_is_a_bitstream_error(name, case):
    entry = coded(name)
    bad = raw_case(entry.blob, case)
    assert bad != entry.blob
    _check(entry, bad, BitstreamError)


@pytest.mark.parametrize("case", [f"sflip-{k}" for k in range(N_SEALED_FLIPS)] + SEALED)
@pytest.mark.parametrize("name", MODELS)
def test_tampered_file_with_valid_crc_is_refused_or_decodes_to_its_shape(name, case):
    entry = coded(name)
    bad = sealed_case(entry.container, case, coded(_other(name)).container)
    assert bad != entry.blob
    header_same = case.startswith("sflip-") or case.split("-")[0] in ("zero", "ones")
    # a file that says it holds another modality is not this codec's file, whatever its sections
    must_raise = BitstreamError if case in ("modality", "metadata-empty", "metadata-other-model") else None
    _check(entry, bad, must_raise, unchanged_header=header_same)


def _second_input(name: str, bigger: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    if name in ("walloc-image-16x", "hyperprior-mean-q1"):
        return torch.rand(3, 40, 72, generator=g) if bigger else torch.rand(3, 24, 40, generator=g)
    if name in ("walloc-audio", "walloc-audio-rvq"):
        return 0.1 * torch.randn(2, 13230 if bigger else 8820, generator=g)
    return torch.rand(3, 3, 24, 24, generator=g) if bigger else torch.rand(3, 2, 16, 16, generator=g)


@pytest.mark.parametrize("variant", ["same-size", "bigger-header", "smaller-header"])
@pytest.mark.parametrize("name", MODELS)
def test_header_of_one_file_with_sections_of_another(name, variant):
    """Sections spliced between two valid files of the same model: refused, or decoded to the header's shape."""
    entry = coded(name)
    with torch.inference_mode():
        other = Container.from_bytes(entry.model.compress(_second_input(name, bigger=variant != "same-size")))
    head, body = (entry.container, other) if variant != "bigger-header" else (other, entry.container)
    if set(head.sections) == set(body.sections):
        spliced = _reseal(head, sections={k: body.sections[k] for k in head.sections})
    else:  # a different section set (more coding stages): keep the header's names, fill from the other file
        values = list(body.sections.values())
        spliced = _reseal(head, sections={k: values[i % len(values)] for i, k in enumerate(head.sections)})
    assert spliced != entry.blob
    _check(entry, spliced, None)


@pytest.mark.parametrize("case", FOREIGN)
@pytest.mark.parametrize("name", MODELS)
def test_file_of_another_model_is_refused(name, case):
    entry = coded(name)
    other = coded(_other(name))
    bad, expected = foreign_case(entry.container, case, other)
    if case == "forged-as-other-model":
        _check(other, bad, expected)  # given to the model it claims to come from
    else:
        _check(entry, bad, expected)


@pytest.mark.parametrize("name", ["walloc-image-16x", "hyperprior-mean-q1", "walloc-video"])
def test_small_file_claiming_a_large_picture(name):
    """A consistent forged header (shape, latent size, section layout all agree) claiming 2048x2048
    pixels over the tiny file's few hundred bytes of streams: refused quickly, nothing huge decoded."""
    entry = coded(name)
    c, model = entry.container, entry.model
    meta = json.loads(json.dumps(c.metadata))
    m = model.multiple
    h = w = 2048
    if name == "walloc-video":
        frames = 2
        meta["walloc_video"]["latent"] = [-(-h // m), -(-w // m)]
        stages = model.intra.num_stages() + (frames - 1) * model.inter.num_stages()
        # every stream 0 bytes long (varint 0), an all-zero digest per GOP
        forged = _reseal(c, shape=(3, frames, h, w), metadata=meta,
                         sections={"index": bytes(stages), "digest": bytes(8), "data": b""})
    else:
        key = "walloc" if name == "walloc-image-16x" else "hyperprior"
        meta[key]["latent"] = [-(-h // m), -(-w // m)] if key == "walloc" else [-(-h // m) * 4, -(-w // m) * 4]
        sections = dict(c.sections)
        if key == "walloc":  # one stream per coding stage of the claimed size, recycled from the real ones
            values = list(c.sections.values())
            sections = {f"g{i}": values[i % len(values)] for i in range(model.entropy.num_stages(meta[key]["latent"]))}
        forged = _reseal(c, shape=(3, h, w), metadata=meta, sections=sections)
    assert len(forged) < 4096
    _check(entry, forged, BitstreamError, skip=("decode_latents_batch",))


def _leaves(value: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaves(v, path + (k,))] + ([path] if path else [])
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaves(v, path + (i,))] + [path]
    return [path]


def _mutations(value: Any) -> list[Any]:
    """Wrong types (null, bool, text, float, list, object) and wrong values of the right type."""
    out: list[Any] = [None, True, "x", 1.5, [], {}]
    if isinstance(value, int) and not isinstance(value, bool):
        out += [0, -1, value + 1, value - 1, value * 2, 2**62]
    elif isinstance(value, str):
        out += [0, "", value[:-1], value[::-1], "RGBA", "L", "1/0"]
    elif isinstance(value, list):
        out += [value[:-1], value + value[-1:], [str(v) for v in value]]
    return [m for m in out if m != value or type(m) is not type(value)]


def _set(meta: Any, path: tuple, new: Any, delete: bool = False) -> Any:
    meta = json.loads(json.dumps(meta))
    holder = meta
    for key in path[:-1]:
        holder = holder[key]
    if delete:
        del holder[path[-1]]
    else:
        holder[path[-1]] = new
    return meta


@pytest.mark.parametrize("name", MODELS)
def test_every_metadata_field_tampered(name):
    """Each metadata leaf (and each dict/list) replaced by wrong values or removed: refused or correct shape."""
    entry = coded(name)
    c = entry.container
    failures = []
    cases = 0
    for path in _leaves(c.metadata):
        holder_is_list = isinstance(_get(c.metadata, path[:-1]), list)
        variants = [(repr(m), _set(c.metadata, path, m)) for m in _mutations(_get(c.metadata, path))]
        if not holder_is_list:
            variants.append(("<deleted>", _set(c.metadata, path, None, delete=True)))
        for label, meta in variants:
            cases += 1
            try:
                # the batch path parses a header exactly as the single-file one does: skipped to save time
                _check(entry, _reseal(c, metadata=meta), None, skip=("decode_latents_batch",))
            except AssertionError as e:
                failures.append(f"metadata{list(path)} = {label}: {e}")
    assert cases >= 10
    assert not failures, f"{len(failures)} of {cases} cases failed:\n" + "\n".join(failures[:20])


def _get(meta: Any, path: tuple) -> Any:
    for key in path:
        meta = meta[key]
    return meta


# -- through the command line ---------------------------------------------------------------------


def _late_video_failure(entry: _Coded) -> bytes:
    """An 18-frame video (two GOPs of the shipped gop=16) whose second GOP's index digest is flipped:
    decoding streams the first 16 frames into the output file before the failure."""
    with torch.inference_mode():
        c = Container.from_bytes(entry.model.compress(torch.rand(3, 18, 16, 16, generator=torch.Generator().manual_seed(1))))
    digest = bytearray(c.sections["digest"])
    digest[-1] ^= 1
    bad = _reseal(c, sections={**c.sections, "digest": bytes(digest)})
    streamed = []
    with pytest.raises(BitstreamError), torch.inference_mode():
        for piece in entry.model.decompress_stream(bad):
            streamed.append(piece.shape[1])
    assert streamed == [16], "the case must fail after a first chunk was decoded, or it tests nothing"
    return bad


CLI_CASES = {
    "truncated": ("walloc-image-16x", lambda e: raw_case(e.blob, "last-section-mid"), ".png", []),
    "bit-flipped": ("walloc-image-16x", lambda e: raw_case(e.blob, "flip-9"), ".png", []),
    "empty": ("walloc-image-16x", lambda e: b"", ".png", []),
    "tampered-image": ("walloc-image-16x", lambda e: sealed_case(e.container, "zero-all", e.container), ".png", []),
    # the audio and video decoders stream into the output file: a failure must still leave nothing
    "tampered-audio": ("walloc-audio", lambda e: sealed_case(e.container, "zero-largest", e.container), ".wav", []),
    "tampered-video": ("walloc-video", lambda e: sealed_case(e.container, "sflip-1", e.container), ".mkv", []),
    "video-fails-after-one-gop": ("walloc-video", _late_video_failure, ".mkv", []),
    "foreign-model": ("walloc-audio", lambda e: e.blob, ".wav", ["--model", "walloc-image-16x"]),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_decode_of_a_damaged_file(tmp_path, capsys, case):
    """``codec decode bad.ncf -o out``: exit 1, one clear line naming the file, no traceback, no output."""
    from neuralcodec.apps.cli import main

    name, make, suffix, extra = CLI_CASES[case]
    src = tmp_path / f"{case}.ncf"
    src.write_bytes(make(coded(name)))
    out = tmp_path / f"{case}{suffix}"
    capsys.readouterr()
    rc, error = _guarded(lambda: main(["decode", str(src), "-o", str(out), "-q", *extra]))
    assert error is None, f"the CLI raised {type(error).__name__}: {error}"
    assert rc == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and src.name in lines[0], captured.err
    assert "Traceback" not in captured.err + captured.out
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name], "a partial or temporary file was left behind"


# -- odd inputs on the encoding side: a correct result or a clear error -----------------------------

IMAGE_EDGES = {"1x1": (3, 1, 1), "1x17": (3, 1, 17), "17x1": (3, 17, 1), "gray-5x7": (1, 5, 7), "rgba-9x9": (4, 9, 9),
               "black": (3, 8, 8), "white": (3, 8, 8)}
AUDIO_EDGES = {"silence": (2, 4410), "one-sample": (2, 1), "one-sample-silent": (2, 1), "mono": (1, 3000),
               "three-channels": (3, 2000), "full-scale": (2, 2000)}
VIDEO_EDGES = {"one-frame": (3, 1, 16, 16), "one-1x1-frame": (3, 1, 1, 1), "odd-3x9x17": (3, 3, 9, 17), "black": (3, 2, 8, 8)}
EDGES = {"walloc-image-16x": IMAGE_EDGES, "hyperprior-mean-q1": IMAGE_EDGES, "walloc-audio": AUDIO_EDGES,
         "walloc-audio-rvq": AUDIO_EDGES, "walloc-video": VIDEO_EDGES}


def _edge_input(case: str, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    if case in ("black", "silence", "one-sample-silent"):
        return torch.zeros(shape)
    if case == "white":
        return torch.ones(shape)
    if case == "full-scale":
        return torch.ones(shape) * torch.tensor([1.0, -1.0])[:, None]
    if len(shape) == 2:  # audio
        return 0.1 * torch.randn(shape, generator=g)
    return torch.rand(shape, generator=g)


@pytest.mark.parametrize("name,case", [(n, c) for n in MODELS for c in EDGES[n]])
def test_odd_inputs_round_trip_to_their_shape(name, case):
    """Tiny, odd-sized, gray/RGBA, silent, one-sample and one-frame inputs code and decode to their own shape."""
    model = coded(name).model
    x = _edge_input(case, EDGES[name][case])
    with torch.inference_mode():
        blob = model.compress(x)
        y = model.decompress(blob)
        latent = model.latents(blob)
    assert y.shape == x.shape and bool(torch.isfinite(y).all())
    assert latent.numel() > 0 and bool(torch.isfinite(latent).all())  # (audio of 3+ channels: one latent per pair)
    if len(x.shape) != 2:
        assert float(y.min()) >= 0 and float(y.max()) <= 1
    if case in ("silence", "one-sample-silent"):
        assert bool((y == 0).all()), "silence must decode to exact silence"


BAD_MEDIA = {
    "image": {"nan": torch.full((3, 4, 4), float("nan")), "two-channels": torch.rand(2, 8, 8),
              "zero-height": torch.rand(3, 0, 5), "flat": torch.rand(8)},
    "audio": {"nan": torch.full((2, 10), float("nan")), "inf": torch.full((2, 10), float("inf")),
              "zero-length": torch.zeros(2, 0), "flat": torch.zeros(10)},
    "video": {"nan": torch.full((3, 2, 8, 8), float("nan")), "zero-frames": torch.rand(3, 0, 8, 8),
              "gray": torch.rand(1, 2, 8, 8), "image": torch.rand(3, 8, 8)},
}
@pytest.mark.parametrize(
    "name,case",
    [(n, c) for n in MODELS for c in BAD_MEDIA[MODALITY[n]]],
)
def test_bad_media_is_a_clear_error(name, case):
    """NaN, empty and wrongly shaped inputs: a ValueError (MediaError is one) that says what is wrong."""
    model = coded(name).model
    assert model.modality == MODALITY[name]
    x = BAD_MEDIA[MODALITY[name]][case]
    with pytest.raises(ValueError) as info:
        with torch.inference_mode():
            model.compress(x)
    if case in ("nan", "inf"):
        assert "nan" in str(info.value).lower() or "finite" in str(info.value).lower(), str(info.value)
