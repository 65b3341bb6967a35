"""Fixtures of the workflow integration tests.

The tiny workflow (both datasets, `size: tiny`, 32-px crops) is run once per session into a temporary
working directory (`snakemake -s <repo>/Snakefile --directory <tmp>`); tests that need to modify data
work on copies.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from _wf import TINY_CONFIG, TINY_PIPELINE, copy_workdir, run_snakemake, write_config


@dataclass
class TinyRun:
    workdir: Path
    first_run: subprocess.CompletedProcess


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """The tiny workflow, run once: download (synthetic) + cache_crops for both datasets."""
    workdir = tmp_path_factory.mktemp("wf")
    write_config(workdir, TINY_CONFIG)
    proc = run_snakemake(workdir, "--cores", "2", "crops")
    return TinyRun(workdir, proc)


@pytest.fixture(scope="session")
def pipeline(tiny_run, tmp_path_factory):
    """The whole tiny workflow (TINY_PIPELINE), run locally once on a copy of the tiny data/crop run."""
    workdir = copy_workdir(tiny_run.workdir, tmp_path_factory.mktemp("pipe") / "wf")
    write_config(workdir, TINY_PIPELINE)
    proc = run_snakemake(workdir, "--cores", "2", timeout=1800)
    return workdir, proc
