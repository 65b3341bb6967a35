"""Benchmark: the whole default DAG planned on a real-size layout (`snakemake -n -p`).

Builds, in a temporary working directory, a local copy of the data at the size of the real datasets
(``source: local``): UmeTrack in the challenge layout and HOT3D in the HOT3D-Clips layout (device folders +
``clip_splits.json``), 6,061 sequences in all (4,721 of them in the train splits), as empty placeholder
tars. It runs the real ``download`` stage on it (links the tars, writes the manifests), then dry-runs the
default target with the commands printed (``snakemake -n -p``) and measures the CPU seconds of that
planning (Snakemake's own process, ``RUSAGE_CHILDREN``) and its wall time. Every printed command must be
shorter than 2,000 characters (it is pasteable and readable in logs); the longest one of each rule is
reported next to the length the ``train`` command had when it carried every crop path (the plain
alternative, computed from the same file names).

With ``--slurm`` it also dry-runs the SLURM profile (``workflow/profiles/slurm``: cache_crops jobs grouped)
and counts the cluster jobs it would submit.

    python benchmarks/bench_dag.py [--slurm] [--no-report]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))

from _wf import job_counts  # noqa: E402  (tests/integration/_wf.py: the one parser of Snakemake's job table)

from benchmarks._report import update_section  # noqa: E402

#: real sizes (issue #11): UmeTrack 2,229 sequence tars, HOT3D-Clips 3,832 clips; 4,721 train sequences
UMETRACK = {"train": 1800, "pose_test": 250, "shape_test": 179}
HOT3D = {"train": 2921, "test_ht_pose": 611, "test_ht_shape": 300}
MAX_COMMAND = 2000


def build_layout(root: Path) -> dict[str, Path]:
    """Placeholder tars of both datasets under ``root``; returns ``{dataset: folder}`` for download.local_dir."""
    ume = root / "umetrack"
    for split, n in UMETRACK.items():
        (ume / split).mkdir(parents=True)
        for i in range(n):
            (ume / split / f"subject_{i % 100:03d}_separate_hand_{i:06d}_{split}.tar").touch()
    hot = root / "hot3d_clips"
    clip_splits: dict[str, dict[str, list[int]]] = {}
    clip = 0
    for key, n in HOT3D.items():
        clip_splits[key] = {"Aria": [], "Quest3": []}
        for i in range(n):
            device = "Aria" if i % 2 == 0 else "Quest3"
            folder = ("train_" if key == "train" else "test_") + device.lower()
            (hot / folder).mkdir(parents=True, exist_ok=True)
            (hot / folder / f"clip-{clip:06d}.tar").touch()
            clip_splits[key][device].append(clip)
            clip += 1
    (hot / "clip_splits.json").write_text(json.dumps(clip_splits))
    return {"umetrack": ume, "hot3d": hot}


def snakemake(workdir: Path, *args: str) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run snakemake on the repository's Snakefile in ``workdir``; returns (process, CPU s, wall s)."""
    bin_dir = Path(sys.executable).parent
    cmd = [str(bin_dir / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--configfile", str(workdir / "config.yaml"), *args]
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", HF_HUB_OFFLINE="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc, cpu, wall


def printed_commands(output: str) -> dict[str, list[str]]:
    """The shell commands printed by ``-p``, by rule (the command of a job follows its ``rule X:`` block)."""
    out: dict[str, list[str]] = {}
    rule = None
    for line in output.splitlines():
        head = re.fullmatch(r"(?:local)?(?:checkpoint|rule) (\w+):", line.strip())
        if head and not line.startswith(" "):
            rule = head.group(1)
        elif rule and line.strip().removeprefix("Shell command: ").startswith("python "):
            out.setdefault(rule, []).append(line.strip().removeprefix("Shell command: "))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--slurm", action="store_true", help="also dry-run the SLURM profile (needs the plugin)")
    p.add_argument("--no-report", action="store_true", help="do not write docs/benchmarks.md")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mvhand_dag_") as tmp:
        tmp = Path(tmp)
        folders = build_layout(tmp / "local")
        workdir = tmp / "wf"
        workdir.mkdir()
        cfg = yaml.safe_load((REPO / "config.yaml").read_text())
        cfg["source"] = "local"
        cfg["download"]["local_dir"] = {k: str(v) for k, v in folders.items()}
        cfg["evaluate"]["split"] = "val"  # real data: no test ground truth
        (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

        _, dl_cpu, dl_wall = snakemake(workdir, "--cores", "2", "downloads")
        n_seq = sum(
            len(v)
            for d in folders
            for v in json.loads((workdir / "resources/data" / d / "manifest.json").read_text())[
                "splits"
            ].values()
        )
        proc, cpu, wall = snakemake(workdir, "-n", "-p")
        out = proc.stdout + proc.stderr
        counts = job_counts(out)
        commands = printed_commands(out)
        longest = {rule: max(len(c) for c in cmds) for rule, cmds in commands.items()}
        too_long = {rule: n for rule, n in longest.items() if n >= MAX_COMMAND}
        crop_paths = [
            f"results/crops/{d}/train/{name}.parquet"
            for d in folders
            for name in json.loads((workdir / "resources/data" / d / "manifest.json").read_text())["splits"][
                "train"
            ]
        ]
        plain_train = longest.get("train", 0) + sum(len(c) + 1 for c in crop_paths)
        slurm = None
        if a.slurm:
            sproc, scpu, swall = snakemake(
                workdir, "-n", "--workflow-profile", str(REPO / "workflow/profiles/slurm")
            )
            sout = sproc.stdout + sproc.stderr
            groups = set(re.findall(r"Group job (\S+) \(jobs in lexicogr", sout))
            slurm = (len(groups), job_counts(sout).get("cache_crops", 0), scpu, swall)

    print(f"{n_seq} sequences: download (local, links) {dl_cpu:.1f} s CPU / {dl_wall:.1f} s wall")
    print(f"dry run -n -p: {cpu:.1f} s CPU, {wall:.1f} s wall, {sum(counts.values())} jobs {counts}")
    print(f"longest printed command per rule: {longest}")
    print(f"train command if it carried every crop path: {plain_train} characters")
    if slurm:
        print(f"SLURM profile: {slurm[1]} cache_crops jobs in {slurm[0]} group jobs ({slurm[2]:.1f} s CPU)")
    if too_long:
        print(f"FAIL: commands of {MAX_COMMAND}+ characters: {too_long}")
        return 1
    if not a.no_report:
        rows = "\n".join(f"| {r} | {counts.get(r, 0)} | {n} |" for r, n in sorted(longest.items()))
        body = (
            f"Real-size layout, `source: local`: {n_seq} sequences (UmeTrack {sum(UMETRACK.values())} tars, "
            f"HOT3D-Clips {sum(HOT3D.values())} clips; {len(crop_paths)} in the train splits), empty placeholder "
            "tars. The `download` stage (linking them, writing the manifests) took "
            f"{dl_cpu:.1f} s CPU ({dl_wall:.1f} s wall).\n\n"
            f"| | CPU s | wall s | jobs |\n|---|---|---|---|\n"
            f"| `snakemake -n -p` (default target) | {cpu:.1f} | {wall:.1f} | {sum(counts.values())} |\n\n"
            f"Longest printed command per rule (characters; limit {MAX_COMMAND}):\n\n"
            f"| rule | jobs | longest command |\n|---|---|---|\n{rows}\n\n"
            f"`train` reads the {len(crop_paths)} train crop caches from two list files (`--crops-list`, written by "
            f"the local rule `crop_list`); with every path on its command line it would be {plain_train:,} "
            "characters. Every file a job reads is still a Snakemake input (the lists and the caches)."
        )
        if slurm:
            body += (
                f"\n\nSLURM profile (`--workflow-profile workflow/profiles/slurm`): the {slurm[1]} `cache_crops` jobs "
                f"are submitted as {slurm[0]} group jobs (dry run: {slurm[2]:.1f} s CPU, {slurm[3]:.1f} s wall)."
            )
        update_section(
            "dag",
            "Planning the real-size DAG (dry run, command lengths)",
            "python benchmarks/bench_dag.py --slurm",
            body,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
