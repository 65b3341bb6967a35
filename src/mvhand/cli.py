"""Shared entry-point plumbing of the stage scripts in ``workflow/scripts/``."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable

from mvhand.io_utils import InputError

__all__ = ["exit_on_sigterm", "exit_with_process", "run", "setup_logging", "tune_allocator"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging() -> None:
    """INFO-level logging to stderr in the stage scripts' common format (timestamp, level, logger)."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def tune_allocator(mmap_threshold: int = 32 << 20, trim_threshold: int = 64 << 20) -> bool:
    """Let glibc's malloc keep and reuse freed memory in array-heavy loops (process-wide).

    A loop that allocates and frees 0.1-2 MB arrays per item (decode -> warp -> encode, per crop) gets, with
    glibc's defaults, fresh pages for many of them (an mmap per large array, or a heap that is trimmed and
    re-grown), and every page costs a fault. Fixing the mmap threshold at 32 MiB and the trim threshold at
    64 MiB keeps those buffers on the heap: for ``cache_crops`` this removed ~130 000 page faults and ~20 %
    of the time per 900 crops (docs/benchmarks.md). Both are needed: a trim threshold alone turns glibc's
    adaptive mmap threshold off and makes it worse.

    Returns:
        True if applied; False where malloc is not glibc's (no change).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )


def exit_on_sigterm() -> None:
    """Turn SIGTERM (Snakemake cancelling a job, SLURM's ``scancel`` / time limit) into ``SystemExit(143)``.

    Python's default action for SIGTERM kills the process on the spot: no ``finally`` block runs, so worker
    pools, fork servers and temporary files outlive the job. As an exception, the termination unwinds like
    Ctrl-C does: :func:`mvhand.io_utils.atomic_path` removes its temporary file and process pools shut their
    workers down. Only the main thread of the main interpreter can install it (elsewhere this is a no-op).
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
        sys.stderr.write("terminated (SIGTERM): stopping workers and removing unfinished output\n")
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def exit_with_process(pid: int, poll_s: float = 1.0) -> threading.Thread:
    """Watch process ``pid`` from a daemon thread and end this process (``os._exit``) as soon as it is gone.

    For worker processes: when their job's main process is killed outright (SIGKILL, out-of-memory killer) it
    cannot stop them, and a worker blocked on its task queue would otherwise live on (with the fork server and
    resource tracker that it keeps alive). Uses a Linux pidfd (no polling, immune to pid reuse) where
    available, else checks every ``poll_s`` seconds.
    """

    def watch() -> None:
        try:
            fd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
        except ProcessLookupError:
            os._exit(1)
        except OSError:  # pidfd unsupported by this kernel
            fd = None
        if fd is not None:
            select.select([fd], [], [])  # readable once the process has exited
            os._exit(1)
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass
            time.sleep(poll_s)

    thread = threading.Thread(target=watch, name=f"exit-with-{pid}", daemon=True)
    thread.start()
    return thread


def run(main: Callable[[list[str] | None], int], name: str, argv: list[str] | None = None) -> int:
    """Run a stage's ``main(argv)`` with logging to stderr; bad input ends in one clear line.

    Args:
        main: the script's ``main``; returns the exit status.
        name: logger name (the rule name).
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        ``main``'s status, or 1 after logging an :class:`InputError`, ``ValueError`` or missing file
        (whose message names the culprit and the fix) — no traceback for user errors.
    """
    setup_logging()
    exit_on_sigterm()
    try:
        return main(argv)
    except (InputError, ValueError, FileNotFoundError) as exc:
        logging.getLogger(name).error("%s", exc)
        return 1
