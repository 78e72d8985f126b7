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


def run_cli_stopped_before_its_result(capsys, monkeypatch, *argv) -> int:
    """Exit code of ``naslib-bayes ARGV`` stopped by Ctrl-C just before it writes result.json (after
    every other file it writes)."""
    from naslib_bayes import results

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(results, "write_result", stopped)
        return run_cli(capsys, *argv)[0]
