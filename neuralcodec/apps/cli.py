"""The ``codec`` command line: ``encode``, ``decode``, ``info``, ``train``, ``bench``.

Each sub-command lives in its own module and is attached to the :data:`cli` group
here, so the group stays a thin index.
"""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import NeuralCodecError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="codec")
def cli() -> None:
    """neuralcodec: neural compression of images, audio and video.

    \b
    Typical use:
      codec encode photo.png -o photo.ncf
      codec decode photo.ncf -o photo.png
      codec info photo.ncf
    """


@cli.command("models")
def models_command() -> None:
    """List the shipped models that load offline."""
    from .. import available

    names = available()
    if not names:
        click.echo("no shipped models yet")
    for name in names:
        click.echo(name)


from .coding import decode_command, encode_command, info_command  # noqa: E402

cli.add_command(encode_command)
cli.add_command(decode_command)
cli.add_command(info_command)
from .bench import bench as bench_group  # noqa: E402  (codec bench rd | speed)

cli.add_command(bench_group)
from .train import train_command  # noqa: E402  (codec train walloc-image)
from .train_hyperprior import train_group  # noqa: E402  (codec train hyperprior; other presets -> train_command)

_train = train_group(train_command)
from .train_walloc_audio_rvq import walloc_audio_rvq_command  # noqa: E402  (codec train walloc-audio-rvq)

_train.add_command(walloc_audio_rvq_command)
from .train_walloc_video import walloc_video_command  # noqa: E402  (codec train walloc-video)

_train.add_command(walloc_video_command)
from .train_walloc_entropy import walloc_image_entropy_command  # noqa: E402  (codec train walloc-image-entropy)

_train.add_command(walloc_image_entropy_command)
cli.add_command(_train)
from .pack import pack_command, unpack_command  # noqa: E402  (codec pack | unpack)

cli.add_command(pack_command)
cli.add_command(unpack_command)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``codec`` console script; turns our errors into exit code 1."""
    try:
        # Without standalone mode click *returns* the code of a `click.exceptions.Exit`
        # raised inside a command (a command that failed some files), or the command's value.
        result = cli.main(args=argv, prog_name="codec", standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except NeuralCodecError as e:
        click.echo(f"error: {e}", err=True)
        return 1
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def entry() -> None:
    """Console-script wrapper: exit with :func:`main`'s code."""
    sys.exit(main())
