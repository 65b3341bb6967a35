"""One source of truth per stage setting: schema default == library default == stage-CLI default.

The library (a dataclass field or a keyword parameter in src/mvhand) owns each default; the stage script
(workflow/scripts/<stage>.py) derives its argparse default from it and the config schema
(workflow/schemas/config.schema.yaml) states the same value, so a stage run by hand computes what the
pipeline computes. Every key of a stage section is either mapped to its owner below or listed as a
workflow-only key (scheduling / job selection, never a flag of the stage's computation).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import re
from pathlib import Path

import pytest
import yaml

from mvhand.formats.crop_cache import CropSettings
from mvhand.model.inference import predict
from mvhand.model.losses import LossWeights
from mvhand.model.training import TrainConfig
from mvhand.post import smoothing as sm
from mvhand.post.packaging import pose_entries_from_predictions

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text(encoding="utf-8"))

_TRAIN_FIELDS = (
    "backbone", "img_size", "views", "in_chans", "n_points", "hidden", "position_mode", "uv_head",
    "pretrained_file", "batch_size", "epochs", "iters_per_epoch", "lr", "weight_decay", "warmup_iters",
    "extrinsic_noise", "val_fraction", "val_max_instances", "seed", "num_workers", "device", "checkpoint_every",
    "amp", "shuffle_row_groups",
)  # fmt: skip
_NEURAL_FIELDS = (
    "iterations", "lr", "weight_decay", "w_pose", "w_orient", "w_position", "w_2d", "w_depth", "position_unit", "min_conf",
    "device", "solver", "eps_pose", "eps_orient", "eps_position", "eps_2d", "lm_damping", "tol", "chunk_frames",
    "workers",
)  # fmt: skip

#: schema section -> (stage script, the script's required arguments, {key: (owner, name in owner)}, workflow keys)
STAGES = {
    "crops": (
        "cache_crops.py",
        ["--input", "x.tar", "--output", "x.parquet"],
        {k: (CropSettings, k) for k in ("crop_size", "fov_margin", "jpeg_quality")},
        {"threads", "splits"},
    ),
    "train": (
        "train.py",
        ["--crops", "x.parquet", "--mano-dir", "m", "--out-dir", "o"],
        {
            **{k: (TrainConfig, k) for k in _TRAIN_FIELDS},
            "no_augment": (TrainConfig, "augment"),  # negated: no_augment = not augment
        },
        # pretrained: fetched by the rule pretrained_weights and passed as --pretrained-file;
        # loss_weights: overrides only (checked against LossWeights below)
        {"threads", "gpus", "variants", "pretrained", "loss_weights"},
    ),
    "predict": (
        "predict.py",
        ["--model", "m.pt", "--crops", "x.parquet", "--mano-dir", "m", "--out", "o.parquet"],
        {k: (predict, k) for k in ("batch_size", "betas", "device", "num_workers")},
        {"threads", "splits"},
    ),
    "smooth": (
        "neural_smooth.py",
        ["--predictions", "p.parquet", "--mano-dir", "m", "--out", "o.parquet"],
        {
            **{k: (sm.NeuralSmoothConfig, k) for k in _NEURAL_FIELDS},
            "max_gap": (sm.problem_from_predictions, "max_gap"),
            "online_window": (sm.OnlineSmoothConfig, "window"),
            "online_free": (sm.OnlineSmoothConfig, "free"),
            "online_iterations": (sm.OnlineSmoothConfig, "iterations"),
            "fps": (sm.one_euro, "fps"),
            "one_euro_min_cutoff": (sm.one_euro, "min_cutoff"),
            "one_euro_beta": (sm.one_euro, "beta"),
            "savgol_window": (sm.savitzky_golay, "window"),
            "savgol_polyorder": (sm.savitzky_golay, "polyorder"),
        },
        set(),
    ),
    "submission": (
        "package_submission.py",
        ["--pose-predictions", "umetrack=p.parquet", "--pose-tars", "umetrack=d", "--out-pose", "o.tar.gz"],
        {"max_filled": (pose_entries_from_predictions, "max_filled")},
        {"candidate"},  # which candidate becomes results/submission/: job selection
    ),
}


def library_default(owner, name):
    """Default of a dataclass field or keyword parameter, read directly (independently of mvhand.cli)."""
    if dataclasses.is_dataclass(owner):
        (f,) = [f for f in dataclasses.fields(owner) if f.name == name]
        assert f.default is not dataclasses.MISSING, f"{owner.__name__}.{name} has no plain default"
        return f.default
    p = inspect.signature(owner).parameters[name]
    assert p.default is not inspect.Parameter.empty, f"{owner.__name__}({name}=...) has no default"
    return p.default


def cli_defaults(script: str, required: list[str]) -> dict:
    """The argparse namespace of ``workflow/scripts/<script>`` given only its required arguments."""
    spec = importlib.util.spec_from_file_location(
        f"_cli_{script[:-3]}", ROOT / "workflow" / "scripts" / script
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return vars(module.parse_args(required))


def _same(a, b) -> bool:
    """Equal, and not a bool standing in for a number (True == 1)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


@pytest.mark.parametrize("section", sorted(STAGES))
def test_schema_library_and_cli_defaults_agree(section):
    script, required, owners, workflow_keys = STAGES[section]
    props = SCHEMA["properties"][section]["properties"]
    assert set(owners) | workflow_keys == set(props), (
        f"config.schema.yaml {section}: keys {sorted(set(props) ^ (set(owners) | workflow_keys))} are neither "
        "mapped to their library default in tests/test_config_defaults.py nor workflow-only keys"
    )
    cli = cli_defaults(script, required)
    problems = []
    for key, (owner, name) in owners.items():
        lib = library_default(owner, name)
        if key == "no_augment":
            lib = not lib
        schema = props[key].get("default", "<none>")
        flag = cli[key]
        if not (_same(schema, lib) and _same(flag, lib)):
            problems.append(
                f"{section}.{key}: schema {schema!r}, {owner.__qualname__}.{name} {lib!r}, --{key.replace('_', '-')} "
                f"{flag!r} (the library owns the default: make the schema and {script} follow it)"
            )
        # an integer setting is an int in the library too (a float epoch count would slip through ==)
        is_int = isinstance(lib, int) and not isinstance(lib, bool)
        assert is_int == (props[key]["type"] == "integer"), f"{section}.{key}: schema type vs {lib!r}"
    assert not problems, "\n".join(problems)


def test_loss_weight_overrides_name_the_library_defaults():
    """train.loss_weights carries no defaults (config.yaml's entries are overrides); each key documents the
    LossWeights default in its description, and the keys are exactly LossWeights' fields."""
    props = SCHEMA["properties"]["train"]["properties"]["loss_weights"]["properties"]
    weights = LossWeights().to_dict()
    assert set(props) == set(weights)
    for key, spec in props.items():
        assert "default" not in spec
        m = re.search(r"\(default ([0-9.eE+-]+)", spec["description"])
        assert m and float(m.group(1)) == weights[key], f"train.loss_weights.{key}: description says {m}"


def test_default_of_reads_fields_and_parameters():
    from mvhand.cli import default_of

    assert default_of(TrainConfig, "epochs") == library_default(TrainConfig, "epochs")
    assert default_of(sm.one_euro, "beta") == 0.5
    assert default_of(TrainConfig, "loss_weights") == {}
    with pytest.raises(KeyError, match="crops"):
        default_of(TrainConfig, "crops")  # required field
    with pytest.raises(KeyError, match="nope"):
        default_of(sm.one_euro, "nope")


#: settings config.yaml deliberately sets away from the library default (each with its reason in config.yaml)
DELIBERATE = {("train", "loss_weights"), ("smooth", "w_2d"), ("smooth", "w_depth")}


def test_config_yaml_differs_from_the_defaults_only_deliberately():
    """A stage run by hand with default flags computes what the default pipeline computes, except for the
    overrides named in DELIBERATE: a value in config.yaml that silently differs from the schema (= library)
    default fails here."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    differing = set()
    for section, value in config.items():
        props = SCHEMA["properties"][section]
        if isinstance(value, dict):
            differing |= {
                (section, k) for k, v in value.items() if props["properties"][k].get("default", {}) != v
            }
        elif props.get("default") != value:
            differing.add((section,))
    assert differing == DELIBERATE, (
        f"config.yaml sets {sorted(differing - DELIBERATE)} away from the default: change the library default "
        "(and the schema) or name the override in DELIBERATE with its reason in config.yaml"
    )
