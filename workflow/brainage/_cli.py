"""Shared argparse types and logging set-up for every ``python -m brainage.<stage>``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from brainage.errors import DownloadError, PreprocessError


def existing_file(value: str) -> Path:
    """argparse type: a path that must exist and be a file."""
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"file not found: {value}")
    return path


def existing_dir(value: str) -> Path:
    """argparse type: a path that must exist and be a directory."""
    path = Path(value)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"directory not found: {value}")
    return path


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1 (threads, counts)."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return number


def json_object(value: str) -> dict:
    """argparse type: a JSON object given inline (the rule passes its config sub-tree)."""
    try:
        obj = json.loads(value)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {value[:80]}") from err
    if not isinstance(obj, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, found {type(obj).__name__}")
    return obj


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr (the rule redirects it to its ``log:`` file)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv``, set up logging and call the chosen verb's ``func(args)``.

    Returns the process exit code: 0 on success, 1 with one clear log line on a
    ``ValueError`` (``InputDataError``/``ConfigError`` included), a ``DownloadError``, a
    ``PreprocessError`` or a missing file.
    """
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        args.func(args)
    except (ValueError, DownloadError, PreprocessError, FileNotFoundError) as err:
        logging.getLogger(parser.prog).error("%s", err)
        return 1
    return 0
