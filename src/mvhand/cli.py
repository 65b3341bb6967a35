"""Shared entry-point plumbing of the stage scripts in ``workflow/scripts/``."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from mvhand.io_utils import InputError, read_path_list

__all__ = ["add_file_list_arguments", "default_of", "exit_on_sigterm", "listed_files", "run", "setup_logging"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging() -> None:
    """INFO-level logging to stderr in the stage scripts' common format (timestamp, level, logger)."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)


def default_of(owner: type | Callable, name: str) -> Any:
    """Default of dataclass field or keyword parameter ``name`` of ``owner``: the one source of a stage setting.

    Stage CLIs take their argparse defaults from here (``default=default_of(TrainConfig, "epochs")``), so that a
    stage run by hand uses the values the pipeline uses; tests/test_config_defaults.py checks that the config
    schema's defaults agree.

    Raises:
        KeyError: ``owner`` has no such field / parameter, or it has no default.
    """
    if dataclasses.is_dataclass(owner):
        f = next((f for f in dataclasses.fields(owner) if f.name == name), None)
        if f is not None and f.default is not dataclasses.MISSING:
            return f.default
        if f is not None and f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
    else:
        p = inspect.signature(owner).parameters.get(name)
        if p is not None and p.default is not inspect.Parameter.empty:
            return p.default
    raise KeyError(f"{getattr(owner, '__qualname__', owner)} has no default for {name!r}")


def exit_on_sigterm() -> None:
    """Turn SIGTERM (Snakemake cancelling a job, SLURM's ``scancel`` / time limit) into ``SystemExit(143)``.

    Python's default action for SIGTERM kills the process on the spot: no ``finally`` block runs, so worker
    pools, fork servers and temporary files outlive the job. As an exception, the termination unwinds like
    Ctrl-C does: :func:`mvhand.io_utils.atomic_path` removes its temporary file and process pools shut their
    workers down. Only the main thread of the main interpreter can install it (elsewhere this is a no-op).
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
        sys.stderr.write("terminated (SIGTERM): stopping workers and removing unfinished output\n")
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


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
    exit_on_sigterm()
    try:
        return main(argv)
    except (InputError, ValueError, FileNotFoundError) as exc:
        logging.getLogger(name).error("%s", exc)
        return 1


def add_file_list_arguments(parser: argparse.ArgumentParser, name: str, what: str) -> None:
    """Add ``--<name> FILE...`` (files on the command line) and ``--<name>-list LIST...`` (list files, one
    path per line, :func:`mvhand.io_utils.write_path_list`) to a stage parser; read both with
    :func:`listed_files`. The workflow passes list files, so that ``snakemake -n -p`` prints a short
    command however many files a stage reads; both stay usable by hand."""
    parser.add_argument(f"--{name}", nargs="+", default=[], metavar="FILE", help=what)
    parser.add_argument(
        f"--{name}-list",
        nargs="+",
        default=[],
        metavar="LIST",
        help=f"list files naming more of them, one path per line ({what})",
    )


def listed_files(files: list[str], lists: list[str], flag: str) -> list[str]:
    """The files given directly, then those named by each list file, in order (duplicates dropped).

    Raises:
        InputError: a list file is missing/unreadable, or no file at all is given (``flag`` names the
            options in the message).
    """
    out = list(files)
    for path in lists:
        out.extend(read_path_list(path))
    out = list(dict.fromkeys(out))
    if not out:
        raise InputError(None, f"no input file: give --{flag} FILE... or --{flag}-list LIST...", None)
    return out
