# Model stages: train (per variant) and predict (per variant, dataset, split).
#   variant: baseline = no extrinsic translation noise (ablation), full = with (train.extrinsic_noise)
#   split:   pose_test, shape_test, or val (held-out training sequences listed in val_sequences.txt)
# Targets: `models` (both variants), `predictions` (every prediction table).
# `pretrained_weights` (local: it needs the internet) fetches train.pretrained for the train jobs.


localrules:
    models,
    predictions,
    pretrained_weights,


rule pretrained_weights:
    input:
        script=script_path("pretrained_weights.py"),
    output:
        weights="resources/pretrained/{backbone}/{pretrained}.safetensors",
    log:
        "logs/pretrained_weights/{backbone}/{pretrained}.log",
    wildcard_constraints:
        backbone=r"[A-Za-z0-9_]+",
        pretrained=r"[A-Za-z0-9_.]+",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "python {input.script} --backbone {wildcards.backbone} --pretrained {wildcards.pretrained}"
        " --out {output.weights:q} > {log} 2>&1"


rule train:
    input:
        script=script_path("train.py"),
        # the files train reads: the crop caches, named by the list files that its command carries
        crops=train_crop_files,
        crops_lists=train_crop_lists,
        pretrained=train_pretrained_input,
        mano=mano_files,
    output:
        model="results/train/{variant}/model.pt",
        val_sequences="results/train/{variant}/val_sequences.txt",
        metrics="results/train/{variant}/metrics.csv",
        loss_curve="results/train/{variant}/loss.png",
    log:
        "logs/train/{variant}.log",
    benchmark:
        "benchmarks/train.{variant}.tsv"
    wildcard_constraints:
        variant="|".join(MODEL_VARIANTS),
    conda:
        "../../envs/pipeline.yaml"
    threads: train_threads()
    resources:
        mem_mb=train_mem_mb(),
        runtime=1440,
        gpu=train_gpus(),
        cpus_per_task=train_cpus(),
        nodes=1,
    params:
        flags=train_flags,
        mano_dir=MANO_DIR,
        out_dir=train_out_dir,
        launcher=train_launcher,
    shell:
        "python {params.launcher}{input.script} --crops-list {input.crops_lists:q} --mano-dir {params.mano_dir:q}"
        " --out-dir {params.out_dir:q} --threads {threads} {params.flags} > {log} 2>&1"


rule predict:
    input:
        script=script_path("predict.py"),
        model=rules.train.output.model,
        val_sequences=rules.train.output.val_sequences,
        crops=predict_crop_files,
        crops_list=predict_crop_list,
        mano=mano_files,
    output:
        predictions="results/predict/{variant}/{dataset}/{split}.parquet",
    log:
        "logs/predict/{variant}/{dataset}/{split}.log",
    benchmark:
        "benchmarks/predict.{variant}.{dataset}.{split}.tsv"
    wildcard_constraints:
        variant="|".join(MODEL_VARIANTS),
        split="|".join(PREDICT_SPLITS),
    conda:
        "../../envs/pipeline.yaml"
    threads: predict_threads()
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=predict_gpus(),
        cpus_per_task=predict_cpus(),
    params:
        flags=predict_flags,
        mano_dir=MANO_DIR,
        sequences=predict_sequences_flag,
    shell:
        "python {input.script} --model {input.model:q} --crops-list {input.crops_list:q} --mano-dir {params.mano_dir:q}"
        " --out {output.predictions:q} --threads {threads} {params.sequences} {params.flags} > {log} 2>&1"


rule models:
    input:
        model_files,


rule predictions:
    input:
        prediction_files,
