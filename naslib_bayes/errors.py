"""Errors that the command line reports as one line on stderr with exit code 2."""

import contextlib
import sys

#: Longest cause :func:`cause` quotes; library messages (torch's unpickling errors) run to pages.
MAX_CAUSE_CHARS = 160


class UserError(ValueError):
    """Bad input from a user: a file, field, value or argument. Its message names the thing."""


def cause(exc: BaseException) -> str:
    """``"TypeName: first line of the message"``, shortened: why a library refused a user's input."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= MAX_CAUSE_CHARS else text[: MAX_CAUSE_CHARS - 3] + "..."


@contextlib.contextmanager
def exit_on_user_error():
    """For scripts: a :class:`UserError` inside becomes ``error: ...`` on stderr and exit code 2.

    What ``naslib-bayes`` does for its commands, so a script's bad input reads the same.
    """
    try:
        yield
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
