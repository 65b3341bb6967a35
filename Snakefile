# mvhand: multi-view egocentric 3D hand tracking (ECCV 2024 challenge, 1st-place method of Zou et al.)
#
# Stages and outputs (see docs/workflow.md):
#   download       resources/data/<dataset>/{train,pose_test,shape_test}/*.tar + manifest.json
#   cache_crops    results/crops/<dataset>/<split>/<sequence>.parquet      (target: crops)
#   train/predict  results/train/, results/predict/                        (workflow/rules/model.smk)
#   postprocess    results/smooth/, results/submission/, results/report/  (workflow/rules/postprocess.smk)
# Logs: logs/<rule>/...; per-job timings: benchmarks/<rule>.*.tsv.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


# `snakemake --report report.html`: results marked report() in the rules, with captions in workflow/report/
report: "workflow/report/workflow.rst"


# Python helpers (functions and constants, no rules): config validation and the shared helpers first,
# then those of each topic and of cluster runs.
include: "workflow/rules/common.smk"
include: "workflow/rules/common_model.smk"
include: "workflow/rules/common_postprocess.smk"
include: "workflow/rules/common_cluster.smk"
# Rules, one file per topic.
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/postprocess.smk"


# On SLURM: stop at once if a job asks for more than any node has (it would pend forever); common_cluster.smk
onstart:
    check_cluster_fits()


# The default target: every crop cache, model and prediction table of the configured datasets, variants
# and splits (input functions in common*.smk), the final submission archives and the report.
rule all:
    default_target: True
    input:
        crop_files,
        model_files,
        prediction_files,
        rules.submission.output,
        rules.report.output.report,
