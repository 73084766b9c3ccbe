"""A synthetic spoken-digit data set rendered with espeak-ng, split by voice.

The ten words "zero" ... "nine" are spoken by many espeak-ng *voices*: an English accent
(``en-us``, ``en-gb-scotland``, ... eight of them) combined with a voice variant (``m1`` ..
``m8``, ``f1`` .. ``f5``, ``klatt``, ``Andy``, ... about a hundred timbres shipped with
espeak-ng). Every clip also gets its own pitch (``-p``), speed (``-s``, words per minute)
and amplitude (``-a``), drawn from a seeded generator, and is placed at a random offset in
a fixed-length window (silence around it), so all clips have the same length.

The train/test split is by **variant**: a seeded share of the variants (``test_fraction``)
speaks only the test clips, so a classifier is scored on timbres it never heard (with
every accent, in both splits).

Layout written (class folders, the ``labels_from_dirs`` convention of
:func:`neuralcodec.datasets.pack`; folder names sort in digit order)::

    out/
      manifest.json                     seed, settings, espeak-ng version, voices of each
                                        split, and every clip's voice, pitch, speed, ...
      train/0-zero/00000-en-us+m3.wav   16-bit mono PCM, espeak-ng's 22,050 Hz by default
      train/1-one/...
      test/0-zero/...

Same seed and settings, same espeak-ng version: the same files, byte for byte. Needs the
``espeak-ng`` program (``apt-get install espeak-ng``); :func:`espeak_available` tells.

Command line (about 15 ms per clip on one core)::

    nice python -m neuralcodec.datasets.spoken_digits digits/ --train-per-digit 200 --test-per-digit 50
    codec pack digits/train -o digit-shards/train --model walloc-audio --labels-from-dirs

>>> import tempfile
>>> m = make_spoken_digits(tempfile.mkdtemp(), train_per_digit=1, test_per_digit=1, progress=False)
>>> len(m["clips"]), sorted({c["split"] for c in m["clips"]})
(20, ['test', 'train'])
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import MediaError

__all__ = [
    "DIGITS",
    "ACCENTS",
    "VARIANTS",
    "espeak_available",
    "espeak_version",
    "synthesize",
    "split_variants",
    "make_spoken_digits",
]

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# espeak-ng's English accents (language files under lang/gmw).
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# Voice variants shipped with espeak-ng 1.51 (voices/!v), in a fixed order so a seed means the
# same split everywhere. Left out: "fast" (a speed, not a timbre), "whisper"/"whisperf"
# (unvoiced: a different task) and "Mr serious" (a space in its name).
VARIANTS = (
    "Alex", "Alicia", "Andrea", "Andy", "Annie", "AnxiousAndy", "Demonic", "Denis", "Diogo", "Gene", "Gene2",
    "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Nguyen", "RicishayMax",
    "RicishayMax2", "RicishayMax3", "Storm", "Tweaky", "UniRobot", "adam", "anika", "anikaRobot", "announcer",
    "antonio", "aunty", "belinda", "benjamin", "boris", "caleb", "croak", "david", "ed", "edward", "edward2",
    "f1", "f2", "f3", "f4", "f5", "grandma", "grandpa", "gustave", "iven", "iven2", "iven3", "iven4", "john",
    "kaukovalta", "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "linda", "m1", "m2", "m3", "m4", "m5",
    "m6", "m7", "m8", "marcelo", "max", "michel", "miguel", "norbert", "pablo", "paul", "pedro", "quincy", "rob",
    "robert", "robosoft", "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6", "robosoft7",
    "robosoft8", "sandro", "shelby", "steph", "steph2", "steph3", "travis", "victor", "zac",
)  # fmt: skip
ESPEAK_RATE = 22050  # espeak-ng's output sample rate
PITCH_RANGE = (20, 80)  # espeak-ng -p (0..99, default 50)
SPEED_RANGE = (130, 220)  # -s, words per minute (default 175)
AMPLITUDE_RANGE = (20, 90)  # -a (default 100); louder voices clip (iven at 150 does)
_MARGIN_S = 0.02  # silence kept around the word when placing it in the window
_FORMAT = "neuralcodec-spoken-digits"


def _espeak() -> str | None:
    return shutil.which("espeak-ng")


def espeak_available() -> bool:
    """Whether the ``espeak-ng`` program is on the PATH.

    >>> isinstance(espeak_available(), bool)
    True
    """
    return _espeak() is not None


def espeak_version() -> str:
    """``espeak-ng --version``'s first line (stored in the manifest: other versions sound different).

    >>> espeak_version().startswith("eSpeak NG") if espeak_available() else True
    True
    """
    exe = _require_espeak()
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "unknown"


def _require_espeak() -> str:
    exe = _espeak()
    if exe is None:
        raise MediaError("espeak-ng is not installed (apt-get install espeak-ng); it renders the spoken digits")
    return exe


def installed_variants() -> set[str]:
    """Variant names this espeak-ng knows (from ``espeak-ng --voices=variant``)."""
    exe = _require_espeak()
    out = subprocess.run([exe, "--voices=variant"], capture_output=True, text=True, check=False).stdout
    names = set()
    for line in out.splitlines()[1:]:
        parts = line.split()
        # "Pty Language Age/Gender VoiceName File ..." with File like "!v/m1"
        files = [p for p in parts if p.startswith("!v/")]
        if files:
            names.add(files[0][3:])
    return names


def synthesize(word: str, voice: str, pitch: int = 50, speed: int = 175, amplitude: int = 100) -> torch.Tensor:
    """Render ``word`` with espeak-ng: a float32 ``(1, T)`` tensor at 22,050 Hz.

    ``voice`` is an espeak-ng voice such as ``"en-us+m3"``; ``pitch`` 0..99, ``speed`` in
    words per minute (80..450), ``amplitude`` 0..200.

    >>> synthesize("seven", "en-us+f2", pitch=60).shape[0] if espeak_available() else 1
    1
    """
    import soundfile as sf

    exe = _require_espeak()
    if not (0 <= pitch <= 99 and 80 <= speed <= 450 and 0 <= amplitude <= 200):
        raise ValueError(f"pitch {pitch}, speed {speed} or amplitude {amplitude} out of espeak-ng's range")
    with tempfile.TemporaryDirectory(prefix="espeak-") as tmp:
        wav = Path(tmp) / "word.wav"
        cmd = [exe, "-v", voice, "-p", str(int(pitch)), "-s", str(int(speed)), "-a", str(int(amplitude)), "-w", str(wav),
               "--", word]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
        if done.returncode != 0 or not wav.is_file():
            raise MediaError(f"espeak-ng failed for {word!r} with voice {voice!r}: {done.stderr.strip()[:200]}")
        a, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    if rate != ESPEAK_RATE:
        raise MediaError(f"espeak-ng wrote {rate} Hz, expected {ESPEAK_RATE} Hz")
    if a.shape[0] == 0 or not np.any(a):
        raise MediaError(f"espeak-ng rendered silence for {word!r} with voice {voice!r}")
    return torch.from_numpy(np.ascontiguousarray(a[:, :1].T))


def split_variants(variants: Sequence[str], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A seeded split of voice variants: ``(train variants, test variants)``, disjoint.

    >>> tr, te = split_variants(["a", "b", "c", "d", "e"], 0.4, seed=0)
    >>> len(tr), len(te), sorted(tr + te)
    (3, 2, ['a', 'b', 'c', 'd', 'e'])
    """
    if not 0 < test_fraction < 1:
        raise ValueError("test_fraction must be in (0, 1)")
    order = np.random.default_rng([seed, 1]).permutation(len(variants))
    n_test = min(max(1, round(test_fraction * len(variants))), len(variants) - 1)
    test = sorted(variants[i] for i in order[:n_test])
    train = sorted(variants[i] for i in order[n_test:])
    return train, test


def _active(x: torch.Tensor) -> tuple[int, int]:
    """First and one-past-last sample louder than 2% of the peak."""
    a = x.abs().amax(0)
    loud = torch.nonzero(a > 0.02 * float(a.max())).flatten()
    return int(loud[0]), int(loud[-1]) + 1


def _place(word: torch.Tensor, length: int, margin: int, rng: np.random.Generator) -> tuple[torch.Tensor, int] | None:
    """The trimmed word at a random offset in a ``length``-sample window (None if it is too long)."""
    a, b = _active(word)
    a, b = max(0, a - margin), min(word.shape[1], b + margin)
    piece = word[:, a:b]
    if piece.shape[1] > length:
        return None
    offset = int(rng.integers(0, length - piece.shape[1] + 1))
    out = torch.zeros((word.shape[0], length))
    out[:, offset:offset + piece.shape[1]] = piece
    return out, offset


def make_spoken_digits(
    out_dir: str | os.PathLike,
    train_per_digit: int = 200,
    test_per_digit: int = 50,
    *,
    seed: int = 0,
    duration: float = 1.0,
    sample_rate: int = ESPEAK_RATE,
    test_fraction: float = 0.2,
    accents: Sequence[str] = ACCENTS,
    variants: Sequence[str] = VARIANTS,
    fmt: str = "wav",
    progress: bool | None = None,
) -> dict[str, Any]:
    """Render the spoken-digit data set into ``out_dir`` (see the module doc); returns the manifest.

    Args:
        out_dir: output folder; gets ``manifest.json``, ``train/`` and ``test/``.
        train_per_digit, test_per_digit: clips of every digit in each split.
        seed: everything random (split, voice, pitch, speed, amplitude, offset) follows it.
        duration: seconds per clip; every word is trimmed and placed at a random offset in it
            (a word too long at its speed is re-rendered 15% faster until it fits).
        sample_rate: rate of the written files; other than 22,050 Hz the clips are resampled
            (torchaudio). The ``walloc-audio`` codec resamples to 44.1 kHz by itself.
        test_fraction: share of the voice variants that speak only the test clips.
        accents, variants: the espeak-ng accents and variants to combine.
        fmt: ``"wav"`` (16-bit PCM) or ``"flac"``.
        progress: show a progress bar (default: when stderr is a terminal).

    A finished folder with the same settings is returned as it is (nothing re-rendered).

    >>> import tempfile
    >>> m = make_spoken_digits(tempfile.mkdtemp(), 1, 1, variants=["m1", "f1", "klatt"], progress=False)
    >>> m["train_variants"], m["test_variants"]
    (['f1', 'm1'], ['klatt'])
    """
    from tqdm import tqdm

    from .media import write_audio

    _require_espeak()
    if train_per_digit < 0 or test_per_digit < 0 or train_per_digit + test_per_digit == 0:
        raise ValueError("need a positive number of clips per digit")
    if fmt not in ("wav", "flac"):
        raise ValueError("fmt must be 'wav' or 'flac'")
    if not 0.3 <= duration <= 10:
        raise ValueError("duration must be between 0.3 and 10 seconds")
    missing = sorted(set(variants) - installed_variants())
    if missing:
        raise MediaError(f"this espeak-ng ({espeak_version()}) lacks the voice variants {missing}")
    out = Path(out_dir)
    settings = {
        "train_per_digit": train_per_digit, "test_per_digit": test_per_digit, "seed": seed, "duration": duration,
        "sample_rate": sample_rate, "test_fraction": test_fraction, "accents": list(accents),
        "variants": list(variants), "format": fmt, "pitch_range": list(PITCH_RANGE), "speed_range": list(SPEED_RANGE),
        "amplitude_range": list(AMPLITUDE_RANGE), "espeak_ng": espeak_version(),
    }
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text(encoding="utf-8"))
        if old.get("settings") == settings:
            return old
    train_variants, test_variants = split_variants(list(variants), test_fraction, seed)
    rng = np.random.default_rng(seed)
    length = round(duration * ESPEAK_RATE)
    margin = round(_MARGIN_S * ESPEAK_RATE)
    clips: list[dict[str, Any]] = []
    total = 10 * (train_per_digit + test_per_digit)
    disable = (not sys.stderr.isatty()) if progress is None else not progress
    with tqdm(total=total, desc="espeak-ng digits", unit="clip", disable=disable, file=sys.stderr) as bar:
        for split, per_digit, split_variants_ in (("train", train_per_digit, train_variants),
                                                  ("test", test_per_digit, test_variants)):
            for digit, word in enumerate(DIGITS):
                folder = out / split / f"{digit}-{word}"
                folder.mkdir(parents=True, exist_ok=True)
                for k in range(per_digit):
                    accent = str(accents[int(rng.integers(len(accents)))])
                    variant = str(split_variants_[int(rng.integers(len(split_variants_)))])
                    pitch = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
                    speed = int(rng.integers(SPEED_RANGE[0], SPEED_RANGE[1] + 1))
                    amplitude = int(rng.integers(AMPLITUDE_RANGE[0], AMPLITUDE_RANGE[1] + 1))
                    voice = f"{accent}+{variant}"
                    placed = None
                    for _ in range(12):
                        placed = _place(synthesize(word, voice, pitch, speed, amplitude), length, margin, rng)
                        if placed is not None:
                            break
                        speed = min(450, round(speed * 1.15))
                    if placed is None:
                        raise MediaError(f"{word!r} by {voice} does not fit in {duration} s even at speed {speed}")
                    clip, offset = placed
                    if sample_rate != ESPEAK_RATE:
                        import torchaudio.functional as AF

                        clip = AF.resample(clip, ESPEAK_RATE, sample_rate)
                    rel = f"{split}/{digit}-{word}/{k:05d}-{voice}.{fmt}"
                    write_audio(out / rel, clip, sample_rate)
                    clips.append({"path": rel, "split": split, "label": digit, "word": word, "voice": voice,
                                  "accent": accent, "variant": variant, "pitch": pitch, "speed": speed,
                                  "amplitude": amplitude, "offset_s": round(offset / ESPEAK_RATE, 5)})
                    bar.update(1)
    manifest = {
        "format": _FORMAT,
        "settings": settings,
        "classes": [f"{d}-{w}" for d, w in enumerate(DIGITS)],
        "train_variants": train_variants,
        "test_variants": test_variants,
        "clips": clips,
    }
    text = json.dumps(manifest, indent=1) + "\n"
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".manifest.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, manifest_path)  # written last: a complete manifest means a complete folder
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m neuralcodec.datasets.spoken_digits OUT [options]``."""
    ap = argparse.ArgumentParser(prog="python -m neuralcodec.datasets.spoken_digits",
                                 description="Render spoken digits with espeak-ng, split by voice (see the module doc).")
    ap.add_argument("out", type=Path, help="output folder (train/, test/, manifest.json)")
    ap.add_argument("--train-per-digit", type=int, default=200)
    ap.add_argument("--test-per-digit", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--duration", type=float, default=1.0, help="seconds per clip (words are placed at random in it)")
    ap.add_argument("--sample-rate", type=int, default=ESPEAK_RATE, help="resample the clips to this rate")
    ap.add_argument("--test-fraction", type=float, default=0.2, help="share of the voice variants held out for test")
    ap.add_argument("--format", choices=("wav", "flac"), default="wav")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    m = make_spoken_digits(args.out, args.train_per_digit, args.test_per_digit, seed=args.seed, duration=args.duration,
                           sample_rate=args.sample_rate, test_fraction=args.test_fraction, fmt=args.format,
                           progress=False if args.quiet else None)
    counts = {s: sum(c["split"] == s for c in m["clips"]) for s in ("train", "test")}
    print(f"{args.out}: {counts['train']} train clips ({len(m['train_variants'])} variants), "
          f"{counts['test']} test clips ({len(m['test_variants'])} unseen variants) x {len(m['settings']['accents'])} accents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
