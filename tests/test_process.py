"""Tests of mvhand._process: process-wide settings of array-heavy worker processes."""

from __future__ import annotations

import subprocess
import sys

import pytest

_FAULTS = """
import resource, sys
import numpy as np
from mvhand._process import tune_allocator
applied = tune_allocator() if sys.argv[1] == "tuned" else None
def loop():
    for _ in range(100):
        a = np.ones(300_000)  # 2.4 MB: above glibc's default (adaptive) mmap threshold
        b = a * 2.0
        del a, b
loop()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
loop()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_tune_allocator_keeps_freed_buffers_on_the_heap():
    """With glibc's defaults every 2.4 MB temporary costs fresh pages; tuned, a warm loop faults ~never."""
    _, default = _page_faults("default")
    applied, tuned = _page_faults("tuned")
    if applied != "True":
        pytest.skip("not glibc malloc")
    assert default > 10_000  # ~600 pages per array pair, 100 times
    assert tuned < default / 100
