# Helpers of the model stages (train, predict; rules in model.smk): functions and constants only,
# included by the Snakefile after common.smk.

PREDICT_SPLITS = ("pose_test", "shape_test", "val")


def model_variants():
    """Variants to train (train.variants)."""
    return list(config["train"]["variants"])


def predict_splits():
    """Splits to predict (predict.splits)."""
    return list(config["predict"]["splits"])


def train_flags(wildcards):
    """Flags of train.py for one variant; `baseline` forces --extrinsic-noise 0; `gpus: 0` forces --device cpu;
    the backbone weights are passed as --pretrained-file (train_pretrained_file)."""
    settings = section_settings("train")
    if wildcards.variant == "baseline":
        settings["extrinsic_noise"] = 0.0
    if train_gpus() == 0 and settings["device"] != "cpu":
        settings["device"] = "cpu"
    settings.pop("pretrained", None)
    settings["pretrained_file"] = train_pretrained_file()
    return stage_flags(settings)


def train_pretrained_file(wildcards=None):
    """Backbone weights read by train: train.pretrained_file, else the file the local rule
    `pretrained_weights` fetches for train.pretrained (resources/pretrained/<backbone>/<pretrained>.safetensors),
    else "" (random initialisation)."""
    train = config["train"]
    if train["pretrained_file"]:
        return train["pretrained_file"]
    if train["pretrained"]:
        return f"resources/pretrained/{train['backbone']}/{train['pretrained']}.safetensors"
    return ""


def train_pretrained_input(wildcards):
    """Input function of train: the backbone weights file, if any."""
    return train_pretrained_file() or []


def predict_flags(wildcards):
    """Flags of predict.py (the predict: section)."""
    return stage_flags(section_settings("predict"))


# ---- what the model jobs request (resources derived from the config; docs/workflow.md "Cluster") -----
# A job asks for a GPU exactly when its stage runs on one (device `auto` or `cuda`), and for as many CPUs
# as it keeps busy: per process, its torch threads plus its DataLoader worker processes.


def train_gpus():
    """GPUs of the train job (resource `gpu`): 0 with `train.device: cpu` or `train.gpus: 0`, else train.gpus
    (`gpus: 0` with `device: cuda` is refused by check_config)."""
    train = config["train"]
    return 0 if train["device"] == "cpu" else int(train["gpus"])


def train_processes():
    """Training processes of the job: one per GPU (DDP through torchrun) on GPUs, one on the CPU."""
    return max(1, train_gpus())


def train_launcher(wildcards):
    """Nothing for one process, `-m torch.distributed.run --standalone --nproc_per_node N ` for N GPUs (DDP)."""
    n = train_processes()
    return "" if n == 1 else f"-m torch.distributed.run --standalone --nproc_per_node {n} "


def train_threads():
    """torch CPU threads of each training process (train.threads; the rule's `threads`)."""
    return int(config["train"]["threads"])


def train_cpus():
    """CPUs of the train job (resource `cpus_per_task`): processes x (torch threads + DataLoader workers)."""
    workers = int(config["train"]["num_workers"])
    return train_processes() * (train_threads() + workers)


def train_mem_mb():
    """Memory of the train job, MB (resource `mem_mb`): 16 GB per training process."""
    return 16000 * train_processes()


def predict_threads():
    """torch CPU threads of predict (predict.threads; the rule's `threads`)."""
    return int(config["predict"]["threads"])


def predict_gpus():
    """GPUs of a predict job (resource `gpu`): 0 with `predict.device: cpu`, else 1."""
    return 0 if config["predict"]["device"] == "cpu" else 1


def predict_cpus():
    """CPUs of a predict job (resource `cpus_per_task`): torch threads + DataLoader workers."""
    return predict_threads() + int(config["predict"]["num_workers"])


def train_crop_files(wildcards):
    """Input function: the train-split crop caches of every configured dataset."""
    files = []
    for dataset in DATASETS:
        files.extend(crop_files_for(dataset, "train"))
    return files


def train_crop_lists(wildcards):
    """Input function: the list files of the train-split crop caches (one per dataset; rule crop_list)."""
    return [crop_list_file(dataset, "train") for dataset in DATASETS]


def predict_crop_files(wildcards):
    """Input function: crop caches read by predict (val = the train split's caches)."""
    split = "train" if wildcards.split == "val" else wildcards.split
    return crop_files_for(wildcards.dataset, split)


def predict_crop_list(wildcards):
    """Input function: the list file of the crop caches read by predict (val = the train split's)."""
    return crop_list_file(wildcards.dataset, "train" if wildcards.split == "val" else wildcards.split)


def predict_sequences_flag(wildcards, input):
    """`--sequences-file <val_sequences.txt>` for the val split, nothing otherwise."""
    if wildcards.split == "val":
        return f"--sequences-file {input.val_sequences}"
    return ""


def train_out_dir(wildcards, output):
    """Params function of train: its output folder (`results/train/<variant>`, that of output.model)."""
    return os.path.dirname(output.model)


def prediction_files(wildcards=None):
    """Every prediction table of the configured variants, datasets and splits (rule predict)."""
    return expand(
        rules.predict.output.predictions, variant=model_variants(), dataset=DATASETS, split=predict_splits()
    )


def model_files(wildcards=None):
    """The model of every configured training variant (rule train)."""
    return expand(rules.train.output.model, variant=model_variants())
