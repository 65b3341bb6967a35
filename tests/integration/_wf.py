"""Helpers of the workflow integration tests: run snakemake as a subprocess, write configs, parse output."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
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

#: a model that trains in seconds on 32-px crops (timm's tiny test network)
TINY_TRAIN = {
    "backbone": "test_resnet",
    "img_size": 32,
    "n_points": 16,
    "hidden": 64,
    "batch_size": 4,
    "epochs": 1,
    "iters_per_epoch": 3,
    "warmup_iters": 0,
    "num_workers": 0,
    "checkpoint_every": 2,
    "val_max_instances": 16,
    "threads": 1,
}
TINY_PIPELINE = {
    **TINY_CONFIG,
    "train": TINY_TRAIN,
    "predict": {"batch_size": 16, "num_workers": 0, "threads": 1},
    "smooth": {"iterations": 20, "online_iterations": 3, "online_window": 6, "online_free": 2},
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


@dataclass
class PlannedJob:
    """One job of a dry run: rule name, whether it is a local rule, threads and resources as printed."""

    rule: str
    local: bool
    threads: int
    resources: dict[str, str]
    wildcards: str = ""
    group: str = ""  # id of the group job it belongs to ("" if none)


def planned_jobs(output: str) -> list[PlannedJob]:
    """Parse the job blocks of `snakemake -n` output (``rule X:`` / ``localrule X:`` … ``resources: k=v, …``)."""
    jobs: list[PlannedJob] = []
    current: PlannedJob | None = None
    indent = ""
    group = ""
    for line in output.splitlines():
        head = re.fullmatch(r"( {4})?(local)?(?:checkpoint|rule) (\w+):", line)
        group_head = re.search(r"Group job (\S+) \(jobs in lexicogr\. order\):", line)
        if group_head:  # the member jobs of a group job follow, indented by 4
            group, current = group_head.group(1), None
        elif head and (not head.group(1) or group):
            indent = head.group(1) or ""
            group = group if indent else ""  # a job at column 0 ends the group job's list
            current = PlannedJob(head.group(3), bool(head.group(2)), 1, {}, group=group)
            jobs.append(current)
        elif current is not None and line.startswith(indent + "    "):
            key, _, value = line.strip().partition(": ")
            if key == "threads":
                current.threads = int(value)
            elif key == "wildcards":
                current.wildcards = value
            elif key == "resources":
                current.resources = dict(item.split("=", 1) for item in value.split(", ") if "=" in item)
        else:
            current = None
    return jobs


#: CPU threads of rules whose use does not depend on the config (single-threaded scripts; the synthetic
#: generator's processes are fixed at 2)
FIXED_CPUS = {"report": 2, "download": 2}


def expected_use(rule: str, cfg: dict) -> tuple[int, int]:
    """(CPUs, GPUs) a job of `rule` keeps busy under `cfg` (defaults as in config.schema.yaml)."""
    train, predict, smooth = cfg.get("train", {}), cfg.get("predict", {}), cfg.get("smooth", {})
    if rule == "train":
        gpus = 0 if train.get("device", "auto") == "cpu" else train.get("gpus", 1)
        processes = max(1, gpus)  # torchrun: one process per GPU
        return processes * (train.get("threads", 2) + train.get("num_workers", 2)), gpus
    if rule == "predict":
        return predict.get("threads", 2) + predict.get("num_workers", 0), int(
            predict.get("device", "auto") != "cpu"
        )
    if rule == "neural_smooth":
        return smooth.get("workers", 1), int(smooth.get("device", "cpu") != "cpu")
    if rule == "cache_crops":
        return cfg["crops"].get("threads", 1), 0
    return FIXED_CPUS.get(rule, 1), 0


def requested(job: PlannedJob) -> tuple[int, int]:
    """(CPUs, GPUs) the SLURM plugin requests for a planned job (its get_cpu_setting / gres logic)."""
    cpus = int(job.resources.get("cpus_per_task", job.threads))
    return cpus, int(job.resources.get("gpu", 0))


def copy_workdir(src: Path, dst: Path) -> Path:
    """Copy a finished working directory (data, results, .snakemake metadata; mtimes preserved)."""
    shutil.copytree(src, dst, symlinks=True)
    return dst
