"""File-system helpers: atomic writes (files and figures) and input errors that name the file and the fix."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

__all__ = [
    "InputError",
    "atomic_path",
    "atomic_write",
    "disk_full_error",
    "pyplot",
    "read_path_list",
    "save_figure",
    "sweep_stale_temps",
    "write_path_list",
]


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


#: Temporary files of :func:`atomic_path` older than this whose writer cannot be checked (another host) are stale.
STALE_TEMP_AGE_S = 24 * 3600
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _host_tag() -> str:
    """Short host name usable in a file name (the writer's host, recorded in temporary names)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:32] or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _temp_pattern(path: Path) -> re.Pattern:
    """Names of :func:`atomic_path` temporaries of ``path``: ``.<name>.<pid>@<host>.<random>.tmp<suffix>``."""
    return re.compile(rf"^\.{re.escape(path.name)}\.(\d+)@([A-Za-z0-9-]+)\.[0-9a-f]+\.tmp")


def sweep_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove temporaries of ``path`` left by a killed writer (SIGKILL, power loss, out-of-memory kill).

    A temporary is stale when its writer (pid recorded in the name) no longer runs on this host, or, when it
    was written on another host (shared file system), when it has not been modified for
    :data:`STALE_TEMP_AGE_S`. Temporaries of live writers are never touched.

    Returns:
        The removed paths.
    """
    path = Path(path)
    pattern, host, removed = _temp_pattern(path), _host_tag(), []
    try:
        entries = list(os.scandir(path.parent))
    except FileNotFoundError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None or not entry.is_file(follow_symlinks=False):
            continue
        pid, where = int(m.group(1)), m.group(2)
        try:
            if where == host:
                stale = pid != os.getpid() and not _pid_alive(pid)
            else:
                stale = time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_AGE_S
            if stale:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except FileNotFoundError:  # removed meanwhile
            continue
    return removed


def _create_temp(path: Path, suffix: str) -> Path:
    """Create an empty temporary file beside ``path`` with the mode a plain ``open(path, "w")`` would give.

    New files get ``0o666`` minus the umask (and any default ACL of the folder), like every file the process
    creates; when ``path`` already exists its permission bits are kept, as an in-place rewrite would.
    """
    try:
        keep_mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        keep_mode = None
    base = f".{path.name}.{os.getpid()}@{_host_tag()}."
    for _ in range(100):
        tmp = path.parent / f"{base}{secrets.token_hex(4)}.tmp{suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        try:
            if keep_mode is not None:
                os.fchmod(fd, keep_mode)
        finally:
            os.close(fd)
        return tmp
    raise FileExistsError(f"cannot create a temporary file beside {path}")  # pragma: no cover


def disk_full_error(path: str | os.PathLike, exc: OSError) -> InputError:
    """The :class:`InputError` for a write that failed because the file system (or the quota) is full."""
    return InputError(
        path,
        f"no space left on device while writing it ({os.strerror(exc.errno)}); nothing was kept",
        f"free disk space (or quota) on the file system of {Path(path).parent or '.'}, or write the results to "
        "another file system, and re-run",
    )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file is removed on any exception (including KeyboardInterrupt and the SystemExit that
    :func:`mvhand.cli.exit_on_sigterm` raises), so a crashed or interrupted writer never leaves a
    half-written ``path`` behind. A writer killed outright (SIGKILL) cannot clean up: its temporary is swept
    by the next write of the same ``path`` (:func:`sweep_stale_temps`). The file gets the permissions a
    plain ``open()`` would give it (umask; an existing destination keeps its mode). A full disk or quota
    raises :class:`InputError` naming ``path``.

    Args:
        path: final destination; parent directories are created.
        suffix: suffix of the temporary name (defaults to the destination's suffixes, so that
            libraries that look at the extension still work).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes)
    sweep_stale_temps(path)
    tmp_path = _create_temp(path, suffix)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            raise disk_full_error(path, exc) from exc
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


def write_path_list(path: str | os.PathLike, paths: Iterable[str | os.PathLike]) -> Path:
    """Write a list file (atomically): one path per line, in the given order; returns ``path``.

    List files let a stage read thousands of inputs (``--crops-list``) with a short command line. Paths
    are written as given: relative ones are relative to the directory the reading stage runs in (the
    workflow's working directory), like paths on a command line.
    """
    with atomic_write(path) as fh:
        for p in paths:
            text = os.fspath(p)
            if "\n" in text:
                raise ValueError(f"{text!r}: a path in a list file cannot hold a line break")
            fh.write(text + "\n")
    return Path(path)


def read_path_list(path: str | os.PathLike) -> list[str]:
    """Paths of a list file written by :func:`write_path_list` (blank lines and ``#`` comments skipped).

    Raises:
        InputError: the list file is missing or unreadable (named, with the fix).
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(
            path, "list file not found", "re-run the workflow (rule crop_list writes it)"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"unreadable list file ({e})", "delete it and re-run the workflow") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


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
