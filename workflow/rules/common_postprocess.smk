# Helpers of workflow/rules/postprocess.smk (functions and constants only; included by common.smk).
# ---- post-processing (workflow/rules/postprocess.smk) -------------------------------------------

SMOOTH_METHODS = ("raw", "neural", "online", "one_euro", "savgol")
FINAL_CANDIDATE = config["submission"]["candidate"]
EVAL_SPLIT = config["evaluate"]["split"]
CANDIDATES = list(config["evaluate"]["candidates"])
# training variants of the report's rows (their training curves are in the report)
REPORT_VARIANTS = sorted({c.split("-")[0] for c in CANDIDATES})


wildcard_constraints:
    variant=r"[a-z0-9_]+",
    method="|".join(SMOOTH_METHODS),
    track="pose|shape",


def smooth_workers():
    """CPU threads of a neural_smooth job: `smooth.workers` processes of one torch thread each (default 1)."""
    return int(smooth_settings().get("workers", 1))


def smooth_gpus():
    """GPUs of a neural_smooth job (resource `gpu`): 0 with `smooth.device: cpu` (the default), else 1."""
    return 0 if smooth_settings().get("device", "cpu") == "cpu" else 1


def _split_dir(dataset, split):
    """Folder of the tars of a prediction split (`val` = held-out training sequences)."""
    return f"{DATA_ROOT}/{dataset}/{'train' if split == 'val' else split}"


def _shape_splits(split):
    """Prediction splits whose sequences the shape result file must cover (see FORMATS.md §6.6)."""
    return ["val"] if split == "val" else ["pose_test", "shape_test"]


def package_inputs(wildcards):
    """Input function of package_submission: smoothed pose predictions, shape predictions, manifests."""
    inputs = {}
    for ds in DATASETS:
        inputs[f"pose_{ds}"] = f"results/smooth/{wildcards.variant}/{wildcards.method}/{ds}/{wildcards.split}.parquet"
        for s in _shape_splits(wildcards.split):
            inputs[f"shape_{ds}_{s}"] = f"results/predict/{wildcards.variant}/{ds}/{s}.parquet"
        inputs[f"manifest_{ds}"] = f"{DATA_ROOT}/{ds}/manifest.json"
    if wildcards.split == "val":
        inputs["sequences"] = f"results/train/{wildcards.variant}/val_sequences.txt"
    return inputs


def package_flags(wildcards, input):
    """Params function of package_submission: one --pose-*/--shape-* pair per dataset and split."""
    parts = []
    for ds in DATASETS:
        parts.append(f"--pose-predictions {ds}={input[f'pose_{ds}']}")
        parts.append(f"--pose-tars {ds}={_split_dir(ds, wildcards.split)}")
        for s in _shape_splits(wildcards.split):
            parts.append(f"--shape-predictions {ds}={input[f'shape_{ds}_{s}']}")
            parts.append(f"--shape-tars {ds}={_split_dir(ds, s)}")
    if wildcards.split == "val":
        parts.append(f"--sequences {input.sequences}")
    parts.append(stage_flags({"max_filled": config["submission"]["max_filled"]}))
    return " ".join(parts)


def eval_gt_inputs(wildcards):
    """Input function of eval_gt: the shipped GT archives (test splits) or the held-out sequences."""
    inputs = {f"manifest_{ds}": f"{DATA_ROOT}/{ds}/manifest.json" for ds in DATASETS}
    if wildcards.split == "val":
        inputs["sequences"] = f"results/train/{config['evaluate']['val_variant']}/val_sequences.txt"
    return inputs


def eval_gt_flags(wildcards, input):
    """Params function of eval_gt."""
    if wildcards.split == "val":
        tars = " ".join(f"--tars {ds}={_split_dir(ds, 'val')}" for ds in DATASETS)
        return f"{tars} --sequences {input.sequences} --mano-dir {MANO_DIR}"
    return " ".join(f"--archive {DATA_ROOT}/{ds}/gt.tar.gz" for ds in DATASETS)


def evaluate_phase(wildcards):
    """Params function of evaluate: the evaluator phase of a track."""
    return f"{wildcards.track}_estimation"


def report_inputs(wildcards):
    """Input function of report: every candidate's pose archive, the final shape metrics, trajectories."""
    split = EVAL_SPLIT
    inputs = {"gt": f"results/evaluate/{split}/gt.tar.gz"}
    for cand in CANDIDATES:
        inputs[f"cand_{cand}"] = f"results/submission/{split}/{cand}/pose_submission.tar.gz"
        inputs[f"metrics_{cand}"] = f"results/evaluate/{split}/{cand}/pose.json"
    inputs["shape_metrics"] = f"results/evaluate/{split}/{FINAL_CANDIDATE}/shape.json"
    variant = FINAL_CANDIDATE.split("-")[0]
    if "online" in {c.split("-", 1)[1] for c in CANDIDATES}:
        for ds in DATASETS:
            inputs[f"online_{ds}"] = f"results/smooth/{variant}/online/{ds}/{split}.json"
    inputs["raw"] = f"results/smooth/{variant}/raw/{DATASETS[0]}/{split}.parquet"
    inputs["smoothed"] = f"results/smooth/{variant}/neural/{DATASETS[0]}/{split}.parquet"
    for v in REPORT_VARIANTS:
        inputs[f"train_{v}"] = f"results/train/{v}/metrics.csv"
    return inputs


def report_flags(wildcards, input):
    """Params function of report."""
    parts = [f"--candidate {c}={input[f'cand_{c}']}" for c in CANDIDATES]
    parts.append(f"--shape-metrics {input.shape_metrics}")
    parts += [f"--online-stats {ds}={input[f'online_{ds}']}" for ds in DATASETS if f"online_{ds}" in input.keys()]
    parts.append(f"--raw {input.raw} --smoothed {input.smoothed}")
    # the loss-curve PNG written by train beside its metrics.csv
    parts += [
        f"--training-curve {k[6:]}={os.path.join(os.path.dirname(v), 'loss.png')}"
        for k, v in input.items()
        if k.startswith("train_")
    ]
    return " ".join(parts)
