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


def signal_once_written(command: list[str], written, delay_s: float, signum: str) -> tuple[int, str]:
    """Exit code and stderr of ``command`` (a new process group) sent ``signum`` (e.g. "SIGINT")
    ``delay_s`` seconds after the file ``written`` appears: the program's last moments."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        while not written.exists() and proc.poll() is None:
            time.sleep(0.002)
        time.sleep(delay_s)
        os.killpg(proc.pid, getattr(signal, signum))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err
