# Helpers of the post-processing stages (rules in postprocess.smk): functions and constants only,
# included by the Snakefile after common.smk.

SMOOTH_METHODS = ("raw", "neural", "online", "one_euro", "savgol")
FINAL_CANDIDATE = config["submission"]["candidate"]
EVAL_SPLIT = config["evaluate"]["split"]
CANDIDATES = list(config["evaluate"]["candidates"])


def candidate_wildcards(candidate):
    """The wildcards of a candidate "<variant>-<method>": {"variant": ..., "method": ...}."""
    variant, _, method = candidate.partition("-")
    return {"variant": variant, "method": method}


# training variants of the report's rows (their training curves are in the report)
REPORT_VARIANTS = sorted({candidate_wildcards(c)["variant"] for c in CANDIDATES})


wildcard_constraints:
    variant=r"[a-z0-9_]+",
    method="|".join(SMOOTH_METHODS),
    track="pose|shape",


def smooth_workers():
    """CPU threads of a neural_smooth job: `smooth.workers` processes of one torch thread each (default 1)."""
    return int(config["smooth"]["workers"])


def smooth_gpus():
    """GPUs of a neural_smooth job (resource `gpu`): 0 with `smooth.device: cpu` (the default), else 1."""
    return 0 if config["smooth"]["device"] == "cpu" else 1


def _split_dir(dataset, split):
    """Folder of the tars of a prediction split (`val` = held-out training sequences)."""
    return f"{DATA_ROOT}/{dataset}/{'train' if split == 'val' else split}"


def _shape_splits(split):
    """Prediction splits whose sequences the shape result file must cover (see spec/formats.md §6.6)."""
    return ["val"] if split == "val" else ["pose_test", "shape_test"]


def package_inputs(wildcards):
    """Input function of package_submission: smoothed pose predictions and shape predictions (the tars it
    reads: package_tars)."""
    run = {"variant": wildcards.variant, "split": wildcards.split}
    inputs = {}
    for ds in DATASETS:
        inputs[f"pose_{ds}"] = output_path(
            rules.neural_smooth.output.table, method=wildcards.method, dataset=ds, **run
        )
        for s in _shape_splits(wildcards.split):
            inputs[f"shape_{ds}_{s}"] = output_path(
                rules.predict.output.predictions, variant=wildcards.variant, dataset=ds, split=s
            )
    if wildcards.split == "val":
        inputs["sequences"] = output_path(rules.train.output.val_sequences, variant=wildcards.variant)
    return inputs


def package_tars(wildcards):
    """Input function of package_submission: the sequence tars of the splits it reads (not the manifest:
    see dataset_tars). A separate input item, so that the others stay named while the download runs."""
    splits = dict.fromkeys([wildcards.split, *_shape_splits(wildcards.split)])
    return [tar for ds in DATASETS for s in splits for tar in dataset_tars(ds, "train" if s == "val" else s)]


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
    """Input function of eval_gt: the held-out sequences chosen by train (val; the data it reads:
    eval_gt_data)."""
    if wildcards.split != "val":
        return {}
    return {
        "sequences": output_path(rules.train.output.val_sequences, variant=config["evaluate"]["val_variant"])
    }


def eval_gt_archives():
    """The GT archives merged by eval_gt for the test splits: `<data_root>/<dataset>/gt.tar.gz`, which the
    download (synthetic source) writes beside the splits. Its input (eval_gt_data) and its flags."""
    return [dataset_file(ds, "gt.tar.gz") for ds in DATASETS]


def eval_gt_data(wildcards):
    """Input function of eval_gt: the GT archives (test splits; eval_gt_archives) once the download has run,
    or the training tars and the MANO files packed into the archive (val). A separate input item, as in
    package_submission, so that the unpacked ones stay named while the download runs."""
    if wildcards.split != "val":
        for ds in DATASETS:
            read_manifest(ds)  # the download writes the archives: wait for it
        return eval_gt_archives()
    return [tar for ds in DATASETS for tar in dataset_tars(ds, "train")] + mano_files(wildcards)


def eval_gt_flags(wildcards, input):
    """Params function of eval_gt: --archive per GT archive (test splits; the files of input.data, named
    here without waiting for the download so that a dry run before it prints the command), or --tars per
    dataset with --sequences and --mano-dir (val)."""
    if wildcards.split == "val":
        tars = " ".join(f"--tars {ds}={_split_dir(ds, 'val')}" for ds in DATASETS)
        return f"{tars} --sequences {input.sequences} --mano-dir {MANO_DIR}"
    return " ".join(f"--archive {path}" for path in eval_gt_archives())


def evaluate_submission(wildcards):
    """Input function of evaluate: the {track} archive (pose or shape) of package_submission."""
    pattern = getattr(rules.package_submission.output, wildcards.track)
    return output_path(pattern, split=wildcards.split, variant=wildcards.variant, method=wildcards.method)


def final_submission(track):
    """Input of the submission rule: the {track} archive (pose or shape) of submission.candidate on
    pose_test."""
    pattern = getattr(rules.package_submission.output, track)
    return output_path(pattern, split="pose_test", **candidate_wildcards(FINAL_CANDIDATE))


def evaluate_phase(wildcards):
    """Params function of evaluate: the evaluator phase of a track."""
    return f"{wildcards.track}_estimation"


def report_inputs(wildcards):
    """Input function of report: what it reads (the GT archive, every candidate's pose archive, the final
    candidate's shape metrics, the online stats, the trajectories before/after Neural Smooth of the first
    dataset, the training curves), plus every candidate's pose metrics, which it does not read: they
    make the evaluate jobs part of the default run."""
    split = EVAL_SPLIT
    inputs = {"gt": output_path(rules.eval_gt.output.gt, split=split)}
    for cand in CANDIDATES:
        run = {"split": split, **candidate_wildcards(cand)}
        inputs[f"cand_{cand}"] = output_path(rules.package_submission.output.pose, **run)
        inputs[f"metrics_{cand}"] = output_path(rules.evaluate.output.metrics, track="pose", **run)
    final = candidate_wildcards(FINAL_CANDIDATE)
    inputs["shape_metrics"] = output_path(rules.evaluate.output.metrics, split=split, track="shape", **final)
    smoothed = {"variant": final["variant"], "split": split}
    if "online" in {candidate_wildcards(c)["method"] for c in CANDIDATES}:
        for ds in DATASETS:
            inputs[f"online_{ds}"] = output_path(
                rules.neural_smooth.output.stats, method="online", dataset=ds, **smoothed
            )
    for key, method in (("raw", "raw"), ("smoothed", "neural")):
        inputs[key] = output_path(
            rules.neural_smooth.output.table, method=method, dataset=DATASETS[0], **smoothed
        )
    for v in REPORT_VARIANTS:
        inputs[f"curve_{v}"] = output_path(rules.train.output.loss_curve, variant=v)
    return inputs


def report_flags(wildcards, input):
    """Params function of report."""
    parts = [f"--candidate {c}={input[f'cand_{c}']}" for c in CANDIDATES]
    parts.append(f"--shape-metrics {input.shape_metrics}")
    parts += [
        f"--online-stats {ds}={input[f'online_{ds}']}" for ds in DATASETS if f"online_{ds}" in input.keys()
    ]
    parts.append(f"--raw {input.raw} --smoothed {input.smoothed}")
    parts += [f"--training-curve {v}={input[f'curve_{v}']}" for v in REPORT_VARIANTS]
    return " ".join(parts)


def report_out_dir(wildcards, output):
    """Params function of report: the folder of its outputs (that of output.report)."""
    return os.path.dirname(output.report)
