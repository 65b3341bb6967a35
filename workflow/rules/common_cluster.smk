# Cluster helpers (functions only; included by the Snakefile after common.smk): the start-up check of a
# SLURM run that no job asks for more than any node of the cluster has (SLURM would keep it PENDING
# forever and Snakemake would wait forever). Called by `onstart:` in the Snakefile; logic in
# src/mvhand/cluster.py.

import subprocess

from snakemake.exceptions import WorkflowError

from mvhand.cluster import (
    SINFO_FORMAT,
    JobRequest,
    group_request,
    parse_sinfo_nodes,
    requests_no_node_fits,
)

# memory of one cache_crops job (its rule's mem_mb; a job group asks for that times its simultaneous members)
CROPS_MEM_MB = 2000

# what to change when a rule's request is too large for every node
CLUSTER_FIXES = {
    "cache_crops": "lower crops.threads",
    "cache_crops (group)": "lower `cores` in the SLURM profile (CPUs and memory of a bundle of cache_crops jobs)",
    "train": "lower train.threads / train.num_workers (CPUs = processes x (threads + num_workers)) or train.gpus",
    "predict": "lower predict.threads / predict.num_workers, or set predict.device: cpu",
    "neural_smooth": "set smooth.device: cpu",
}


def slurm_requests():
    """The largest request of each non-local rule of this run (CPUs, memory, GPUs as the SLURM plugin
    submits them), plus cache_crops and its job groups from the config and the profile (its jobs appear only
    once the download has run)."""
    threads = int(config["crops"]["threads"])
    largest = {"cache_crops": JobRequest("cache_crops", threads)}
    bundle = workflow.group_settings.group_components.get("crops")
    if bundle:  # the cache_crops groups too (planned only after the download): a full bundle's request
        cores = int(workflow.resource_settings.cores or 1)
        largest["cache_crops (group)"] = group_request(
            "cache_crops (group)", int(bundle), cores, threads, CROPS_MEM_MB
        )
    for job in workflow.dag.needrun_jobs():
        if job.is_local:
            continue
        group = workflow.dag.get_job_group(job)
        if group is not None:  # a bundle of cache_crops jobs: one SLURM job asking for what they use together
            req = JobRequest(
                f"{job.rule.name} (group)",
                int(group.resources.get("_cores") or 1),
                int(group.resources.get("mem_mb") or 0),
                int(group.resources.get("gpu") or 0),
            )
        else:
            req = JobRequest(
                job.rule.name,
                int(job.resources.get("cpus_per_task") or job.threads),
                int(job.resources.get("mem_mb") or 0),
                int(job.resources.get("gpu") or 0),
            )
        old = largest.get(req.rule)
        if old is not None:  # the largest of each resource over the rule's jobs
            req = JobRequest(
                req.rule,
                max(old.cpus, req.cpus),
                max(old.mem_mb, req.mem_mb),
                max(old.gpus, req.gpus),
            )
        largest[req.rule] = req
    return list(largest.values())


def check_cluster_fits():
    """onstart: on SLURM, stop before submitting anything if a rule asks for more than any node has.

    Does nothing with other executors, or when `sinfo` is missing or lists no node.
    """
    plugin = workflow.executor_plugin
    if plugin is None or getattr(plugin, "name", "") != "slurm":
        return
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-o", SINFO_FORMAT], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return
    nodes = parse_sinfo_nodes(out)
    bad = requests_no_node_fits(slurm_requests(), nodes)
    if not nodes or not bad:
        return
    biggest = ", ".join(f"{n.name}: {n.cpus} CPUs, {n.mem_mb} MB, {n.gpus} GPUs" for n in nodes[:5])
    lines = [
        f"  {r.rule}: {r.cpus} CPUs, {r.mem_mb} MB, {r.gpus} GPUs -> "
        f"{CLUSTER_FIXES.get(r.rule, 'lower its resources')} (memory/time: set-resources in the profile)"
        for r in bad
    ]
    raise WorkflowError(
        "SLURM would keep these jobs PENDING forever: no node of this cluster has what they ask for "
        f"(nodes: {biggest}{', ...' if len(nodes) > 5 else ''}):\n" + "\n".join(lines)
    )
