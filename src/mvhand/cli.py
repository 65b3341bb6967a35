"""Shared entry-point plumbing of the stage scripts in ``workflow/scripts/``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from mvhand.io_utils import InputError

__all__ = ["run", "setup_logging"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging() -> None:
    """INFO-level logging to stderr in the stage scripts' common format (timestamp, level, logger)."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)


def run(main: Callable[[list[str] | None], int], name: str, argv: list[str] | None = None) -> int:
    """Run a stage's ``main(argv)`` with logging to stderr; bad input ends in one clear line.

    Args:
        main: the script's ``main``; returns the exit status.
        name: logger name (the rule name).
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        ``main``'s status, or 1 after logging an :class:`InputError`, ``ValueError`` or missing file
        (whose message names the culprit and the fix) — no traceback for user errors.
    """
    setup_logging()
    try:
        return main(argv)
    except (InputError, ValueError, FileNotFoundError) as exc:
        logging.getLogger(name).error("%s", exc)
        return 1
