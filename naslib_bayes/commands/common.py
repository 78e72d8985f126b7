"""Argument conventions shared by every subcommand.

``--dataset`` names the data the search sees; ``--seed S`` is one seed; ``--seeds`` is a count
N (seeds 0..N-1) or a list ``0,3,7``; ``--out`` is always a directory.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import yaml

from naslib_bayes import results
from naslib_bayes.errors import UserError

logger = logging.getLogger("naslib_bayes")


def parse_seeds(text: str) -> list[int]:
    """``"5"`` -> [0, 1, 2, 3, 4]; ``"0,3,7"`` -> [0, 3, 7]."""
    try:
        if "," in text:
            seeds = [int(tok) for tok in text.split(",") if tok.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a count or a comma-separated list, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds needs distinct non-negative seeds, got {text!r}")
    return seeds


def _int_at_least(minimum: int, what: str):
    """An argparse type for integers >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}")
        return value

    return parse


positive_int = _int_at_least(1, "positive")
non_negative_int = _int_at_least(0, "non-negative")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def key_value(text: str) -> tuple[str, Any]:
    """``--opt k=5`` -> ("k", 5); the value is read as YAML (numbers, booleans, lists)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--opt takes KEY=VALUE, got {text!r}")
    try:
        return key.replace("-", "_"), yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"--opt {key}: cannot parse value {value!r}") from None


def add_seed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")


def add_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DIR/result.json")


def prepare_out(out: Path, overwrite: bool) -> Path:
    """Create ``out``; refuse to replace a result already written there unless asked."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory")
    if (out / results.RESULT_FILE).exists() and not overwrite:
        raise UserError(f"{out / results.RESULT_FILE} already exists; choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    return out


def warn(message: str) -> None:
    logger.warning(message)
