"""The ``naslib-bayes`` command line.

Each subcommand lives in ``naslib_bayes/commands/<name>.py`` with ``register(subparsers)``;
this module only assembles them and turns bad input into one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys

from naslib_bayes.errors import UserError

PROG = "naslib-bayes"
COMMAND_MODULES = ("list_optimizers", "search", "train", "meta_train", "compress", "compare", "naslib_run")


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line (no usage dump) with exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse's signature
        sys.stderr.write(f"{PROG}: error: {message}\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog=PROG, description="Bayesian neural architecture search: BayesNAS and TNAS.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"naslib_bayes.commands.{name}").register(subparsers)
    return parser


class _WarningFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = "warning" if record.levelno >= logging.WARNING else "info"
        return f"{PROG}: {level}: {record.getMessage()}"


@contextlib.contextmanager
def _command_logging(verbose: bool):
    """Show the package's warnings as one-line messages on stderr for one command only.

    The previous logger state is restored afterwards, so calling ``main`` from Python (tests,
    notebooks) leaves no handler behind bound to a stream that may since have been closed.
    """
    logger = logging.getLogger("naslib_bayes")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_WarningFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for commands that record it
    with _command_logging(args.verbose):
        try:
            return int(args.run(args) or 0)
        except UserError as exc:
            sys.stderr.write(f"{PROG}: error: {exc}\n")
            return 2
        except KeyboardInterrupt:
            sys.stderr.write(f"{PROG}: interrupted\n")
            return 130


if __name__ == "__main__":
    sys.exit(main())
