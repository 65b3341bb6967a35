# Data stages: download (checkpoint: writes the sequence manifest), cache_crops (one Parquet crop
# cache per sequence) and crop_list (the list of a split's crop files, read by train and predict so that
# their command lines stay short). Aggregator targets: `downloads`, `crops`.
# cache_crops reads only its own tar: the manifest is read at planning time (sequences_of), never as a job
# input, so a re-run of `download` that rewrites the manifest with the same sequences re-crops nothing.


localrules:
    download,
    downloads,
    crops,
    crop_list,


checkpoint download:
    input:
        script=script_path("download.py"),
    output:
        manifest=f"{DATA_ROOT}/{{dataset}}/manifest.json",
    log:
        "logs/download/{dataset}.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 2  # the synthetic generator uses up to 2 processes
    resources:
        mem_mb=4000,
        runtime=240,
    params:
        flags=download_flags,
        output_dir=data_root,
        mano_dir=MANO_DIR,
    shell:
        "python {input.script} --dataset {wildcards.dataset} --output-dir {params.output_dir:q}"
        " --mano-dir {params.mano_dir:q} {params.flags} > {log} 2>&1"


rule cache_crops:
    input:
        script=script_path("cache_crops.py"),
        tar=SEQUENCE_TAR,
    output:
        crops="results/crops/{dataset}/{split}/{sequence}.parquet",
    log:
        "logs/cache_crops/{dataset}/{split}/{sequence}.log",
    benchmark:
        "benchmarks/cache_crops.{dataset}.{split}.{sequence}.tsv"
    # on SLURM (group-components in the profile): bundles of sequences per cluster job; common.smk
    group:
        crops_group
    conda:
        "../../envs/pipeline.yaml"
    threads: config["crops"]["threads"]
    resources:
        mem_mb=CROPS_MEM_MB,
        runtime=60,
    params:
        flags=stage_flags(section_settings("crops")),
    shell:
        "python {input.script} --input {input.tar:q} --output {output.crops:q}"
        " --dataset {wildcards.dataset} --threads {threads} {params.flags} > {log} 2>&1"


rule crop_list:
    input:
        crops=split_crop_files,
    output:
        crops_list="results/crops/{dataset}/{split}.txt",
    log:
        "logs/crop_list/{dataset}/{split}.log",
    wildcard_constraints:
        split="|".join(SPLITS),
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    run:
        write_crop_list(output.crops_list, input.crops, log[0])


rule downloads:
    input:
        manifest_files,


rule crops:
    input:
        crop_files,
