"""Where ``report`` and ``export`` write: standard output, or a file that appears whole.

A file is written beside its target under a temporary name and renamed over it only
when the command succeeded, so an interrupted export never leaves half a file behind.
Writing to a closed pipe (``tachimeter export ... | head``) ends the command quietly.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import typer

__all__ = ["open_destination"]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


@contextlib.contextmanager
def open_destination(out: str | None, *, binary: bool = False) -> Iterator[BinaryIO]:
    """A binary stream for ``--out``: stdout for None or ``-`` (refused for ``binary``
    output when stdout is a terminal), else a temporary file renamed to ``out`` when the
    block succeeds. Write errors print one ``error:`` line and exit 2."""
    if out is None or out == "-":
        if binary and sys.stdout.isatty():
            raise _fail("binary output would garble the terminal; pass --out FILE")
        stdout = sys.stdout.buffer
        try:
            yield stdout
            stdout.flush()
        except BrokenPipeError:
            # The reader went away: stop, and keep Python from failing again when it
            # flushes stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(1) from None
        except OSError as exc:
            raise _fail(f"cannot write to stdout: {exc.strerror or exc}") from None
        return
    target = Path(out).expanduser()
    partial = target.with_name(f".{target.name}.partial")
    try:
        handle = open(partial, "wb")  # noqa: SIM115 - closed below, renamed on success
    except OSError as exc:
        raise _fail(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        with handle:
            yield handle
        os.replace(partial, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise _fail(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
