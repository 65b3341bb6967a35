"""Malicious pickle payloads for the trust tests: unpickling one runs a shell command that creates a file."""

from __future__ import annotations

import os


class ShellPayload:
    """``pickle``-ing this and loading it back with a plain unpickler would run ``touch <marker>``.

    The tests put it into files mvhand reads (model files, weights) and assert that the marker never appears.
    """

    def __init__(self, marker: str | os.PathLike):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
