"""Compressed datasets: pack -> read round trip, resume after a crash, the Dask path equal to
the local one, DataLoader workers, damaged shards, and the pack/unpack CLI (tiny data)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from neuralcodec import BitstreamError, NeuralCodecError
from neuralcodec.apps.cli import main
from neuralcodec.codecs.registry import load, save
from neuralcodec.codecs.walloc import WaLLoC
from neuralcodec.datasets import LatentDataset, decode_latents, pack, read_index, read_shard, unpack
from neuralcodec.datasets import shards as shards_module
from neuralcodec.datasets.media import read_image, write_image

CLASSES = ("boot", "coat", "shirt")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny tensors: one thread avoids oversubscription on a shared 2-core machine (20x faster here).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    codec = WaLLoC(latent_channels=4, levels=2, decoder_channels=8, decoder_blocks=1, context_levels=2, context_hidden=8)
    return str(save(codec.eval(), tmp_path_factory.mktemp("model") / "tiny")) + ".json"


@pytest.fixture(scope="module")
def codec(model_path: str) -> WaLLoC:
    return load(model_path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Nine small PNGs in three class folders; two of another size (batching by shape)."""
    root = tmp_path_factory.mktemp("images")
    g = torch.Generator().manual_seed(1)
    for i in range(9):
        cls = CLASSES[i % 3]
        size = (16, 24) if i in (4, 5) else (16, 16)
        (root / cls).mkdir(exist_ok=True)
        write_image(root / cls / f"img{i}.png", torch.rand(3, *size, generator=g))
    return root


def _shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("shard-*.tar"))}


def test_pack_read_round_trip(folder: Path, codec: WaLLoC, tmp_path: Path) -> None:
    index = pack(folder, tmp_path, model=codec, shard_size=4, labels_from_dirs=True, progress=False)
    assert index["complete"] and index["items"] == 9
    assert [s["items"] for s in index["shards"]] == [4, 4, 1]
    assert index["classes"] == list(CLASSES)
    # A plain tar file with WebDataset-style members.
    with tarfile.open(tmp_path / "shard-00000.tar") as tf:
        names = tf.getnames()
    assert names[:3] == ["000000000.cls", "000000000.json", "000000000.ncf"]
    records = [r for s in index["shards"] for r in read_shard(tmp_path, s)]
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    assert [r.metadata["path"] for r in records] == files
    assert [r.label for r in records] == [CLASSES.index(f.split("/")[0]) for f in files]
    # Each stored bitstream decodes to (nearly) its source image, and latents match codec.latents.
    for r, f in zip(records, files):
        image = read_image(folder / f)
        decoded = codec.decompress(r.blob)
        assert decoded.shape == image.shape
    ds = LatentDataset(tmp_path, model=codec, batch_size=4, return_media=True)
    assert ds.num_items == 9 and len(ds) == 3
    seen = 0
    for batch in ds:
        for j, i in enumerate(batch["index"].tolist()):
            expected = codec.latents(records[i].blob)
            latent = batch["latent"][j]
            assert torch.equal(latent, expected)
            assert batch["label"][j].item() == records[i].label
            assert torch.allclose(batch["media"][j], codec.decompress(records[i].blob), atol=1e-5)
            seen += 1
    assert seen == 9


def test_decode_latents_batched_equals_single(codec: WaLLoC) -> None:
    blobs = [codec.compress(x) for x in torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(2))]
    blobs.append(codec.compress(torch.rand(3, 24, 16)))  # another latent size in the same call
    for latent, blob in zip(decode_latents(codec, blobs), blobs):
        assert torch.equal(latent, codec.latents(blob))


def test_iterable_source_labels_and_metadata(codec: WaLLoC, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(3)
    items = [
        (torch.rand(3, 16, 16, generator=g), 7),
        {"media": (torch.rand(1, 16, 16, generator=g) * 255).to(torch.uint8), "label": 2, "metadata": {"id": "x"}},
        (torch.rand(3, 16, 16, generator=g), {"label": 1, "note": "hi"}),
        torch.rand(3, 16, 16, generator=g),
    ]
    index = pack(iter(items), tmp_path, model=codec, shard_size=3, progress=False)  # a one-pass iterable
    assert index["items"] == 4 and index["complete"]
    records = read_shard(tmp_path, index["shards"][0]) + read_shard(tmp_path, index["shards"][1])
    assert [r.label for r in records] == [7, 2, 1, None]
    assert records[1].metadata == {"id": "x"} and records[2].metadata == {"note": "hi"}
    assert [b["label"].tolist() for b in LatentDataset(tmp_path, model=codec, batch_size=4)] == [[7, 2, 1, -1]]
    with pytest.raises(ValueError, match="label"):
        pack([(torch.rand(3, 16, 16), 1.5)], tmp_path / "bad", model=codec, progress=False)


def test_resume_after_crash_equals_uninterrupted_run(folder: Path, model_path: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    reference = tmp_path / "reference"
    pack(folder, reference, model=model_path, shard_size=2, labels_from_dirs=True, progress=False)

    out = tmp_path / "crashed"
    real_add = tarfile.TarFile.addfile
    calls = {"n": 0}

    def crash_while_writing_shard_2(self, tarinfo, fileobj=None):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 14:  # 6 members per shard of 2 labelled items: inside the third shard
            raise KeyboardInterrupt("simulated crash")
        return real_add(self, tarinfo, fileobj)

    monkeypatch.setattr(tarfile.TarFile, "addfile", crash_while_writing_shard_2)
    with pytest.raises(KeyboardInterrupt):
        pack(folder, out, model=model_path, shard_size=2, labels_from_dirs=True, progress=False)
    monkeypatch.setattr(tarfile.TarFile, "addfile", real_add)
    index = read_index(out)
    assert [s["name"] for s in index["shards"]] == ["shard-00000.tar", "shard-00001.tar"]
    assert not index["complete"] and not (out / "shard-00002.tar").exists()
    assert not list(out.glob("*.tmp"))
    # A hard kill leaves a temporary shard and maybe a renamed shard not yet in the index:
    # readers see neither, and resuming rewrites them.
    (out / "shard-00002.tar.tmp").write_bytes(b"half a shard")
    (out / "shard-00003.tar").write_bytes(b"not in the index")
    assert LatentDataset(out, model=model_path).num_items == 4

    with pytest.raises(NeuralCodecError, match="already holds"):
        pack(folder, out, model=model_path, shard_size=2, labels_from_dirs=True, resume=False, progress=False)
    with pytest.raises(NeuralCodecError, match="shard_size"):
        pack(folder, out, model=model_path, shard_size=3, labels_from_dirs=True, progress=False)

    resumed = pack(folder, out, model=model_path, shard_size=2, labels_from_dirs=True, progress=False)
    assert resumed == read_index(reference)
    assert _shard_bytes(out) == _shard_bytes(reference)
    assert not list(out.glob("*.tmp"))


def test_dask_path_equals_local_path(folder: Path, model_path: str, tmp_path: Path) -> None:
    pytest.importorskip("dask")
    from neuralcodec.datasets import pack_distributed

    local = pack(folder, tmp_path / "local", model=model_path, shard_size=2, labels_from_dirs=True, batch_size=3,
                 progress=False)
    # Two local worker processes; small waves so the index is written between waves.
    dist = pack_distributed(folder, tmp_path / "dask", model_path, shard_size=2, labels_from_dirs=True, batch_size=3,
                            num_workers=2, scheduler="processes", wave=2, progress=False)
    assert dist == local
    assert _shard_bytes(tmp_path / "dask") == _shard_bytes(tmp_path / "local")
    assert (tmp_path / "dask" / "index.json").read_bytes() == (tmp_path / "local" / "index.json").read_bytes()


def test_dataloader_with_two_workers_sees_every_item_once(codec: WaLLoC, model_path: str, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(4)
    pack([(torch.rand(3, 16, 16, generator=g), i) for i in range(11)], tmp_path, model=codec, shard_size=4,
         progress=False)
    ds = LatentDataset(tmp_path, model=model_path, batch_size=3, shuffle=True, seed=5)
    for epoch in range(2):
        ds.set_epoch(epoch)
        loader = DataLoader(ds, batch_size=None, num_workers=2)
        batches = list(loader)
        indexes = [i for b in batches for i in b["index"].tolist()]
        assert sorted(indexes) == list(range(11))  # each item exactly once across both workers
        assert all(b["label"].tolist() == b["index"].tolist() for b in batches)  # labels travel with items
        assert len(batches) == len(ds) == 4
        if epoch == 0:
            first_order = indexes
    assert indexes != first_order  # a new order per epoch
    # Data-parallel ranks split the items without overlap.
    ranks = [LatentDataset(tmp_path, model=codec, batch_size=2, rank=r, world_size=2) for r in range(2)]
    shares = [{i for b in r for i in b["index"].tolist()} for r in ranks]
    assert not shares[0] & shares[1] and len(shares[0]) == len(shares[1]) == 5


def test_damaged_shards_are_clear_errors(folder: Path, codec: WaLLoC, tmp_path: Path) -> None:
    index = pack(folder, tmp_path, model=codec, shard_size=4, labels_from_dirs=True, progress=False)
    shard = tmp_path / index["shards"][0]["name"]
    good = shard.read_bytes()

    # A flipped byte inside an .ncf member: the container's CRC catches it when decoded.
    with tarfile.open(shard) as tf:
        member = tf.getmember("000000001.ncf")
    damaged = bytearray(good)
    damaged[member.offset_data + member.size // 2] ^= 0xFF
    shard.write_bytes(bytes(damaged))
    with pytest.raises(BitstreamError, match="SHA-256"):
        read_shard(tmp_path, index["shards"][0])
    ds = LatentDataset(tmp_path, model=codec, batch_size=4)
    with pytest.raises(BitstreamError):
        list(ds)

    # A truncated shard: refused when the dataset opens.
    shard.write_bytes(good[: len(good) // 2])
    with pytest.raises(BitstreamError, match="bytes"):
        LatentDataset(tmp_path, model=codec)

    # Garbage of the right size: not a tar file we accept.
    shard.write_bytes(b"\x01" * len(good))
    with pytest.raises(BitstreamError):
        LatentDataset(tmp_path, model=codec)

    # A damaged index.
    shard.write_bytes(good)
    text = (tmp_path / "index.json").read_text()
    (tmp_path / "index.json").write_text(text.replace('"items": 9', '"items": 10'))
    with pytest.raises(BitstreamError, match="item count"):
        LatentDataset(tmp_path, model=codec)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(BitstreamError, match="index"):
        read_index(tmp_path)
    with pytest.raises(BitstreamError, match="index.json"):
        LatentDataset(tmp_path / "missing")


def test_wrong_model_is_refused(folder: Path, codec: WaLLoC, tmp_path: Path) -> None:
    pack(folder, tmp_path, model=codec, shard_size=4, progress=False)
    other = WaLLoC(latent_channels=4, levels=2, decoder_channels=8, decoder_blocks=1, context_levels=2, context_hidden=8)
    other.name = codec.name
    with pytest.raises(BitstreamError, match="weights"):
        next(iter(LatentDataset(tmp_path, model=other.eval())))


def test_cli_pack_unpack(folder: Path, model_path: str, tmp_path: Path) -> None:
    out, decoded = tmp_path / "shards", tmp_path / "decoded"
    assert main(["pack", str(folder), "-o", str(out), "--model", model_path, "--labels-from-dirs",
                 "--shard-size", "5", "-q"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["items"] == 9 and index["classes"] == list(CLASSES)
    # Running again resumes a finished pack: nothing changes.
    before = _shard_bytes(out)
    assert main(["pack", str(folder), "-o", str(out), "--model", model_path, "--labels-from-dirs", "-q",
                 "--shard-size", "5"]) == 0
    assert _shard_bytes(out) == before
    assert main(["unpack", str(out), "-o", str(decoded), "--model", model_path, "-q"]) == 0
    sources = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    assert sorted(p.relative_to(decoded).as_posix() for p in decoded.rglob("*.png")) == sources
    for rel in sources:
        assert read_image(decoded / rel).shape == read_image(folder / rel).shape
    assert main(["unpack", str(tmp_path / "nothing-here"), "-o", str(decoded)]) != 0


def test_unpack_ignores_unsafe_stored_paths(codec: WaLLoC, tmp_path: Path) -> None:
    shards, out = tmp_path / "s", tmp_path / "o"
    pack([(torch.rand(3, 16, 16), {"path": "../escape.png"}), (torch.rand(3, 16, 16), {"path": "/abs.png"})],
         shards, model=codec, progress=False)
    assert unpack(shards, out, model=codec, progress=False) == 2
    assert sorted(p.name for p in out.iterdir()) == ["000000000.png", "000000001.png"]
    assert not (tmp_path / "escape.png").exists()
    assert shards_module._safe_relative("a/b.png") == Path("a/b.png")
