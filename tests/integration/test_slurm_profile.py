"""What the SLURM profile makes each job ask for, checked against what the config makes the job use.

Dry runs (`snakemake -n --workflow-profile workflow/profiles/slurm`) on the tiny data print every job's
threads and resources; the plugin turns them into `sbatch --cpus-per-task` (the `cpus_per_task` resource,
else the threads), `--gpus` (resource `gpu` > 0), `--nodes`, `--mem`, `-t`. The expected use is computed
here from the config independently of the workflow's helpers. The real submission lines and SLURM's
allocations are checked in test_slurm_cluster.py.
"""

from __future__ import annotations

import copy
import re
import shutil

import pytest
import yaml
from _wf import REPO, TINY_PIPELINE, expected_use, planned_jobs, requested, run_snakemake, write_config

pytestmark = pytest.mark.slow
pytest.importorskip("snakemake_executor_plugin_slurm")

PROFILE = REPO / "workflow" / "profiles" / "slurm"
PAPER = yaml.safe_load((REPO / "presets" / "paper.yaml").read_text())
LOCAL_RULES = {"download", "pretrained_weights", "submission", "crop_list"}
AGGREGATORS = {"all", "crops", "downloads", "models", "predictions"}


def _merge(base: dict, *patches: dict) -> dict:
    out = copy.deepcopy(base)
    for patch in patches:
        for key, value in patch.items():
            out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


CPU_CLUSTER = {"train": {"device": "cpu"}, "predict": {"device": "cpu"}}
CONFIGS = {
    "cpu-cluster": _merge(TINY_PIPELINE, CPU_CLUSTER),  # the integration cluster's config
    "gpu-default-devices": TINY_PIPELINE,  # device auto: one GPU for train and each predict job
    "gpus-0": _merge(TINY_PIPELINE, {"train": {"gpus": 0}, "predict": {"device": "cpu"}}),
    "smooth-on-gpu": _merge(TINY_PIPELINE, CPU_CLUSTER, {"smooth": {"device": "cuda"}}),
    "paper-8-gpus": _merge(
        TINY_PIPELINE,
        {k: v for k, v in PAPER.items() if k != "crops"},
        {"train": {"pretrained_file": "weights/model.safetensors"}},
    ),  # fmt: skip
    "big-workers": _merge(
        TINY_PIPELINE,
        CPU_CLUSTER,
        {
            "train": {"threads": 3, "num_workers": 2},
            "predict": {"threads": 2, "num_workers": 3},
            "crops": {"threads": 3},
        },
    ),  # fmt: skip
}


def _mismatches(jobs, cfg: dict) -> list[tuple[str, tuple[int, int], tuple[int, int]]]:
    """(rule, requested, used) of every submitted job whose (CPUs, GPUs) request differs from its use;
    local rules and aggregators (no command: never submitted) are checked to be exactly those."""
    out = []
    for job in jobs:
        if job.local or job.rule in AGGREGATORS:
            assert job.rule in LOCAL_RULES | AGGREGATORS, job
        elif requested(job) != expected_use(job.rule, cfg):
            out.append((job.rule, requested(job), expected_use(job.rule, cfg)))
    return out


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_job_requests_what_its_config_uses(tiny_run, name):
    cfg = CONFIGS[name]
    write_config(tiny_run.workdir, cfg, f"{name}.yaml")
    if "pretrained_file" in cfg["train"]:  # a local weights file is an input of train: make it exist
        (tiny_run.workdir / cfg["train"]["pretrained_file"]).parent.mkdir(parents=True, exist_ok=True)
        (tiny_run.workdir / cfg["train"]["pretrained_file"]).touch()
    # (a dry run caps threads at --cores, a cluster run does not: lift the cap)
    proc = run_snakemake(
        tiny_run.workdir, "-n", "--cores", "512", "--workflow-profile", str(PROFILE), "--forcerun", "cache_crops",
        configfile=f"{name}.yaml",
    )  # fmt: skip
    jobs = planned_jobs(proc.stdout)
    rules = {j.rule for j in jobs}
    assert {"cache_crops", "train", "predict", "neural_smooth", "evaluate", "report"} <= rules, rules
    assert _mismatches(jobs, cfg) == [], name
    for job in jobs:
        if job.local or job.rule in AGGREGATORS:
            continue
        if job.rule == "train":
            assert job.resources.get("nodes") == "1", job  # torchrun --standalone: one node
        # nothing asks for more memory than the rule states (train: 16 GB per process)
        assert int(job.resources["mem_mb"]) <= 16000 * max(1, expected_use("train", cfg)[1])
    train_cmd = next(line for line in proc.stdout.splitlines() if "scripts/train.py --crops" in line)
    gpus = expected_use("train", cfg)[1]
    assert ("torch.distributed.run --standalone --nproc_per_node 8" in train_cmd) == (gpus == 8)
    if name == "gpus-0":
        assert "--device cpu" in train_cmd


def test_a_profile_asking_more_than_the_config_uses_is_caught(tiny_run, tmp_path):
    """The check above is not vacuous: a profile that asks for more CPUs or a GPU than the config uses
    (here: a site's `set-resources` for train and neural_smooth) makes exactly those jobs mismatch."""
    cfg = CONFIGS["cpu-cluster"]
    write_config(tiny_run.workdir, cfg, "excess.yaml")
    profile = tmp_path / "profile"
    shutil.copytree(PROFILE, profile)
    text = (profile / "config.yaml").read_text()
    extra = {"train": {"cpus_per_task": 16}, "neural_smooth": {"gpu": 1}}
    (profile / "config.yaml").write_text(text + "\n" + yaml.safe_dump({"set-resources": extra}))
    assert "set-resources:" not in yaml.safe_dump(yaml.safe_load(text) or {})  # not overriding a block
    proc = run_snakemake(
        tiny_run.workdir, "-n", "--cores", "512", "--workflow-profile", str(profile), "--forcerun", "cache_crops",
        configfile="excess.yaml",
    )  # fmt: skip
    found = {(rule, req, use) for rule, req, use in _mismatches(planned_jobs(proc.stdout), cfg)}
    smooth_cpus = expected_use("neural_smooth", cfg)[0]
    assert found == {
        ("train", (16, 0), expected_use("train", cfg)),
        ("neural_smooth", (smooth_cpus, 1), (smooth_cpus, 0)),
    }


def test_the_profile_holds_site_knobs_only():
    """No CPU/GPU/thread numbers in the profile (they come from the config), no sbatch flags the plugin
    rejects in slurm_extra; the commented site-knob examples are valid YAML of resources the plugin maps."""
    text = (PROFILE / "config.yaml").read_text()
    profile = yaml.safe_load(text)
    assert "set-threads" not in profile
    for block in ("default-resources", "set-resources"):
        values = profile.get(block) or {}
        flat = (
            values if block == "default-resources" else {k: v for r in values.values() for k, v in r.items()}
        )
        assert not {"gpu", "cpus_per_gpu", "cpus_per_task", "slurm_extra"} & set(flat), (block, flat)
    # uncomment the examples: they must parse and name resources the plugin knows
    examples = yaml.safe_load(re.sub(r"(?m)^(\s*)# ?(\s*[\w-]+:(?: .*)?)$", r"\1\2", text))
    assert examples["slurm-status-command"] == "squeue"
    knobs = set(examples["default-resources"]) | {k for r in examples["set-resources"].values() for k in r}
    assert knobs <= {"slurm_account", "slurm_partition", "qos", "gpu_model", "constraint"}, knobs
    assert {"slurm_account", "slurm_partition", "qos"} <= knobs
    assert "# slurm-status-command: squeue" in text  # the no-accounting fix is documented


def test_train_gpus_0_with_device_cuda_is_refused(tiny_run):
    cfg = _merge(TINY_PIPELINE, {"train": {"gpus": 0, "device": "cuda"}})
    write_config(tiny_run.workdir, cfg, "contradiction.yaml")
    proc = run_snakemake(tiny_run.workdir, "-n", configfile="contradiction.yaml", check=False)
    assert proc.returncode != 0
    assert (
        "train.gpus: is 0 (train on the CPU, request no GPU) but train.device is cuda"
        in proc.stdout + proc.stderr
    )


def test_pretrained_weights_are_fetched_by_a_local_rule(tiny_run):
    paper = {"train": {"backbone": "hiera_base_224", "img_size": 224, "pretrained": "mae_in1k_ft_in1k"}}
    write_config(tiny_run.workdir, _merge(TINY_PIPELINE, paper), "tag.yaml")
    proc = run_snakemake(
        tiny_run.workdir, "-n", "-p", "--workflow-profile", str(PROFILE), "results/train/full/model.pt",
        configfile="tag.yaml",
    )  # fmt: skip
    assert "pretrained_weights" in {j.rule for j in planned_jobs(proc.stdout)}
    fetched = "resources/pretrained/hiera_base_224/mae_in1k_ft_in1k.safetensors"
    assert f"--backbone hiera_base_224 --pretrained mae_in1k_ft_in1k --out {fetched}" in proc.stdout
    assert f"--pretrained-file {fetched}" in proc.stdout
    # a local file instead: no fetch, the file is the train job's input
    local = {"train": {**paper["train"], "pretrained_file": "weights/hiera.safetensors"}}
    write_config(tiny_run.workdir, _merge(TINY_PIPELINE, local), "file.yaml")
    proc = run_snakemake(
        tiny_run.workdir, "-n", "-p", "results/train/full/model.pt", configfile="file.yaml", check=False
    )
    assert proc.returncode != 0 and "weights/hiera.safetensors" in proc.stdout + proc.stderr  # missing input
    (tiny_run.workdir / "weights").mkdir(exist_ok=True)
    (tiny_run.workdir / "weights" / "hiera.safetensors").touch()
    proc = run_snakemake(tiny_run.workdir, "-n", "-p", "results/train/full/model.pt", configfile="file.yaml")
    assert "pretrained_weights" not in {j.rule for j in planned_jobs(proc.stdout)}
    assert "--pretrained-file weights/hiera.safetensors" in proc.stdout


def test_pretrained_weights_rule_runs_on_the_submit_host_from_the_hub_cache(tmp_path, monkeypatch):
    """The fetch is a local rule (compute nodes may lack internet): under a cluster executor it is not
    submitted. Offline, it is served from the Hugging Face cache (a fake one holding random weights)."""
    pytest.importorskip("snakemake_executor_plugin_cluster_generic")
    import torch
    from safetensors.torch import load_file, save_file

    from mvhand._compat import import_timm

    snapshot = tmp_path / "hub" / "models--timm--test_resnet.r160_in1k" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    source = {k: v.contiguous() for k, v in import_timm().create_model("test_resnet").state_dict().items()}
    save_file(source, str(snapshot / "model.safetensors"))
    write_config(tmp_path, _merge(TINY_PIPELINE, {"train": {"pretrained": "r160_in1k"}}))
    target = "resources/pretrained/test_resnet/r160_in1k.safetensors"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    proc = run_snakemake(
        tmp_path, "--executor", "cluster-generic", "--cluster-generic-submit-cmd", f"touch {tmp_path}/submitted; bash",
        "--jobs", "1", "--seconds-between-status-checks", "1", target, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "submitted").exists()  # ran on the submit host
    fetched = load_file(str(tmp_path / target))
    assert fetched.keys() == source.keys() and all(torch.equal(fetched[k], source[k]) for k in source)


def test_cache_crops_jobs_are_bundled_into_group_jobs(tmp_path):
    """With the profile, the cache_crops jobs of each dataset split go to SLURM 64 to a group job (ids by
    position in the manifest); without it (local runs) there is no group. The profile's numbers agree."""
    import json
    import math
    import os
    import time

    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    size = dict(item.split("=") for item in profile["group-components"])["crops"]
    size, cores = int(size), int(profile["cores"])
    assert (size, cores) == (64, 16)  # the numbers of docs/workflow.md, "Cluster"
    assert "groups" not in profile  # a `groups:` entry would replace the rule's per-bundle group ids
    names = {
        "train": [f"s{i:03d}" for i in range(2 * size + 2)],
        "pose_test": ["p0"],
        "shape_test": ["q0", "q1"],
    }
    root = tmp_path / "resources" / "data" / "umetrack"
    for split, seqs in names.items():
        (root / split).mkdir(parents=True)
        for name in seqs:
            (root / split / f"{name}.tar").touch()
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps({"dataset": "umetrack", "source": "synthetic", "splits": names}))
    later = time.time() + 5  # newer than the scripts: the download counts as done
    os.utime(manifest, (later, later))
    write_config(tmp_path, {**TINY_PIPELINE, "datasets": ["umetrack"]})
    proc = run_snakemake(tmp_path, "-n", "--workflow-profile", str(PROFILE), "--", "crops")
    jobs = [j for j in planned_jobs(proc.stdout) if j.rule == "cache_crops"]
    assert len(jobs) == sum(map(len, names.values()))
    members: dict[str, list[str]] = {}
    for job in jobs:
        members.setdefault(job.group, []).append(job.wildcards)
    expected = {
        f"crops-umetrack-{split}-{k}": min(size, len(seqs) - k * size)
        for split, seqs in names.items()
        for k in range(math.ceil(len(seqs) / size))
    }
    assert {g: len(m) for g, m in members.items()} == expected  # 64 + 64 + 2 train, 1 pose_test, 2 shape_test
    second = sorted(w.rsplit("sequence=", 1)[1] for w in members["crops-umetrack-train-1"])
    assert second == [f"s{i:03d}" for i in range(size, 2 * size)]  # bundles follow the manifest's order
    local = run_snakemake(tmp_path, "-n", "--", "crops")
    assert {j.group for j in planned_jobs(local.stdout) if j.rule == "cache_crops"} == {""}
