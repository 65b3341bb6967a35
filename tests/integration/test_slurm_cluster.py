"""The tiny workflow on a real one-node SLURM cluster through `workflow/profiles/slurm`.

`.ci/slurm/up.sh --accounting` installs and starts the cluster (Debian's slurm-wlm, munge, slurmdbd on a
MariaDB bound to 127.0.0.1); the test is skipped only where that is impossible (not root, no apt-get, no
package registry, a SLURM that up.sh did not configure), with up.sh's reason. The whole tiny workflow then
runs from scratch with the profile as shipped (job status through `sacct`). Checked:

* every non-local job ran as a SLURM job: `sacct` lists, per rule, exactly the jobs of the workflow's DAG,
  all COMPLETED with exit code 0; the local rules (download, submission) never reached SLURM;
* each `sbatch` line and SLURM's allocation ask for the CPUs the config keeps busy and no GPU;
* the outputs equal the local run's (`pipeline` fixture): crop caches, predictions, smoothed tables,
  submissions (archive members), scores and the trained weights exactly (train runs 1 thread: CPU training
  is then deterministic across processes); only wall-clock fields (timings, `created`) may differ;
* `--slurm-status-command squeue` (the documented fix for clusters without accounting) also completes.

Every wait is bounded: the run is killed after RUN_TIMEOUT_S and its submitted jobs are cancelled with
`scancel` (Snakemake ignores SIGTERM while jobs are pending).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from _wf import (
    BIN,
    REPO,
    SNAKEFILE,
    TINY_PIPELINE,
    expected_use,
    planned_jobs,
    run_snakemake,
    snakemake_env,
    write_config,
)

from mvhand.cluster import group_request

pytestmark = pytest.mark.slow
pytest.importorskip("snakemake_executor_plugin_slurm")

PROFILE = REPO / "workflow" / "profiles" / "slurm"
SLURM_CONFIG = {
    **TINY_PIPELINE,
    "train": {**TINY_PIPELINE["train"], "device": "cpu"},  # a CPU-only cluster: no GPU requests
    "predict": {**TINY_PIPELINE["predict"], "device": "cpu"},
}
LOCAL_RULES = {"download", "submission", "crop_list", "pretrained_weights"}  # localrules: of workflow/rules
AGGREGATORS = {"all", "crops", "downloads", "models", "predictions"}
RUN_TIMEOUT_S = 1200


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running one-node SLURM with accounting (started here and stopped afterwards if it was not up)."""
    if os.name != "posix":
        pytest.skip("SLURM test cluster: POSIX only")
    proc = subprocess.run(
        ["bash", str(REPO / ".ci" / "slurm" / "up.sh"), "--accounting"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if proc.returncode == 77:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    started_here = "already up" not in proc.stderr
    yield
    if started_here:
        subprocess.run(["bash", str(REPO / ".ci" / "slurm" / "down.sh")], capture_output=True, timeout=180)


def node_cpus() -> int:
    """CPUs of the largest node: the profile's `cores` (CPUs of a cache_crops group job) must not exceed it,
    as on any small cluster (the start-up check refuses the run otherwise)."""
    out = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%c"], capture_output=True, text=True, timeout=60, check=True
    )
    return max(int(c) for c in out.stdout.split())


def run_on_slurm(
    workdir: Path, *args: str, name: str, timeout: float = RUN_TIMEOUT_S, ok: bool = True
) -> str:
    """Run snakemake with the SLURM profile; return its (verbose) log, asserting success (`ok`) or failure.
    Bounded: after `timeout` s the run is killed and every job it submitted is cancelled."""
    log = workdir / f"{name}.log"
    cmd = [
        str(BIN / "snakemake"), "-s", str(SNAKEFILE), "--directory", str(workdir),
        "--configfile", str(workdir / "tiny.yaml"), "--workflow-profile", str(PROFILE),
        "--slurm-init-seconds-before-status-checks", "2", "--verbose", "--cores", str(node_cpus()), *args,
    ]  # fmt: skip
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=snakemake_env(), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
        finally:
            ids = re.findall(r"submitted with SLURM jobid (\d+)", log.read_text())
            if ids:  # harmless for finished jobs; frees the node if anything is left
                subprocess.run(["scancel", *ids], capture_output=True, timeout=60)
    text = log.read_text()
    assert rc is not None, f"snakemake on SLURM did not finish in {timeout} s:\n{text[-6000:]}"
    assert (rc == 0) == ok, f"snakemake on SLURM ended with {rc}:\n{text[-8000:]}"
    return text


def sacct_jobs(run_uuid: str, expected: int, timeout: float = 60) -> list[dict[str, str]]:
    """The run's jobs in the accounting database (job name = the plugin's run uuid); waits (bounded) until
    slurmdbd has recorded `expected` finished jobs with their comments."""
    fields = ["JobID", "JobName", "Comment", "State", "ExitCode", "AllocCPUS", "AllocTRES"]
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-a", "--starttime", "now-1day", "--name", run_uuid,
             "--format", ",".join(fields)],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        rows = [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]
        if (len(rows) >= expected and all(r["Comment"] for r in rows)) or time.monotonic() > deadline:
            return rows
        time.sleep(2)


def _rule_of(comment: str) -> str:
    """`rule_<rule>_wildcards_<...>` (the plugin's --comment) -> rule; a group job's comment,
    `rule_<group id>_<rule>` (e.g. `rule_crops-umetrack-shape_test-0_cache_crops`), -> its rule."""
    assert comment.startswith("rule_"), comment
    name = comment[len("rule_") :].split("_wildcards_")[0]
    group = re.match(r"^crops-[^-]+-.+?-\d+_(.+)$", name)
    return group.group(1) if group else name


def _rows(path: Path) -> str:
    """A Parquet table's schema and rows as text (NaN == NaN, floats exact)."""
    table = pq.read_table(path)
    return str(table.schema) + json.dumps(table.to_pylist(), default=repr)


def _tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(path.read_bytes()))) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _csv_without(path: Path, *columns: str) -> list[dict]:
    with open(path) as fh:
        return [{k: v for k, v in row.items() if k not in columns} for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm") / "wf"
    write_config(workdir, SLURM_CONFIG)
    t0 = time.monotonic()
    log = run_on_slurm(workdir, name="slurm-run")
    print(f"\ntiny workflow on SLURM: {time.monotonic() - t0:.0f} s")
    return workdir, log


def crops_bundle_cpus(workdir: Path) -> list[int]:
    """CPUs each cache_crops group job asks for, one entry per bundle, from a dry run with the profile
    (bundles, the node-sized `cores`, crops.threads; mvhand.cluster.group_request, which the start-up check
    uses too)."""
    jobs = planned_jobs(
        run_snakemake(workdir, "-n", "--cores", str(node_cpus()), "--workflow-profile", str(PROFILE),
                      "--forcerun", "cache_crops", "--", "crops").stdout
    )  # fmt: skip
    members = Counter(j.group for j in jobs if j.rule == "cache_crops")
    assert members and "" not in members, "cache_crops jobs are not grouped by the profile"
    threads = SLURM_CONFIG.get("crops", {}).get("threads", expected_use("cache_crops", {"crops": {}})[0])
    return [group_request("g", n, node_cpus(), threads, 0).cpus for n in members.values()]


def test_every_non_local_rule_ran_as_a_slurm_job(slurm_run):
    workdir, log = slurm_run
    # the workflow's jobs (every rule but the download checkpoint forced, so that the DAG is complete)
    rules = [
        "cache_crops",
        "train",
        "predict",
        "neural_smooth",
        "package_submission",
        "eval_gt",
        "evaluate",
        "report",
    ]
    dag = planned_jobs(
        run_snakemake(workdir, "-n", "--cores", "64", "--forcerun", *rules, "--", "all").stdout
    )
    wanted = Counter(j.rule for j in dag if j.rule not in LOCAL_RULES | AGGREGATORS)
    assert {"cache_crops", "train", "predict", "neural_smooth", "evaluate", "report"} <= set(wanted)
    # cache_crops runs as one SLURM job per bundle of a dataset split (job groups of the profile)
    bundle_cpus = crops_bundle_cpus(workdir)
    wanted["cache_crops"] = len(bundle_cpus)
    run_uuid = re.search(r"--job-name (\S+)", log).group(1)
    rows = sacct_jobs(run_uuid, sum(wanted.values()))
    assert Counter(_rule_of(r["Comment"]) for r in rows) == wanted
    assert {(r["State"], r["ExitCode"]) for r in rows} == {("COMPLETED", "0:0")}, rows
    # "Job <n>" for single jobs, "Job <uuid>" for group jobs
    submitted = re.findall(r"^Job \S+ has been submitted with SLURM jobid (\d+)", log, re.M)
    assert sorted(submitted) == sorted(r["JobID"] for r in rows)
    # what SLURM allocated: the CPUs each stage (or bundle of cache_crops jobs) keeps busy, no GPU
    for r in rows:
        rule = _rule_of(r["Comment"])
        if rule != "cache_crops":
            assert int(r["AllocCPUS"]) == expected_use(rule, SLURM_CONFIG)[0], r
        assert "gres/gpu" not in r["AllocTRES"], r
    crops_rows = [int(r["AllocCPUS"]) for r in rows if _rule_of(r["Comment"]) == "cache_crops"]
    assert sorted(crops_rows) == sorted(bundle_cpus)


def test_sbatch_lines_request_what_the_config_uses(slurm_run):
    _, log = slurm_run
    calls = re.findall(r"^sbatch call: (.*)$", log, re.M)
    assert calls
    bundle_cpus = set(crops_bundle_cpus(slurm_run[0]))
    for call in calls:
        rule = _rule_of(re.search(r"--comment (\S+)", call).group(1))
        cpus, gpus = expected_use(rule, SLURM_CONFIG)
        if rule == "cache_crops":  # a bundle: what its simultaneous members use
            assert int(re.search(r"--cpus-per-task=(\d+) ", call).group(1)) in bundle_cpus, call
        else:
            assert f"--cpus-per-task={cpus} " in call, call
        assert "--gpus" not in call and "--gres" not in call, call
        assert ("--nodes=1" in call) == (rule == "train"), call


def test_outputs_equal_the_local_run(slurm_run, pipeline):
    slurm_dir, _ = slurm_run
    local_dir, _ = pipeline
    if torch.cuda.is_available():
        pytest.skip("the local reference run trained on a GPU (device auto); the SLURM run on the CPU")
    compared = Counter()
    for path in sorted((local_dir / "results").rglob("*")):
        rel = path.relative_to(local_dir)
        other = slurm_dir / rel
        if not path.is_file() or "tb" in rel.parts:
            continue
        assert other.is_file(), rel
        if path.suffix == ".parquet":
            assert _rows(other) == _rows(path), rel
        elif path.name.endswith(".tar.gz"):
            assert _tar_members(other) == _tar_members(path), rel
        elif path.suffix == ".pt":
            a, b = torch.load(path, weights_only=False), torch.load(other, weights_only=False)
            assert a["model"].keys() == b["model"].keys()
            assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), rel
        elif path.name in ("metrics.csv", "steps.csv"):
            timing = ("epoch_time_s", "step_time_s", "time_s", "seconds")
            assert _csv_without(other, *timing) == _csv_without(path, *timing), rel
        elif path.suffix == ".json" and rel.parts[1] in ("evaluate", "report"):
            assert other.read_bytes() == path.read_bytes(), rel
        else:  # pictures, logs of timings, report.md (per-frame timings): present is enough
            continue
        compared[rel.parts[1]] += 1
    assert {"crops", "train", "predict", "smooth", "submission", "evaluate", "report"} <= set(compared), (
        compared
    )


def test_squeue_status_command_completes(slurm_run, tmp_path):
    """The documented fix for clusters without accounting (`slurm-status-command: squeue`) completes a run."""
    slurm_dir, _ = slurm_run
    workdir = tmp_path / "wf"
    shutil.copytree(slurm_dir, workdir, symlinks=True)
    target = "results/evaluate/pose_test/full-neural/pose.json"
    before = (workdir / target).read_bytes()
    (workdir / target).unlink()
    log = run_on_slurm(workdir, "--slurm-status-command", "squeue", target, name="squeue-run")
    assert re.search(r"command=squeue", log) and "sacct" not in re.findall(r"command=(\w+)", log)
    assert (workdir / target).read_bytes() == before


def test_a_request_no_node_can_satisfy_stops_the_run_before_submitting(slurm_cluster, tmp_path):
    """SLURM would accept a job asking for more CPUs than any node has and keep it PENDING forever; the
    workflow refuses to start instead, naming the rule and the config keys."""
    cpus = node_cpus()
    cfg = {**SLURM_CONFIG, "train": {**SLURM_CONFIG["train"], "threads": cpus + 1}}
    write_config(tmp_path, cfg)
    log = run_on_slurm(tmp_path, name="too-big", timeout=300, ok=False)
    assert "PENDING forever" in log and f"train: {cpus + 1} CPUs" in log and "train.threads" in log, log[
        -3000:
    ]
    assert "submitted with SLURM jobid" not in log
    assert not (tmp_path / "resources" / "data").exists()  # stopped before the first (local) job
    # a cache_crops group job (planned only after the download) asking for `cores` CPUs: refused up front too
    group_dir = tmp_path / "group"
    write_config(group_dir, SLURM_CONFIG)
    log = run_on_slurm(group_dir, "--cores", str(8 * cpus), name="group-too-big", timeout=300, ok=False)
    assert "PENDING forever" in log and "cache_crops (group)" in log and "lower `cores`" in log, log[-3000:]
    assert "submitted with SLURM jobid" not in log
