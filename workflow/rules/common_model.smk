# Helpers of the model stages (train, predict); included by common.smk, rules in model.smk.

MODEL_VARIANTS = ("baseline", "full")
PREDICT_SPLITS = ("pose_test", "shape_test", "val")
# Keys of the train/predict sections that select jobs rather than set flags of the stage scripts.
MODEL_WORKFLOW_KEYS = frozenset({"variants", "splits", "gpus"})


def model_variants():
    """Variants to train (train.variants, default both)."""
    return list((config.get("train") or {}).get("variants", MODEL_VARIANTS))


def predict_splits():
    """Splits to predict (predict.splits, default pose_test, shape_test and val)."""
    return list((config.get("predict") or {}).get("splits", PREDICT_SPLITS))


def train_flags(wildcards):
    """Flags of train.py for one variant; `baseline` forces --extrinsic-noise 0."""
    settings = {k: v for k, v in train_settings().items() if k not in MODEL_WORKFLOW_KEYS}
    if wildcards.variant == "baseline":
        settings["extrinsic_noise"] = 0.0
    return stage_flags(settings)


def predict_flags(wildcards):
    """Flags of predict.py (the predict: section)."""
    return stage_flags({k: v for k, v in predict_settings().items() if k not in MODEL_WORKFLOW_KEYS})


def train_launcher(wildcards):
    """Nothing for one process, `-m torch.distributed.run --standalone --nproc_per_node N ` for N GPUs (DDP)."""
    gpus = int((config.get("train") or {}).get("gpus", 1))
    return "" if gpus <= 1 else f"-m torch.distributed.run --standalone --nproc_per_node {gpus} "


def train_gpus():
    """GPUs the train job asks for (resource `gpu`, e.g. the SLURM profile's GPU request)."""
    return int((config.get("train") or {}).get("gpus", 1))


def train_threads():
    return int((config.get("train") or {}).get("threads", 2))


def predict_threads():
    return int((config.get("predict") or {}).get("threads", 2))


def train_crop_files(wildcards):
    """Input function: the train-split crop caches of every configured dataset."""
    files = []
    for dataset in DATASETS:
        files.extend(crop_files_for(dataset, "train"))
    return files


def predict_crop_files(wildcards):
    """Input function: crop caches read by predict (val = the train split's caches)."""
    split = "train" if wildcards.split == "val" else wildcards.split
    return crop_files_for(wildcards.dataset, split)


def predict_sequences_flag(wildcards, input):
    """`--sequences-file <val_sequences.txt>` for the val split, nothing otherwise."""
    if wildcards.split == "val":
        return f"--sequences-file {input.val_sequences}"
    return ""


def train_out_dir(wildcards):
    return f"results/train/{wildcards.variant}"


def prediction_files(wildcards=None):
    """Every prediction table of the configured variants, datasets and splits."""
    return [
        f"results/predict/{variant}/{dataset}/{split}.parquet"
        for variant in model_variants()
        for dataset in DATASETS
        for split in predict_splits()
    ]


def model_files(wildcards=None):
    return [f"results/train/{variant}/model.pt" for variant in model_variants()]


FINAL_TARGETS.append(model_files)
FINAL_TARGETS.append(prediction_files)
