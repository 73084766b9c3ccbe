"""Registry of codec architectures and of the shipped models in ``neuralcodec/weights``.

A shipped model is two files: ``<name>.safetensors`` (the state dict) and
``<name>.json`` (the model card). The card holds at least::

    {"name": "...", "architecture": "...", "config": {...constructor kwargs...}, ...}

plus the training command, data, steps and measured results. No pickle anywhere.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from safetensors.torch import load_file, save_file

from ..errors import ModelNotFoundError
from .base import Codec

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

_ARCHITECTURES: dict[str, type[Codec]] = {}

C = TypeVar("C", bound=type[Codec])


def register_architecture(cls: C) -> C:
    """Class decorator: make ``cls`` buildable from a model card (key: ``cls.architecture``)."""
    if not cls.architecture:
        raise ValueError(f"{cls.__name__} has no 'architecture' name")
    _ARCHITECTURES[cls.architecture] = cls
    return cls


def architectures() -> list[str]:
    _import_codecs()
    return sorted(_ARCHITECTURES)


def _import_codecs() -> None:
    # Importing the package registers every architecture it defines.
    from .. import codecs  # noqa: F401


def available() -> list[str]:
    """Names of shipped models (a model card and its weights both present)."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(
        p.stem for p in WEIGHTS_DIR.glob("*.json") if p.with_suffix(".safetensors").is_file()
    )


def read_card(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """The JSON model card of a shipped model name, or of a ``.json``/``.safetensors`` path."""
    path = Path(name_or_path)
    if path.suffix in (".json", ".safetensors") and path.exists():
        card_path = path.with_suffix(".json")
    else:
        card_path = WEIGHTS_DIR / f"{name_or_path}.json"
    if not card_path.is_file():
        names = ", ".join(available()) or "none shipped yet"
        raise ModelNotFoundError(f"unknown model {str(name_or_path)!r}; available: {names}")
    with open(card_path, encoding="utf-8") as f:
        return json.load(f)


def build(architecture: str, config: dict[str, Any]) -> Codec:
    """A freshly initialised codec of a registered architecture."""
    _import_codecs()
    if architecture not in _ARCHITECTURES:
        raise ModelNotFoundError(
            f"unknown architecture {architecture!r}; known: {', '.join(sorted(_ARCHITECTURES))}"
        )
    return _ARCHITECTURES[architecture](**config)


def load(name: str | os.PathLike, device: str | torch.device | None = None) -> Codec:
    """Build a shipped model (by name) or a saved one (by path) with its weights, in eval mode."""
    card = read_card(name)
    path = Path(name)
    weights = (
        path.with_suffix(".safetensors")
        if path.suffix in (".json", ".safetensors") and path.exists()
        else WEIGHTS_DIR / f"{name}.safetensors"
    )
    if not weights.is_file():
        raise ModelNotFoundError(f"model card found but weights missing: {weights}")
    model = build(card["architecture"], card.get("config", {}))
    state = load_file(str(weights), device="cpu")
    model.load_state_dict(state, strict=True)
    model.name = card.get("name", Path(name).stem)
    model.eval()
    if device is not None:
        model.to(device)
    return model


def save(model: Codec, path: str | os.PathLike, card: dict[str, Any] | None = None) -> Path:
    """Write ``<path>.safetensors`` and ``<path>.json`` (atomically) for ``model``."""
    path = Path(path).with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    full_card = {
        "name": path.name,
        "architecture": model.architecture,
        "config": model.config,
        "weights_hash": model.weights_hash(),
        **(card or {}),
    }
    for suffix, writer in (
        (".safetensors", lambda p: save_file(state, p)),
        (".json", lambda p: Path(p).write_text(json.dumps(full_card, indent=2) + "\n")),
    ):
        final = path.with_suffix(suffix)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
        os.close(fd)
        try:
            writer(tmp)
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path
