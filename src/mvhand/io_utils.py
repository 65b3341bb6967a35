"""File-system helpers: atomic writes (files and figures) and input errors that name the file and the fix."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["InputError", "atomic_path", "atomic_write", "pyplot", "save_figure"]


class InputError(ValueError):
    """Bad user input (file, config value, …). The message names the culprit and what to do."""

    def __init__(self, path: str | os.PathLike | None, problem: str, fix: str | None = None):
        self.path = None if path is None else str(path)
        self.problem, self.fix = problem, fix
        msg = problem if path is None else f"{path}: {problem}"
        if fix:
            msg += f" ({fix})"
        super().__init__(msg)

    def __reduce__(self):
        # rebuilt from the constructor's arguments, so that the error survives a worker-process boundary
        return (type(self), (self.path, self.problem, self.fix))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file is removed on any exception (including KeyboardInterrupt), so a crashed or
    interrupted writer never leaves a half-written ``path`` behind.

    Args:
        path: final destination; parent directories are created.
        suffix: suffix of the temporary name (defaults to the destination's suffixes, so that
            libraries that look at the extension still work).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; rename it onto ``path`` on success.

    Args:
        path: final destination.
        mode: ``"w"`` (text, UTF-8 unless ``encoding`` is given) or ``"wb"``.
        **kwargs: passed to :func:`open`.
    """
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use; no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int) -> None:
    """Write a matplotlib figure as PNG atomically (:func:`atomic_path`) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)
