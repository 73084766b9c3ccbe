"""Compressed-domain learning on spoken digits: a classifier on WaLLoC-audio latents vs on waveforms.

What it does (CPU unless --device cuda):

1. Renders the spoken-digit set with espeak-ng
   (:func:`neuralcodec.datasets.spoken_digits.make_spoken_digits`: ten words, about a hundred
   voice variants x eight accents, random pitch/speed/amplitude, 1 s clips, mono 16-bit WAV at
   22,050 Hz), split by voice variant so the test voices are unseen. Skips with a message when
   espeak-ng is missing. Copies the WAVs to FLAC for a size comparison.
2. Packs both splits with :func:`neuralcodec.datasets.pack` and ``walloc-audio`` (which codes
   at 44.1 kHz: the 22.05 kHz clips are resampled by the codec; mono is coded as a pair of
   identical channels): 108 latent channels x 347 frames per clip.
3. Loader: one pass over the training shards with
   :class:`~neuralcodec.datasets.LatentDataset` (entropy decoding only, no synthesis) vs
   reading the WAV and the FLAC files with soundfile through a ``DataLoader``: items/s and
   time to first batch.
4. Training with the same budget (epochs, batch, AdamW, learning rate, seed), data held in
   memory: one 1D CNN trunk (four stride-2 convs, mean+max pooling, a linear layer) behind a
   latent stem (one conv, 108 -> 64 channels at 344.5 frames/s) or a waveform stem (two strided
   convs, 1 -> 32 -> 64 channels, 22,050 -> 344.5 frames/s), and, as a stronger classical peer,
   a log-mel stem (64 mel bands at 344.5 frames/s, torchaudio). The latents are given as they
   are (``latents``) and as ``log(1 + |latent|)`` (``latents_logabs``, a magnitude envelope,
   as log-mel is for the waveform); every input is standardized per channel with training-set
   statistics. Reports test accuracy on the unseen voices and training throughput (samples/s).
   Packing, synthesis and FLAC copies already in ``--workdir`` are reused (rates are then
   reported for the part done in this run only).

    nice -n 10 python benchmarks/bench_compressed_learning_audio.py --train-per-digit 120 --test-per-digit 40 --epochs 15

The last line is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from _common import LabeledFiles, folder_bytes, load_codec_or_skip, time_files, time_latents, train_and_test  # benchmarks/_common.py


def media_files(folder: Path, suffix: str) -> tuple[list[Path], np.ndarray]:
    """Files of a class-folder split in the order pack() numbers them, and their labels."""
    from neuralcodec.datasets.shards import list_media_folder

    files, _ = list_media_folder(folder, labels_from_dirs=True)
    paths = [folder / Path(rel).with_suffix(suffix) for rel, _ in files]
    return paths, np.array([label for _, label in files], dtype=np.int64)


def to_flac(wavs: list[Path], src_root: Path, dst_root: Path) -> list[Path]:
    from neuralcodec.datasets.media import read_media, write_audio

    out = []
    for p in wavs:
        m = read_media(p)
        q = dst_root / p.relative_to(src_root).with_suffix(".flac")
        q.parent.mkdir(parents=True, exist_ok=True)
        write_audio(q, m.data, m.metadata["sample_rate"], subtype="PCM_16")
        out.append(q)
    return out


class SoundFiles(LabeledFiles):
    """Decodes audio files with soundfile to ``(1, T)`` float tensors, as a waveform pipeline would."""

    def load(self, path: Path) -> torch.Tensor:
        import soundfile as sf

        a, _ = sf.read(str(path), dtype="float32", always_2d=True)
        return torch.from_numpy(np.ascontiguousarray(a.T[:1]))


class Classifier(nn.Module):
    """A stem to 64 channels at ~344.5 frames/s, then the shared trunk."""

    def __init__(self, stem: nn.Module, classes: int = 10) -> None:
        super().__init__()
        self.stem = stem
        layers: list[nn.Module] = []
        for _ in range(4):  # 347 -> 22 frames; receptive field ~61 input frames (~180 ms)
            layers += [nn.GELU(), nn.Conv1d(64, 64, 5, stride=2, padding=2)]
        self.trunk = nn.Sequential(*layers, nn.GELU())
        self.head = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(self.stem(x))
        return self.head(torch.cat([h.mean(-1), h.amax(-1)], 1))


def latent_classifier(channels: int) -> Classifier:
    return Classifier(nn.Conv1d(channels, 64, 3, padding=1))


def waveform_classifier() -> Classifier:
    # 22,050 Hz / 64 = 344.5 frames/s, the latent rate (44.1 kHz / 2**7).
    return Classifier(nn.Sequential(nn.Conv1d(1, 32, 16, stride=8, padding=4), nn.GELU(), nn.Conv1d(32, 64, 8, stride=8)))


def logmel_classifier(bands: int) -> Classifier:
    return Classifier(nn.Conv1d(bands, 64, 3, padding=1))


def logmel(x: torch.Tensor, sample_rate: int, bands: int = 64) -> torch.Tensor:
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=512, hop_length=64, n_mels=bands)
    return torch.log(mel(x[:, 0]) + 1e-6)


def logabs(q: torch.Tensor) -> torch.Tensor:
    """``log(1 + |q|)``: the latents' magnitude envelope (their signs carry mostly waveform phase)."""
    return torch.log1p(q.abs())


def standardize(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = train.mean((0, 2), keepdim=True)
    std = train.std((0, 2), keepdim=True).clamp_min(1e-3)
    return (train - mean) / std, (test - mean) / std


def unit_rms(x: torch.Tensor) -> torch.Tensor:
    """Every clip at RMS 1 (the codec codes every chunk at a fixed RMS too)."""
    return x / x.pow(2).mean((1, 2), keepdim=True).sqrt().clamp_min(1e-6)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="walloc-audio", help="codec name or saved model path")
    ap.add_argument("--train-per-digit", type=int, default=120)
    ap.add_argument("--test-per-digit", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0, help="data set seed (voices, split, prosody)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--loader-batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="where LatentDataset decodes (training runs on the CPU)")
    ap.add_argument("--workdir", default=None, help="keep clips and shards here (default: a temporary folder)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from neuralcodec.datasets.spoken_digits import espeak_available, espeak_version, make_spoken_digits

    if not espeak_available():
        print("SKIP: espeak-ng not found (apt-get install -y espeak-ng); it renders the spoken digits")
        print(json.dumps({"skipped": "espeak-ng not installed"}))
        return 0
    from neuralcodec.datasets import pack
    codec = load_codec_or_skip(args.model, args.device)
    if codec is None:
        return 0

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_cdl_audio_"))
    try:
        reused = (work / "digits" / "manifest.json").is_file()
        t0 = time.perf_counter()
        manifest = make_spoken_digits(work / "digits", args.train_per_digit, args.test_per_digit, seed=args.seed,
                                      progress=False)
        synth_seconds = None if reused else time.perf_counter() - t0
        rate = manifest["settings"]["sample_rate"]
        wav_tr, ytr = media_files(work / "digits" / "train", ".wav")
        wav_te, yte = media_files(work / "digits" / "test", ".wav")
        print(f"spoken digits ({espeak_version()}): {len(wav_tr)} train clips ({len(manifest['train_variants'])} "
              f"variants), {len(wav_te)} test clips ({len(manifest['test_variants'])} unseen variants), "
              f"{manifest['settings']['duration']} s at {rate} Hz; "
              + ("reused from --workdir" if synth_seconds is None else f"rendered in {synth_seconds:.1f} s"))
        flac_tr = to_flac(wav_tr, work / "digits" / "train", work / "flac" / "train")

        from neuralcodec.datasets import read_index
        from neuralcodec.errors import BitstreamError

        try:  # items packed by an earlier, interrupted run in --workdir are not timed again
            before = read_index(work / "shards" / "train")["items"]
        except BitstreamError:
            before = 0
        t0 = time.perf_counter()
        pack(work / "digits" / "train", work / "shards" / "train", model=codec, shard_size=500, labels_from_dirs=True,
             progress=False)
        pack_seconds = time.perf_counter() - t0
        packed_now = len(wav_tr) - before
        pack_rate = packed_now / pack_seconds if packed_now else None
        pack(work / "digits" / "test", work / "shards" / "test", model=codec, shard_size=500, labels_from_dirs=True,
             progress=False)
        from neuralcodec.datasets import LatentDataset

        sizes = {
            "shards_train": folder_bytes(work / "shards" / "train"),
            "ncf_payload_train": int(LatentDataset(work / "shards" / "train", model=codec)._size.sum()),
            "wav_train": folder_bytes(work / "digits" / "train", ".wav"),
            "flac_train": folder_bytes(work / "flac" / "train", ".flac"),
        }
        seconds_of_audio = len(wav_tr) * manifest["settings"]["duration"]
        print(f"pack ({codec.name}): " + (f"{pack_rate:.2f} clips/s ({packed_now} clips packed in this run)"
                                           if pack_rate else "reused from --workdir") + "; "
              f".ncf payload {8 * sizes['ncf_payload_train'] / seconds_of_audio / 1000:.1f} kbps")
        for k, v in sizes.items():
            print(f"bytes on disk {k:>18}: {v:>11,d}  ({v / len(wav_tr):.0f} B/clip)")

        # -- loader throughput ----------------------------------------------------------------
        lat_tr, lab_tr, lat_rate, lat_first = time_latents(work / "shards" / "train", codec, args.loader_batch, args.device)
        wave_tr, wave_lab_tr, wav_rate, wav_first = time_files(SoundFiles(wav_tr, ytr), args.loader_batch)
        _, _, flac_rate, flac_first = time_files(SoundFiles(flac_tr, ytr), args.loader_batch)
        lat_te, lab_te, _, _ = time_latents(work / "shards" / "test", codec, args.loader_batch, args.device)
        wave_te, wave_lab_te, _, _ = time_files(SoundFiles(wav_te, yte), args.loader_batch)
        # The shards hold the files in pack order, which media_files() reproduces.
        assert torch.equal(lab_tr, torch.from_numpy(ytr)) and torch.equal(wave_lab_tr, lab_tr)
        assert torch.equal(lab_te, torch.from_numpy(yte)) and torch.equal(wave_lab_te, lab_te)
        print(f"loader: latents from shards {lat_rate:.1f} clips/s (first batch {lat_first:.2f} s); "
              f"WAV {wav_rate:.0f}/s (first batch {wav_first:.3f} s); FLAC {flac_rate:.0f}/s (first batch "
              f"{flac_first:.3f} s); latents/WAV = {lat_rate / wav_rate:.3f}x")

        # -- training with the same budget ------------------------------------------------------
        log_tr, log_te = standardize(logabs(lat_tr.float()), logabs(lat_te.float()))
        lat_tr, lat_te = standardize(lat_tr.float(), lat_te.float())
        wave_tr, wave_te = unit_rms(wave_tr), unit_rms(wave_te)
        mel_tr, mel_te = standardize(logmel(wave_tr, rate), logmel(wave_te, rate))
        results = {}
        n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        for name, make, xtr, xte in (
            ("latents", lambda: latent_classifier(lat_tr.shape[1]), lat_tr, lat_te),
            ("latents_logabs", lambda: latent_classifier(lat_tr.shape[1]), log_tr, log_te),
            ("waveform", waveform_classifier, wave_tr, wave_te),
            ("logmel", lambda: logmel_classifier(mel_tr.shape[1]), mel_tr, mel_te),
        ):
            torch.manual_seed(0)
            model = make()
            acc, sps = train_and_test(model, xtr, lab_tr, xte, lab_te, args.epochs, args.batch, args.lr, 0,
                                      weight_decay=1e-2, one_cycle=True, eval_batch=256)
            results[name] = {"accuracy": acc, "train_samples_per_s": sps, "params": n_params(model),
                             "input_shape": list(xtr.shape[1:])}
            print(f"train {name:>14} ({args.epochs} epochs, batch {args.batch}): test accuracy {acc:.4f} on unseen "
                  f"voices, {sps:.0f} samples/s, {n_params(model):,} params, input {tuple(xtr.shape[1:])}")
        lat, wav = results["latents_logabs"], results["waveform"]
        print(f"latents (log|.|) vs waveform: accuracy {lat['accuracy']:.4f} vs {wav['accuracy']:.4f}; training throughput "
              f"{lat['train_samples_per_s'] / wav['train_samples_per_s']:.2f}x; shards/WAV bytes "
              f"{sizes['shards_train'] / sizes['wav_train']:.3f}, shards/FLAC {sizes['shards_train'] / sizes['flac_train']:.3f}")
        result = {
            "benchmark": "compressed_learning_spoken_digits",
            "model": codec.name, "device": args.device, "threads": args.threads, "espeak_ng": espeak_version(),
            "load_average_1min_at_end": os.getloadavg()[0],  # rates are of a shared machine's CPU
            "train_items": len(wav_tr), "test_items": len(wav_te), "seed": args.seed,
            "train_variants": len(manifest["train_variants"]), "test_variants": len(manifest["test_variants"]),
            "clip_seconds": manifest["settings"]["duration"], "sample_rate": rate,
            "epochs": args.epochs, "batch": args.batch, "lr": args.lr,
            "synthesis_s": synth_seconds, "pack_clips_per_s": pack_rate, "pack_clips_timed": packed_now,
            "ncf_kbps": 8 * sizes["ncf_payload_train"] / seconds_of_audio / 1000,
            "bytes": sizes,
            "loader_per_s": {"latents": lat_rate, "wav": wav_rate, "flac": flac_rate},
            "first_batch_s": {"latents": lat_first, "wav": wav_first, "flac": flac_first},
            "classifiers": results,
            "ratios": {
                "train_latents_logabs_over_waveform": lat["train_samples_per_s"] / wav["train_samples_per_s"],
                "accuracy_latents_logabs_minus_waveform": lat["accuracy"] - wav["accuracy"],
                "loader_latents_over_wav": lat_rate / wav_rate,
                "shards_over_wav_bytes": sizes["shards_train"] / sizes["wav_train"],
                "shards_over_flac_bytes": sizes["shards_train"] / sizes["flac_train"],
            },
        }
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
