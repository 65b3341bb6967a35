# Post-processing stages: neural_smooth (Neural Smooth offline/online and the filter baselines),
# package_submission (validated challenge archives per candidate), eval_gt + evaluate (local scoring
# with mvhand's evaluator), submission (the final archives) and report (Table 1 and plots).
# A candidate is "<variant>-<method>": variant = training variant (baseline | full), method = raw |
# neural | online | one_euro | savgol.


localrules:
    submission,


rule neural_smooth:
    input:
        script=script_path("neural_smooth.py"),
        predictions=rules.predict.output.predictions,
        mano=mano_files,
    output:
        table="results/smooth/{variant}/{method}/{dataset}/{split}.parquet",
        stats="results/smooth/{variant}/{method}/{dataset}/{split}.json",
    log:
        "logs/neural_smooth/{variant}/{method}/{dataset}/{split}.log",
    benchmark:
        "benchmarks/neural_smooth.{variant}.{method}.{dataset}.{split}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: smooth_workers()  # processes of one torch thread each: more threads spin-wait on busy cores
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=smooth_gpus(),
    params:
        flags=stage_flags(section_settings("smooth")),
        mano_dir=MANO_DIR,
    shell:
        "python {input.script} --predictions {input.predictions:q} --mano-dir {params.mano_dir:q}"
        " --out {output.table:q} --method {wildcards.method} --threads 1 {params.flags} > {log} 2>&1"


rule package_submission:
    input:
        unpack(package_inputs),
        tars=package_tars,
        script=script_path("package_submission.py"),
    output:
        pose="results/submission/{split}/{variant}-{method}/pose_submission.tar.gz",
        shape="results/submission/{split}/{variant}-{method}/shape_submission.tar.gz",
    log:
        "logs/package_submission/{split}/{variant}-{method}.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        flags=package_flags,
    shell:
        "python {input.script} {params.flags} --out-pose {output.pose:q} --out-shape {output.shape:q} > {log} 2>&1"


rule eval_gt:
    input:
        unpack(eval_gt_inputs),
        data=eval_gt_data,
        script=script_path("eval_gt.py"),
    output:
        gt="results/evaluate/{split}/gt.tar.gz",
    log:
        "logs/eval_gt/{split}.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        flags=eval_gt_flags,
    shell:
        "python {input.script} {params.flags} --out {output.gt:q} > {log} 2>&1"


rule evaluate:
    input:
        script=script_path("evaluate.py"),
        gt=rules.eval_gt.output.gt,
        submission=evaluate_submission,
    output:
        metrics="results/evaluate/{split}/{variant}-{method}/{track}.json",
    log:
        "logs/evaluate/{split}/{variant}-{method}.{track}.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        phase=evaluate_phase,
    shell:
        "python {input.script} --gt {input.gt:q} --submission {input.submission:q} --phase {params.phase}"
        " --out {output.metrics:q} > {log} 2>&1"


rule submission:
    input:
        pose=final_submission("pose"),
        shape=final_submission("shape"),
    output:
        pose="results/submission/pose_submission.tar.gz",
        shape="results/submission/shape_submission.tar.gz",
    log:
        "logs/submission.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    shell:
        "(cp {input.pose:q} {output.pose:q} && cp {input.shape:q} {output.shape:q}) > {log} 2>&1"


rule report:
    input:
        unpack(report_inputs),
        mano=mano_files,
        script=script_path("report.py"),
    output:
        report="results/report/report.md",
        scores="results/report/scores.json",
        shape="results/report/shape.tsv",  # with table1.tsv, the source of README.md's results block
        # shown by `snakemake --report report.html` (captions in workflow/report/)
        table1=report("results/report/table1.tsv", caption="../report/table1.rst", category="1. Table 1"),
        pck=report(
            "results/report/pck_curves.png", caption="../report/pck_curves.rst", category="2. Evaluation"
        ),
        per_sequence=report(
            "results/report/per_sequence_mpjpe.png",
            caption="../report/per_sequence.rst",
            category="2. Evaluation",
        ),
        trajectory=report(
            "results/report/trajectory.png", caption="../report/trajectory.rst", category="3. Neural Smooth"
        ),
        curves=[
            report(
                f"results/report/loss_{v}.png",
                caption="../report/training_curve.rst",
                category="4. Training",
                subcategory=v,
            )
            for v in REPORT_VARIANTS
        ],
    log:
        "logs/report.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        flags=report_flags,
        mano_dir=MANO_DIR,
        out_dir=report_out_dir,
    shell:
        "python {input.script} --gt {input.gt:q} --mano-dir {params.mano_dir:q} {params.flags}"
        " --out-dir {params.out_dir:q} > {log} 2>&1"
