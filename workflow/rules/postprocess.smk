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
        predictions="results/predict/{variant}/{dataset}/{split}.parquet",
        manifest=rules.download.output.manifest,
    output:
        table="results/smooth/{variant}/{method}/{dataset}/{split}.parquet",
        stats="results/smooth/{variant}/{method}/{dataset}/{split}.json",
    log:
        "logs/neural_smooth/{variant}/{method}/{dataset}/{split}.log",
    benchmark:
        "benchmarks/neural_smooth.{variant}.{method}.{dataset}.{split}.tsv"
    params:
        flags=stage_flags(smooth_settings()),
        mano_dir=MANO_DIR,
    threads: smooth_workers()  # processes of one torch thread each: more threads spin-wait on busy cores
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=smooth_gpus(),
    conda:
        "../../envs/pipeline.yaml"
    shell:
        "python {input.script} --predictions {input.predictions:q} --mano-dir {params.mano_dir:q}"
        " --out {output.table:q} --method {wildcards.method} --threads 1 {params.flags} > {log} 2>&1"


rule package_submission:
    input:
        unpack(package_inputs),
        script=script_path("package_submission.py"),
    output:
        pose="results/submission/{split}/{variant}-{method}/pose_submission.tar.gz",
        shape="results/submission/{split}/{variant}-{method}/shape_submission.tar.gz",
    log:
        "logs/package_submission/{split}/{variant}-{method}.log",
    params:
        flags=package_flags,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/pipeline.yaml"
    shell:
        "python {input.script} {params.flags} --out-pose {output.pose:q} --out-shape {output.shape:q} > {log} 2>&1"


rule eval_gt:
    input:
        unpack(eval_gt_inputs),
        script=script_path("eval_gt.py"),
    output:
        gt="results/evaluate/{split}/gt.tar.gz",
    log:
        "logs/eval_gt/{split}.log",
    params:
        flags=eval_gt_flags,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        "../../envs/pipeline.yaml"
    shell:
        "python {input.script} {params.flags} --out {output.gt:q} > {log} 2>&1"


rule evaluate:
    input:
        script=script_path("evaluate.py"),
        gt="results/evaluate/{split}/gt.tar.gz",
        submission="results/submission/{split}/{variant}-{method}/{track}_submission.tar.gz",
    output:
        metrics="results/evaluate/{split}/{variant}-{method}/{track}.json",
    log:
        "logs/evaluate/{split}/{variant}-{method}.{track}.log",
    params:
        phase=evaluate_phase,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/pipeline.yaml"
    shell:
        "python {input.script} --gt {input.gt:q} --submission {input.submission:q} --phase {params.phase}"
        " --out {output.metrics:q} > {log} 2>&1"


rule submission:
    input:
        pose=f"results/submission/pose_test/{FINAL_CANDIDATE}/pose_submission.tar.gz",
        shape=f"results/submission/pose_test/{FINAL_CANDIDATE}/shape_submission.tar.gz",
    output:
        pose="results/submission/pose_submission.tar.gz",
        shape="results/submission/shape_submission.tar.gz",
    log:
        "logs/submission.log",
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../../envs/pipeline.yaml"
    shell:
        "(cp {input.pose:q} {output.pose:q} && cp {input.shape:q} {output.shape:q}) > {log} 2>&1"


rule report:
    input:
        unpack(report_inputs),
        script=script_path("report.py"),
    output:
        report="results/report/report.md",
        scores="results/report/scores.json",
        # shown by `snakemake --report report.html` (captions in workflow/report/)
        table1=report("results/report/table1.tsv", caption="../report/table1.rst", category="1. Table 1"),
        pck=report("results/report/pck_curves.png", caption="../report/pck_curves.rst", category="2. Evaluation"),
        per_sequence=report(
            "results/report/per_sequence_mpjpe.png", caption="../report/per_sequence.rst", category="2. Evaluation"
        ),
        trajectory=report(
            "results/report/trajectory.png", caption="../report/trajectory.rst", category="3. Neural Smooth"
        ),
        curves=[
            report(f"results/report/loss_{v}.png", caption="../report/training_curve.rst", category="4. Training",
                   subcategory=v)
            for v in REPORT_VARIANTS
        ],
    log:
        "logs/report.log",
    params:
        flags=report_flags,
        mano_dir=MANO_DIR,
    threads: 2
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../../envs/pipeline.yaml"
    shell:
        "python {input.script} --gt {input.gt:q} --mano-dir {params.mano_dir:q} {params.flags}"
        " --out-dir results/report > {log} 2>&1"


FINAL_TARGETS.extend(
    [
        "results/submission/pose_submission.tar.gz",
        "results/submission/shape_submission.tar.gz",
        "results/report/report.md",
    ]
)
