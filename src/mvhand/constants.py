"""Constants of the challenge that every layer shares (spec/formats.md §0, §7).

* :data:`DATASETS`: the two datasets of the challenge, in the order mvhand processes and reports them.
* :data:`HAND_SIDES`: hand-side names by integer id (``0 = left``, ``1 = right``; string keys of the tar JSON).
* :data:`LANDMARKS_TO_EVAL`: indices (into the 20 canonical UmeTrack-order landmarks) that the metrics score:
  all but the wrist (index 5), spec/formats.md §7.
"""

from __future__ import annotations

DATASETS: tuple[str, ...] = ("umetrack", "hot3d")
HAND_SIDES: tuple[str, ...] = ("left", "right")
LANDMARKS_TO_EVAL: tuple[int, ...] = (0, 1, 2, 3, 4, *range(6, 20))
