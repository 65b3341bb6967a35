"""Run :func:`mvhand.model.training.fit` from a JSON config, under ``torchrun`` (one process per rank).

Usage: ``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/_ddp_fit.py CFG.json
[--max-steps N]`` — the DDP tests' way to stop a distributed training after N steps (the train CLI has
no such flag; an interrupted job is what it simulates).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mvhand.model.training import TrainConfig, fit  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("config", help="JSON object of TrainConfig fields")
    p.add_argument("--max-steps", type=int, default=None)
    a = p.parse_args()
    with open(a.config) as fh:
        cfg = TrainConfig(**json.load(fh))
    fit(cfg, resume="auto", max_steps=a.max_steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
