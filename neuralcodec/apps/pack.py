"""``codec pack`` and ``codec unpack``: media folders to compressed tar shards and back.

    codec pack photos/ -o shards/ --model walloc-image-16x --labels-from-dirs
    codec unpack shards/ -o decoded/
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("pack")
@click.argument("source", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Output folder for index.json and the shard-NNNNN.tar files.")
@click.option("-m", "--model", default="walloc-image-16x", show_default=True, help="Shipped model name or a saved model's .safetensors/.json path.")
@click.option("--labels-from-dirs", is_flag=True, help="The first folder under SOURCE is each file's class (stored as .cls).")
@click.option("--shard-size", default=1000, show_default=True, type=click.IntRange(min=1), help="Items per shard.")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1), help="Same-size images compressed together (>1 only for codecs whose entropy model is batch-invariant).")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(min=0), help="Encode shards in parallel with Dask on this many local processes (0: in this process).")
@click.option("--no-resume", is_flag=True, help="Fail if OUTPUT already holds a (partly) packed dataset instead of continuing it.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N (single-process packing).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def pack_command(source: Path, output: Path, model: str, labels_from_dirs: bool, shard_size: int, batch_size: int,
                 workers: int, no_resume: bool, device: str, quiet: bool) -> None:
    """Encode a media folder into WebDataset-style tar shards of .ncf files.

    \b
      codec pack photos/ -o shards/ --model walloc-image-16x --labels-from-dirs
      tar tf shards/shard-00000.tar        # 000000000.ncf 000000000.cls 000000000.json ...
    An interrupted run continues where it stopped when run again.
    """
    from .coding import _device

    progress = None if not quiet else False
    if workers:
        from ..datasets.distributed import pack_distributed

        index = pack_distributed(source, output, model, shard_size, resume=not no_resume, labels_from_dirs=labels_from_dirs,
                                 batch_size=batch_size, num_workers=workers, progress=progress)
    else:
        from ..datasets.shards import pack

        index = pack(source, output, model, shard_size, resume=not no_resume, labels_from_dirs=labels_from_dirs,
                     batch_size=batch_size, device=_device(device), progress=progress)
    if not quiet:
        size = sum(s["bytes"] for s in index["shards"])
        classes = f", {len(index['classes'])} classes" if index.get("classes") else ""
        click.echo(f"{source} -> {output}: {index['items']} items in {len(index['shards'])} shards, {size} bytes{classes}")


@click.command("unpack")
@click.argument("shards", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Output folder for the decoded media files.")
@click.option("-m", "--model", default=None, help="Decode with this model (name or path) instead of the one named in the index.")
@click.option("--format", "fmt", default=None, help="Output suffix, e.g. png, webp, wav. Default: png for images, wav for audio.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("-f", "--overwrite", is_flag=True, help="Replace existing output files.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def unpack_command(shards: Path, output: Path, model: str | None, fmt: str | None, device: str, overwrite: bool, quiet: bool) -> None:
    """Decode every item of packed shards back to media files (keeping their relative paths)."""
    from ..datasets.shards import unpack
    from .coding import _device

    count = unpack(shards, output, model, fmt=fmt, overwrite=overwrite, device=_device(device), progress=None if not quiet else False)
    if not quiet:
        click.echo(f"{shards} -> {output}: {count} files")
