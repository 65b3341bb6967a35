#!/usr/bin/env python
"""Wall time and peak memory of the default pipeline (`snakemake --cores all`) on a fresh checkout.

Clones the repository (HEAD) into a temporary folder, runs the default target there under
``/usr/bin/time -v`` (peak RSS of the largest process) and sums the per-job benchmark files Snakemake
writes (``benchmarks/<rule>.*.tsv``) into a per-stage table. ``--log FILE --workdir DIR`` instead parses
an earlier run of exactly that command. Results go to docs/benchmarks.md.

Run: ``python benchmarks/bench_pipeline.py`` (≈ 17 min on 2 cores).
"""

from __future__ import annotations

import argparse
import collections
import csv
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import update_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run_fresh(workdir: Path, log: Path) -> None:
    subprocess.run(["git", "clone", "-q", str(REPO), str(workdir)], check=True)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    with open(log, "w") as fh:
        subprocess.run(["/usr/bin/time", "-v", "snakemake", "--cores", "all"], cwd=workdir, env=env, stdout=fh,
                       stderr=subprocess.STDOUT, check=True)  # fmt: skip


def parse(log: Path, workdir: Path) -> str:
    text = log.read_text()
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text).group(1)
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    per_rule: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for tsv in sorted((workdir / "benchmarks").glob("*.tsv")):
        rule = tsv.name.split(".")[0]
        with open(tsv) as fh:
            row = next(csv.DictReader(fh, delimiter="\t"))
        acc = per_rule[rule]
        acc[0] += 1
        acc[1] += float(row["s"])
        acc[2] = max(acc[2], float(row["max_rss"]) if row["max_rss"] not in ("", "NA", "-") else 0.0)
    lines = [
        f"`snakemake --cores all` on a fresh checkout (default config, synthetic world, 2 CPU cores): "
        f"**wall time {wall}**, peak memory of the largest process {rss_kb / 1024:.0f} MB "
        f"(`/usr/bin/time -v`).",
        "",
        "Per stage (sum over its jobs; jobs of different stages overlap on the 2 cores):",
        "",
        "| stage | jobs | job seconds (sum) | max RSS of a job (MB) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r} | {n} | {s:.0f} | {m:.0f} |"
        for r, (n, s, m) in sorted(per_rule.items(), key=lambda x: -x[1][1])
    ]
    lines.append("")
    lines.append(
        "Stages without a `benchmark:` directive (download, package_submission, evaluate, …) are light."
    )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--log", type=Path, help="parse this earlier `/usr/bin/time -v snakemake --cores all` log"
    )
    ap.add_argument("--workdir", type=Path, help="working directory of that run")
    ap.add_argument(
        "--keep", type=Path, help="clone and run in this (new) folder and keep it, e.g. to read its report"
    )
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.log:
        text = parse(args.log, args.workdir)
    elif args.keep:
        args.keep.mkdir(parents=True, exist_ok=False)
        work, log = args.keep / "repo", args.keep / "run.log"
        run_fresh(work, log)
        text = parse(log, work)
    else:
        with tempfile.TemporaryDirectory(prefix="mvhand_pipeline_") as tmp:
            work, log = Path(tmp) / "repo", Path(tmp) / "run.log"
            run_fresh(work, log)
            text = parse(log, work)
    print(text)
    if not args.no_write:
        update_section("pipeline", "Whole default run", "python benchmarks/bench_pipeline.py", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
