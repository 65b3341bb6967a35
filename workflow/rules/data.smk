# Data stages: download (checkpoint: writes the sequence manifest) and cache_crops (one Parquet crop
# cache per sequence). Aggregator targets: `downloads`, `crops`.


localrules:
    download,
    downloads,
    crops,


checkpoint download:
    input:
        script=script_path("download.py"),
    output:
        manifest=f"{DATA_ROOT}/{{dataset}}/manifest.json",
    log:
        "logs/download/{dataset}.log",
    params:
        flags=stage_flags(download_settings()),
        output_dir=data_root,
        mano_dir=MANO_DIR,
    threads: 2  # the synthetic generator uses up to 2 processes
    resources:
        mem_mb=4000,
        runtime=240,
    conda:
        "../../envs/pipeline.yaml"
    shell:
        "python {input.script} --dataset {wildcards.dataset} --output-dir {params.output_dir:q}"
        " --mano-dir {params.mano_dir:q} {params.flags} > {log} 2>&1"


rule cache_crops:
    input:
        script=script_path("cache_crops.py"),
        manifest=rules.download.output.manifest,
        tar=f"{DATA_ROOT}/{{dataset}}/{{split}}/{{sequence}}.tar",
    output:
        crops="results/crops/{dataset}/{split}/{sequence}.parquet",
    log:
        "logs/cache_crops/{dataset}/{split}/{sequence}.log",
    benchmark:
        "benchmarks/cache_crops.{dataset}.{split}.{sequence}.tsv"
    params:
        flags=stage_flags(crops_settings()),
    threads: config["crops"]["threads"]
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        "../../envs/pipeline.yaml"
    shell:
        "python {input.script} --input {input.tar:q} --output {output.crops:q}"
        " --dataset {wildcards.dataset} --threads {threads} {params.flags} > {log} 2>&1"


rule downloads:
    input:
        manifest_files,


rule crops:
    input:
        crop_files,
