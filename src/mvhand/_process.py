"""Process-wide settings of the worker processes of array-heavy stages (``cache_crops``).

* :func:`tune_allocator`: glibc's malloc keeps freed array buffers on the heap instead of returning them to
  the system after every item (measured: docs/benchmarks.md, section ``malloc``);
* :func:`exit_with_process`: a worker ends when the job's main process is gone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import sys
import threading
import time

__all__ = ["exit_with_process", "tune_allocator"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def tune_allocator(mmap_threshold: int = 32 << 20, trim_threshold: int = 64 << 20) -> bool:
    """Let glibc's malloc keep and reuse freed memory in array-heavy loops (process-wide).

    A loop that allocates and frees 0.1-2 MB arrays per item (decode -> warp -> encode, per crop) gets, with
    glibc's defaults, fresh pages for many of them (an mmap per large array, or a heap that is trimmed and
    re-grown), and every page costs a fault. Fixing the mmap threshold at 32 MiB and the trim threshold at
    64 MiB keeps those buffers on the heap: in the ``cache_crops`` loop this removes ~99 % of the page faults
    (~100 per crop) and ~15-20 % of the CPU time (docs/benchmarks.md, section ``malloc``;
    ``benchmarks/bench_malloc.py``). Both are needed: a trim threshold alone turns glibc's adaptive mmap
    threshold off and makes it worse.

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
