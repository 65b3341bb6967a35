"""Helpers of the workflow integration tests: run snakemake as a subprocess, write configs, parse output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO / "Snakefile"
BIN = Path(sys.executable).parent  # the venv's bin (snakemake, python)

TINY_CONFIG = {
    "source": "synthetic",
    "datasets": ["umetrack", "hot3d"],
    "seed": 0,
    "download": {"size": "tiny"},
    "crops": {"crop_size": 32, "fov_margin": 1.25, "jpeg_quality": 90, "threads": 2},
}


def snakemake_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["HF_HUB_OFFLINE"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_snakemake(
    workdir: Path, *args: str, configfile: str = "tiny.yaml", timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess:
    """`snakemake -s <repo>/Snakefile --directory <workdir> --configfile <configfile> ARGS` (text output)."""
    cmd = [str(BIN / "snakemake"), "-s", str(SNAKEFILE), "--directory", str(workdir)]
    if configfile:
        cmd += ["--configfile", str(workdir / configfile)]
    cmd += list(args)
    proc = subprocess.run(
        cmd, cwd=workdir, env=snakemake_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def write_config(workdir: Path, config: dict, name: str = "tiny.yaml") -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def job_counts(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a snakemake (dry) run: {rule: count} (total excluded)."""
    counts: dict[str, int] = {}
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("job") and "count" in line:
            for row in lines[i + 2 :]:
                parts = row.split()
                if len(parts) != 2 or not parts[1].isdigit():
                    break
                if parts[0] != "total":
                    counts[parts[0]] = int(parts[1])
            break
    return counts


def copy_workdir(src: Path, dst: Path) -> Path:
    """Copy a finished working directory (data, results, .snakemake metadata; mtimes preserved)."""
    shutil.copytree(src, dst, symlinks=True)
    return dst
