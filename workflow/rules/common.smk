# Python glue shared by all .smk files (config validation, constants, wildcard constraints, the params
# helper, the target helpers); included first by the Snakefile, before the topic helpers
# (common_<topic>.smk). The topic files hold the rules and no functions (snakemake --lint).

import json
import os
import shlex
import sys

import yaml

from snakemake.exceptions import IncompleteCheckpointException
from snakemake.utils import validate

validate(config, schema="../schemas/config.schema.yaml")

DATA_ROOT = os.path.normpath(config["data_root"])
# A sequence tar as the download lays it out (`<data_root>/<dataset>/<split>/<sequence>.tar`; cache_crops's
# input, see dataset_tars)
SEQUENCE_TAR = f"{DATA_ROOT}/{{dataset}}/{{split}}/{{sequence}}.tar"
MANO_DIR = os.path.normpath(config["mano_dir"])
DATASETS = list(config["datasets"])
SPLITS = ("train", "pose_test", "shape_test")
# Splits of the later stages: the data splits plus `val` (held-out training sequences).
ALL_SPLITS = SPLITS + ("val",)

# Training variants ({variant} of the train rule): baseline = no extrinsic noise, full = with it.
MODEL_VARIANTS = ("baseline", "full")

# Section keys that steer scheduling or target selection rather than the stage's computation (threads and
# GPUs become the rule's `threads` and resources, splits and variants select jobs); stage_flags does not
# render them into script flags, so changing them never re-runs a finished job.
WORKFLOW_ONLY_KEYS = frozenset({"threads", "gpus", "splits", "variants"})

# Stage scripts run with the interpreter running Snakemake, whose environment has mvhand installed: its
# bin folder goes first on every job's PATH, so `python` (and `torchrun`) resolve to it with or without an
# activated virtual environment, locally and on cluster nodes (which evaluate this file again).
shell.prefix(f'set -euo pipefail; export PATH={shlex.quote(os.path.dirname(sys.executable))}:"$PATH"; ')


wildcard_constraints:
    dataset="|".join(DATASETS),
    split="|".join(ALL_SPLITS),
    sequence=r"[^/]+",


def script_path(name):
    """Path of a stage script (`workflow/scripts/<name>`) for a rule's `input: script=...`.

    Relative to the working directory when the workflow runs inside the repository, absolute otherwise,
    so that the commands printed by `snakemake -n -p` can be pasted into a shell as they are (a
    `workflow.source_path` would point into Snakemake's temporary source cache).
    """
    path = os.path.normpath(os.path.join(workflow.basedir, "workflow", "scripts", name))
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else path


with open(
    os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"), encoding="utf-8"
) as _fh:
    _SCHEMA = yaml.safe_load(_fh)


def _schema_section(settings):
    """(properties of the schema section holding most of the settings' keys, top-level properties)."""
    top = _SCHEMA["properties"]
    sections = [v.get("properties") or {} for v in top.values() if isinstance(v, dict) and "properties" in v]
    best = max(sections, key=lambda props: sum(k in props for k in settings), default={})
    return best, top


def _canonical(value, spec):
    """A value in the canonical form of its schema type: a `number` is a float, an integral `integer` an int."""
    kind = (spec or {}).get("type")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if kind == "number":
        return float(value)
    if kind == "integer" and float(value).is_integer():
        return int(value)
    return value


def stage_flags(settings):
    """Render a flat settings dict as command-line flags: `key_name: v` -> `--key-name v`.

    The command (which Snakemake compares to decide re-runs) depends only on the settings' values: flags
    come in the order of the config schema (workflow/schemas/config.schema.yaml; that of config.yaml) and
    numbers in the canonical form of their schema type (`lr: 1` and `lr: 1.0` give `--lr 1.0`, `epochs:
    2.0` gives `--epochs 2`), so reordering keys in config.yaml or writing a default out explicitly re-runs
    nothing. Booleans become a bare `--flag` when true (omitted when false); None and "" are omitted; lists
    are space separated (their order is kept: it is meaningful); mappings become `--flag k=v k=v` (sorted
    by key). Keys in WORKFLOW_ONLY_KEYS are skipped. Values are shell-quoted. Used for `params:` so that a
    changed setting re-runs exactly the stage that reads it (and its dependents).
    """
    section, top = _schema_section(settings)

    def rank(key):
        if key in section:
            return (1, list(section).index(key), key)
        return (0, list(top).index(key), key) if key in top else (2, 0, key)

    parts = []
    for key in sorted(settings, key=rank):
        value = settings[key]
        if key in WORKFLOW_ONLY_KEYS or value is None or value == "":
            continue
        spec = section.get(key) or top.get(key) or {}
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool):
            if value:
                parts.append(flag)
        elif isinstance(value, dict):
            if value:
                inner = spec.get("properties") or {}
                items = (shlex.quote(f"{k}={_canonical(v, inner.get(k))}") for k, v in sorted(value.items()))
                parts.append(" ".join([flag, *items]))
        elif isinstance(value, (list, tuple)):
            parts.append(
                " ".join([flag, *(shlex.quote(str(_canonical(v, spec.get("items")))) for v in value)])
            )
        else:
            parts.append(f"{flag} {shlex.quote(str(_canonical(value, spec)))}")
    return " ".join(parts)


def download_settings(dataset):
    """Settings of the download stage of one dataset: the source plus only the keys that source uses
    (`local_dir`: that dataset's folder, normalised, so that a trailing slash re-runs nothing)."""
    from mvhand.download import local_dir_for

    settings = {"source": config["source"], "seed": config["seed"]}
    section = config["download"]
    if config["source"] == "synthetic":
        settings["size"] = section["size"]
    elif config["source"] == "huggingface":
        settings["verify"] = section["verify"]
        settings["revision"] = section["revision"]
    else:
        settings["local_dir"] = local_dir_for(section["local_dir"], dataset, DATASETS)
    return settings


def download_flags(wildcards):
    """Params function of download: its flags for {dataset}."""
    return stage_flags(download_settings(wildcards.dataset))


def data_root(wildcards):
    """Params function: the data root (a function, so that `--lint` does not flag a path prefix)."""
    return DATA_ROOT


def section_settings(section):
    """The settings of one config section (`crops`, `train`, `predict`, `smooth`, ...) as a flat dict of
    the validated config (schema defaults filled in), to be rendered to flags with `stage_flags`."""
    return dict(config[section])


def read_manifest(dataset):
    """Manifest of a downloaded dataset (waits for the `download` checkpoint).

    Returns:
        dict with at least `splits: {split: [sequence names]}`.
    """
    path = checkpoints.download.get(dataset=dataset).output.manifest
    stamp = os.stat(path).st_mtime_ns
    cached = _MANIFESTS.get(path)
    if cached is None or cached[0] != stamp:  # parsed once per version: input functions call this per job
        with open(path, encoding="utf-8") as fh:
            cached = _MANIFESTS[path] = (stamp, json.load(fh))
    return cached[1]


_MANIFESTS = {}  # manifest path -> (mtime_ns, parsed manifest)
_SEQUENCE_INDEX = {}  # (manifest path, mtime_ns, split) -> {sequence: position in the split}


def crops_group(wildcards):
    """Job group of a cache_crops job (the rule's `group:`), for cluster runs.

    With `group-components: crops=N` (the SLURM profile) the sequences of a dataset split are bundled N to a
    group, by their position in the manifest (`crops-<dataset>-<split>-<k>`; 6,061 sequences -> 97 cluster
    jobs with N = 64), and Snakemake runs each group as one cluster job. Without it (local runs): no group.

    One group id per bundle, rather than one id for all with `group-components` merging them: Snakemake
    (9.27) re-merges already merged groups each time it updates the DAG after a checkpoint (our download),
    which turned 95 bundles of 64 into 2 groups of thousands of jobs.
    """
    size = workflow.group_settings.group_components.get("crops")
    if not size:
        return None
    try:
        path = checkpoints.download.get(dataset=wildcards.dataset).output.manifest
    except IncompleteCheckpointException:  # a crop file asked for before the download: no bundle
        return None
    key = (path, os.stat(path).st_mtime_ns, wildcards.split)
    index = _SEQUENCE_INDEX.get(key)
    if index is None:
        names = sequences_of(wildcards.dataset, wildcards.split)
        index = _SEQUENCE_INDEX[key] = {name: i for i, name in enumerate(names)}
    groupid = f"crops-{wildcards.dataset}-{wildcards.split}-{index.get(wildcards.sequence, 0) // size}"
    workflow.parent_groupids[groupid] = "crops"  # its group-components setting is that of `crops`
    return groupid


def sequences_of(dataset, split):
    """Sequence names (tar stems) of one split, as listed by the manifest."""
    return list(read_manifest(dataset)["splits"].get(split, []))


def dataset_tars(dataset, split):
    """Sequence tars of one split (`<data_root>/<dataset>/<split>/<name>.tar`), as listed by the manifest.

    Jobs that read the data take these tars as inputs, not the manifest: the download rewrites the
    manifest on every run, and the tars keep their time stamps when the data did not change.
    """
    return expand(SEQUENCE_TAR, dataset=dataset, split=split, sequence=sequences_of(dataset, split))


def dataset_file(dataset, name):
    """`<data_root>/<dataset>/<name>`, a file the download writes beside the splits (e.g. gt.tar.gz of the
    synthetic world). Does not wait for the download: input functions call `read_manifest(dataset)` first."""
    return f"{DATA_ROOT}/{dataset}/{name}"


def mano_files(wildcards):
    """Input function: the MANO model files (`<mano_dir>/MANO_{LEFT,RIGHT}.pkl`) read by the stages that get
    `--mano-dir`, once every configured download has run (the synthetic source writes them there; with
    real data the download checks that the official files are in place)."""
    for dataset in DATASETS:
        read_manifest(dataset)
    return [f"{MANO_DIR}/{name}" for name in MANO_FILES]


def output_path(pattern, **wildcards):
    """One path of an upstream rule's output: `pattern` (`rules.<rule>.output.<name>`) with its wildcards
    filled in from the keyword arguments (a missing one raises Snakemake's WildcardError, naming it).

    Downstream rules name what they read this way rather than retyping the upstream path, so that a path
    changes in one place (its rule).
    """
    (path,) = expand(pattern, **wildcards)
    return path


def crop_files_for(dataset, split):
    """Crop-cache Parquet files of one dataset split (one per sequence; rule cache_crops)."""
    names = sequences_of(dataset, split)
    return expand(rules.cache_crops.output.crops, dataset=dataset, split=split, sequence=names)


def crop_list_file(dataset, split):
    """List file of one dataset split's crop caches (rule crop_list; read by train/predict)."""
    return output_path(rules.crop_list.output.crops_list, dataset=dataset, split=split)


def split_crop_files(wildcards):
    """Input function of crop_list: the crop caches of {dataset}/{split}."""
    return crop_files_for(wildcards.dataset, wildcards.split)


def write_crop_list(path, files, log_path):
    """What the run block of crop_list does: write the list file (atomically) and a one-line log."""
    from mvhand.io_utils import atomic_write, write_path_list

    write_path_list(path, files)
    with atomic_write(log_path) as fh:
        fh.write(f"{path}: {len(files)} crop file(s)\n")


def crop_files(wildcards):
    """Input function: every crop-cache file of the configured datasets and splits."""
    files = []
    for dataset in DATASETS:
        for split in config["crops"]["splits"]:
            files.extend(crop_files_for(dataset, split))
    return files


def manifest_files(wildcards):
    """Input function: the manifests of all configured datasets (checkpoint download)."""
    return expand(rules.download.output.manifest, dataset=DATASETS)


# Values that point nowhere (unknown variants, a missing local_dir, test GT that real data lacks, the
# synthetic MANO stand-in with real data, non-finite numbers, ...) stop the workflow here, before any job
# runs, with the key and the fix (src/mvhand/workflow_config.py).
from mvhand.workflow_config import MANO_FILES, check_config

check_config(config, MODEL_VARIANTS)
