"""Running the ``naslib-bayes`` command line in-process, as the CLI tests do."""

from __future__ import annotations

from naslib_bayes.cli import main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``naslib-bayes ARGV`` (argparse errors exit directly)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err
