"""Will the cluster ever run these jobs? A pre-flight check of SLURM requests against the nodes.

SLURM accepts a job that asks for more CPUs, memory or GPUs than any node of the cluster has and keeps it
PENDING forever (reason ``PartitionConfig``/``Resources``), and Snakemake then waits forever. The workflow
(``workflow/rules/common_cluster.smk``, at start-up of a SLURM run) compares each rule's largest request
with the nodes listed by ``sinfo`` and stops with a message naming the rule, the request and the config
keys to change, before anything is submitted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "SINFO_FORMAT",
    "JobRequest",
    "NodeSize",
    "group_request",
    "parse_sinfo_nodes",
    "requests_no_node_fits",
]

#: the `sinfo -h -N -o` format that :func:`parse_sinfo_nodes` reads: node name, CPUs, memory (MB), GRES
SINFO_FORMAT = "%N|%c|%m|%G"


@dataclass(frozen=True)
class NodeSize:
    """What one node offers: CPUs, memory (MB) and GPUs."""

    name: str
    cpus: int
    mem_mb: int
    gpus: int


@dataclass(frozen=True)
class JobRequest:
    """What one job asks for: CPUs (``--cpus-per-task``), memory (``--mem``, MB) and GPUs (``--gpus``)."""

    rule: str
    cpus: int
    mem_mb: int = 0
    gpus: int = 0

    def fits(self, node: NodeSize) -> bool:
        return self.cpus <= node.cpus and self.mem_mb <= node.mem_mb and self.gpus <= node.gpus


def _gpu_count(gres: str) -> int:
    """GPUs in a GRES string: ``gpu:a100:4(S:0-1),gpu:2,shard:8`` -> 6; ``(null)`` -> 0."""
    total = 0
    for item in gres.split(","):
        m = re.fullmatch(r"gpu(?::[^:(]+)?:(\d+)(?:\(.*\))?", item.strip())
        if m:
            total += int(m.group(1))
    return total


def parse_sinfo_nodes(text: str) -> list[NodeSize]:
    """Nodes from the output of ``sinfo -h -N -o "%N|%c|%m|%G"`` (a node listed in several partitions
    once); lines that do not parse are skipped."""
    nodes: dict[str, NodeSize] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4 or not parts[1].isdigit():
            continue
        mem = re.match(r"\d+", parts[2])
        if mem is None:
            continue
        nodes[parts[0]] = NodeSize(parts[0], int(parts[1]), int(mem.group()), _gpu_count(parts[3]))
    return list(nodes.values())


def requests_no_node_fits(requests: Iterable[JobRequest], nodes: Iterable[NodeSize]) -> list[JobRequest]:
    """The requests that no single node can satisfy (all of CPUs, memory and GPUs on one node)."""
    nodes = list(nodes)
    return [r for r in requests if not any(r.fits(n) for n in nodes)]


def group_request(rule: str, members: int, cores: int, threads: int, mem_mb: int) -> JobRequest:
    """What a Snakemake job group of ``members`` jobs of one rule asks SLURM for, before the group exists.

    The SLURM plugin submits a group job with ``--cpus-per-task`` = ``cores`` (the profile's ``cores`` or
    ``--cores``; measured on the one-node cluster of tests/integration/test_slurm_cluster.py: every bundle,
    of 1 or 2 members, asked for ``cores``), never less than one member's ``threads``. Memory is bounded by
    the members that can run side by side, ``p = max(1, min(members, cores // threads))``, times one
    member's ``mem_mb`` (an upper bound: the plugin was seen asking for one member's memory).

    Args:
        rule: name shown in messages (e.g. ``"cache_crops (group)"``).
        members: jobs per group (``group-components``); the largest group is the full bundle.
        cores: the profile's ``cores``.
        threads, mem_mb: what one member job uses.
    """
    parallel = max(1, min(members, cores // max(1, threads)))
    return JobRequest(rule, max(cores, threads), parallel * mem_mb)
