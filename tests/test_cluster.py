"""Pre-flight check of SLURM requests against the cluster's nodes (mvhand.cluster)."""

from __future__ import annotations

from mvhand.cluster import JobRequest, NodeSize, group_request, parse_sinfo_nodes, requests_no_node_fits

SINFO = """\
cpu01|64|257000|(null)
cpu01|64|257000|(null)
gpu01|128|1031000|gpu:a100:8(S:0-1)
gpu02|32|190000+|gpu:v100:2,gpu:t4:1,shard:16
down|N/A|0|(null)
"""


def test_parse_sinfo_nodes():
    nodes = parse_sinfo_nodes(SINFO)
    assert nodes == [
        NodeSize("cpu01", 64, 257000, 0),  # listed once although in two partitions
        NodeSize("gpu01", 128, 1031000, 8),
        NodeSize("gpu02", 32, 190000, 3),  # two GPU types add up; shards are not GPUs
    ]
    assert parse_sinfo_nodes("") == [] and parse_sinfo_nodes("garbage\n") == []


def test_requests_that_no_node_fits():
    nodes = parse_sinfo_nodes(SINFO)
    ok = [
        JobRequest("cache_crops", 64),
        JobRequest("train", 64, 128000, 8),  # paper preset: only gpu01
        JobRequest("predict", 8, 8000, 1),
    ]
    assert requests_no_node_fits(ok, nodes) == []
    too_big = [
        JobRequest("cache_crops", 129),  # more CPUs than any node
        JobRequest("train", 16, 2_000_000, 8),  # more memory than any node
        JobRequest("predict", 1, 0, 9),  # more GPUs than any node
    ]
    assert requests_no_node_fits(too_big, nodes) == too_big
    # CPUs on one node, the GPU on another: both are needed on the same node
    cpu_and_gpu_apart = [n for n in nodes if n.name != "gpu01"]
    assert requests_no_node_fits([JobRequest("train", 64, 1000, 1)], cpu_and_gpu_apart) == [
        JobRequest("train", 64, 1000, 1)
    ]
    assert requests_no_node_fits([JobRequest("x", 1)], []) == [JobRequest("x", 1)]


def test_group_request_asks_for_cores_and_the_simultaneous_members_memory():
    # the shipped profile: bundles of 64, cores 16, crops.threads 1 (2,000 MB each): 16 side by side
    assert group_request("g", 64, 16, 1, 2000) == JobRequest("g", 16, 32000)
    # cores 16 on the 2-CPU test node: refused before anything is submitted
    assert requests_no_node_fits([group_request("g", 64, 16, 2, 2000)], [NodeSize("vm", 2, 20489, 0)])
    # cores = the node's CPUs fits, whatever the bundle's size
    assert group_request("g", 64, 2, 1, 2000) == JobRequest("g", 2, 4000)
    assert group_request("g", 1, 2, 1, 2000) == JobRequest("g", 2, 2000)
    # a member larger than cores runs alone and needs its own threads
    assert group_request("g", 64, 4, 8, 100) == JobRequest("g", 8, 100)
