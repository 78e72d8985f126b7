"""The ``naslib-bayes`` command line.

Each subcommand lives in ``naslib_bayes/commands/<name>.py`` with ``register(subparsers)``;
this module only assembles them and turns bad input into one line on stderr with exit code 2.
Ctrl-C and SIGTERM stop a command the same way (one line, exit code 130 or 143).
"""

from __future__ import annotations

import _thread
import argparse
import atexit
import contextlib
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
from typing import Callable, NoReturn

from naslib_bayes.errors import UserError

PROG = "naslib-bayes"
#: Exit codes of a command stopped by Ctrl-C and by SIGTERM (128 + the signal's number).
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM
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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it unwinds exactly as Ctrl-C does."""


def _raise_terminated(signum, frame):
    # A second SIGTERM during the clean-up ends the process at once, as the user asked twice.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Turn SIGTERM into :class:`Terminated` for one command.

    Without this, SIGTERM ends the process where it stands: worker processes it started keep
    running and writing after it is gone. Only the main thread of the main process may set
    the handler; a worker (a one-shot comparison runs commands in its workers) keeps the
    default, so that its pool can end it with SIGTERM.
    """
    if threading.current_thread() is not threading.main_thread() or multiprocessing.parent_process() is not None:
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


#: Seconds before a stop dropped in a finalizer is delivered again: long enough for the unraisable
#: hook that saw it to have returned (raised inside the hook, it would be dropped again).
REDELIVERY_DELAY_S = 0.05


@contextlib.contextmanager
def stops_in_finalizers_delivered_again():
    """Deliver Ctrl-C and SIGTERM again when their handler ran inside a finalizer, for one command.

    Python runs a signal's handler at the next bytecode it executes, often a finalizer's (a
    progress bar's ``__del__`` as a function returns); the exception raised there cannot
    propagate, so Python printed it with a traceback ('Exception ignored in ...') and dropped it,
    and the command went on as if never stopped. Here it is raised again outside the finalizer,
    at the latest as the command ends.
    """
    previous = sys.unraisablehook
    undelivered: dict[str, type[KeyboardInterrupt] | None] = {"stop": None}  # dropped, not yet delivered again
    timers: list[threading.Timer] = []

    def deliver(signum: int) -> None:
        if undelivered.pop("stop", None) is None:  # delivered already, or the command has ended
            return
        if hasattr(signal, "pthread_kill"):  # a signal proper, which also cuts a blocking call (a sleep) short
            signal.pthread_kill(threading.main_thread().ident, signum)
        else:
            _thread.interrupt_main(signum)

    def redeliver(unraisable) -> None:
        stop = unraisable.exc_value
        if not isinstance(stop, KeyboardInterrupt) or threading.current_thread() is not threading.main_thread():
            return previous(unraisable)
        undelivered["stop"] = type(stop)
        signum = signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT
        if signum == signal.SIGTERM:
            signal.signal(signal.SIGTERM, _raise_terminated)  # it stood aside for a second SIGTERM
        timers.append(threading.Timer(REDELIVERY_DELAY_S, deliver, (signum,)))
        timers[-1].start()

    sys.unraisablehook = redeliver
    try:
        yield
    finally:
        sys.unraisablehook = previous
        stop = undelivered.pop("stop", None)  # from now on no timer delivers it
        for timer in timers:
            timer.cancel()
            timer.join()
    if stop is not None:  # the command ended before it was delivered again: it was stopped all the same
        raise stop()


#: What ``naslib-bayes`` says when Ctrl-C or SIGTERM stops it.
STOPPED_LINES = {signal.SIGINT: f"{PROG}: interrupted", signal.SIGTERM: f"{PROG}: terminated"}


def main(argv: list[str] | None = None) -> int:
    """The command line: a command's exit code, with one line on stderr for bad input (2), Ctrl-C
    (:data:`EXIT_INTERRUPTED`) or SIGTERM (:data:`EXIT_TERMINATED`)."""
    try:
        with sigterm_as_interrupt(), stops_in_finalizers_delivered_again():
            return run_command(argv)
    except Terminated:
        sys.stderr.write(f"{STOPPED_LINES[signal.SIGTERM]}\n")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        sys.stderr.write(f"{STOPPED_LINES[signal.SIGINT]}\n")
        return EXIT_INTERRUPTED


def run_program() -> NoReturn:
    """The ``naslib-bayes`` program: :func:`main` on the command line, and the process ends with its code.

    Python's own exit after a command (torch's teardown) takes a second or more, most of it with
    Ctrl-C and SIGTERM back at their default action: a Ctrl-C then killed the finished program by
    its signal, saying nothing. Here a signal until the end is answered as during the command (one
    line, 130 or 143; every file is written by then), and the process ends once the exit handlers
    (``atexit``) have run, without the teardown.
    """
    end_process_with(main)


def end_process_with(run: Callable[[], int], lines: dict[int, str] = STOPPED_LINES) -> NoReturn:
    """``run()``, then the end of the process with its exit code, a signal until then answered with
    its line (``lines``, by signal) and 130 / 143, without the interpreter's teardown; the program
    and the benchmark scripts end this way."""
    try:
        code = run()
    except BrokenPipeError:
        code = _reader_gone()
    _answer_late_signals(already_said=code in (EXIT_INTERRUPTED, EXIT_TERMINATED), code=code, lines=lines)
    _exit_now(code)


def _reader_gone() -> int:
    """Exit code 1 once the reader of the output has gone (``naslib-bayes list | head -1``), without
    the traceback of the BrokenPipeError: later writes and the final flush go nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 1


def _answer_late_signals(already_said: bool, code: int, lines: dict[int, str] = STOPPED_LINES) -> None:
    """Ctrl-C or SIGTERM from now on ends the process at once: with its line (``lines``, by signal)
    and code, or, after a program that already said it was stopped, quietly with that program's code."""

    def answer(signum, frame):
        stopped = EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED
        if not already_said:
            sys.stderr.write(f"{lines[signum]}\n")
        _flush_standard_streams()
        os._exit(code if already_said else stopped)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, answer)


def _exit_now(code: int) -> NoReturn:
    """What the interpreter's exit does that matters here (waiting for threads, ``atexit`` handlers,
    flushing the output), then the end of the process."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    _flush_standard_streams()
    os._exit(code)


def _flush_standard_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a reader gone (a closed pipe) has nothing left to lose
            stream.flush()


def run_command(argv: list[str] | None = None) -> int:
    """One command's exit code, or 2 with its line for bad input. Ctrl-C and SIGTERM
    (:class:`Terminated`) propagate: a command running others within it (a one-shot comparison's
    searches) stops as a whole and says so once."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for commands that record it
    args.held_folders = contextlib.ExitStack()  # the --out folders this command holds, released on return
    with _command_logging(args.verbose), args.held_folders:
        try:
            return int(args.run(args) or 0)
        except UserError as exc:
            sys.stderr.write(f"{PROG}: error: {exc}\n")
            return 2


if __name__ == "__main__":
    run_program()
