"""Worker processes that never outlive the command, Ctrl-C and SIGTERM, and how a script ends."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Iterable, NoReturn

import torch

from naslib_bayes.comparison.records import remove_partial_files
from naslib_bayes.errors import UserError
from naslib_bayes.search_spaces.nasbench201.benchmark import Benchmark

# ---- in each worker process ----------------------------------------------------------------
_WORKER_BENCHMARK: Benchmark | None = None


def _init_worker(benchmark_path: str) -> None:
    """Worker start: one torch thread (runs share the cores) and the benchmark loaded once.

    Ctrl-C, which a terminal sends to the workers too, is the main process's to act on: it stops
    the workers (:func:`stop_workers`). Acted on here, it printed a worker's traceback beside the
    command's one line, or broke the pool mid-start (a ``BrokenProcessPool`` traceback).
    """
    global _WORKER_BENCHMARK
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    _leave_signals_to_the_parent()  # and exit with the command
    torch.set_num_threads(1)
    _WORKER_BENCHMARK = load_benchmark(benchmark_path)


def _leave_signals_to_the_parent() -> None:
    """In a worker: Ctrl-C (sent to the whole terminal group) is the main process's to act on,
    and SIGTERM, from :func:`stop_workers`, ends the worker at once; a main process killed
    outright ends it too (:func:`_exit_with_the_command`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _exit_with_the_command()


def _exit_with_the_command() -> None:
    """End this worker as soon as the command that started it has ended.

    Ctrl-C and SIGTERM stop the workers from the command (:func:`stop_workers`); SIGKILL gives
    it no chance, and orphaned workers went on with the runs queued for them (holding a one-shot
    run's folder against the re-run) and then waited for work for good. The parent's sentinel
    (a pipe whose other end the command holds, also through a forkserver) becomes readable
    when it ends; a run cut short leaves only a temporary file or a checkpoint, as a kill does.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-the-command", daemon=True).start()


def worker_benchmark(benchmark: Benchmark | None = None) -> Benchmark:
    """``benchmark``, or (when None, in a worker process) the benchmark :func:`_init_worker` loaded."""
    return benchmark or _WORKER_BENCHMARK


# ---- in the command: the pool --------------------------------------------------------------
#: One piece of work for :func:`run_in_workers`: ``(tag, function, arguments)``; the tag comes
#: back with the function's result.
Task = tuple[Any, Callable[..., Any], tuple]


def run_in_workers(jobs: int, benchmark_path: str | Path, out: str | Path, first: Iterable[Iterable[Task]],
                   on_result: Callable[[Any, Any], Iterable[Task] | None]) -> None:
    """Run tasks in ``jobs`` worker processes, each with one torch thread and the benchmark loaded once.

    Each batch of ``first`` is submitted in turn with the signals held (:func:`signals_held`).
    As a task finishes, ``on_result(tag, result)`` is called (a worker's error is re-raised
    here instead) and may return a further batch to submit. On any exception (Ctrl-C, SIGTERM
    or a failed task) the workers are stopped (:func:`stop_workers`) and the partial files in
    ``out`` removed (:func:`remove_partial_files`) before it propagates.
    """
    with ProcessPoolExecutor(max_workers=jobs, mp_context=_worker_context(), initializer=_init_worker,
                             initargs=(str(benchmark_path),)) as pool:
        futures: dict[Future, Any] = {}
        try:
            for batch in first:
                _submit(pool, futures, batch)
            while futures:
                finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in finished:
                    tag = futures.pop(future)
                    more = on_result(tag, future.result())  # future.result() re-raises a worker's error here
                    if more is not None:
                        _submit(pool, futures, more)
        except BaseException:  # Ctrl-C, SIGTERM or a failed task: no worker outlives the command
            stop_workers(pool)
            remove_partial_files(out)
            raise


def _submit(pool: ProcessPoolExecutor, futures: dict[Future, Any], tasks: Iterable[Task]) -> None:
    """Submit ``tasks``, recording each future's tag in ``futures``; a worker starting when Ctrl-C
    comes must be known to :func:`stop_workers`, hence the signals held."""
    with signals_held():
        for tag, function, args in tasks:
            futures[pool.submit(function, *args)] = tag


def _worker_context():
    """Workers start from a clean interpreter, never from a fork of this (possibly threaded) one.

    ``forkserver`` imports the package (and torch) once in a server process and forks workers
    from it, which starts them in a fraction of the time ``spawn`` needs to import torch in
    each; ``spawn`` is the fallback where forkserver does not exist.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # This module's imports hold the heavy ones (torch, the benchmark, the registry); a task's
        # own module (the runner's, the one-shot comparison's) is imported by a worker with its first task.
        context.set_forkserver_preload([__name__, "naslib_bayes.comparison.worker_start"])
        return context
    return multiprocessing.get_context("spawn")


@contextlib.contextmanager
def signals_held():
    """Hold Ctrl-C and SIGTERM while submitting, and deliver them afterwards.

    A submission may start a worker process; interrupted between the worker's start and its
    registration in the pool, the worker would be unknown to :func:`stop_workers` and outlive
    the command. Outside the main thread (where handlers cannot be set) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if held:
            _deliver(held[0], previous[held[0]])


def _deliver(signum: int, handler) -> None:
    """Act on a held signal as its own handler would have."""
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signum)  # the default action: end the process


#: Seconds to wait for a terminated worker to exit before its leftovers are removed.
WORKER_EXIT_TIMEOUT_S = 10.0


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Drop queued runs and end the running ones now (Ctrl-C or SIGTERM should not wait for them).

    Finished runs are already on disk, so nothing is lost but the work in flight. Each worker
    is waited for, so none outlives the command or writes after it; a worker killed mid-write
    leaves only a temporary file, which the caller removes. The executor has no public way to
    end running workers before Python 3.14, hence its process table. Its management thread is
    waited for too: ``shutdown(wait=False)`` forgets it, and one still closing its pipes while
    the interpreter exits makes the exit hook write to a closed pipe (an ``OSError`` printed
    after the command's last line).
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
    manager = getattr(pool, "_executor_manager_thread", None)  # and this
    terminate = getattr(pool, "terminate_workers", None)
    if terminate is not None:
        terminate()
    else:
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
    for process in processes:
        process.join(WORKER_EXIT_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join(WORKER_EXIT_TIMEOUT_S)
    if manager is not None:
        manager.join(WORKER_EXIT_TIMEOUT_S)


@contextlib.contextmanager
def worker_pool(jobs: int) -> Iterable[ProcessPoolExecutor]:
    """A process pool for a script's runs (the benchmarks) whose workers never outlive it.

    In the main process SIGTERM is turned into an interrupt (as a command's), and Ctrl-C, SIGTERM
    or an error stops the workers (:func:`stop_workers`) before it propagates; the workers
    leave both signals to the main process. Without this, a terminated benchmark's workers
    went on with their runs, orphaned, and a re-run started meanwhile did the same runs beside them.
    """
    from naslib_bayes.cli import sigterm_as_interrupt

    with sigterm_as_interrupt(), ProcessPoolExecutor(max_workers=jobs, initializer=_leave_signals_to_the_parent) as pool:
        try:
            yield pool
        except BaseException:
            stop_workers(pool)
            raise


# ---- how a benchmark script ends -----------------------------------------------------------
#: What a benchmark script says when Ctrl-C or SIGTERM stops it: the runs it finished are on disk.
SCRIPT_STOPPED_LINES = {signal.SIGINT: "stopped by Ctrl-C; finished runs are kept",
                        signal.SIGTERM: "stopped by SIGTERM; finished runs are kept"}


def run_script(main: Callable[[], int]) -> NoReturn:
    """A benchmark script's end: :func:`script_exit_code`, and the process ends with it as the
    ``naslib-bayes`` program does (:func:`naslib_bayes.cli.run_program`).

    Python's own exit (torch's teardown) takes a second or more with Ctrl-C and SIGTERM back at
    their default action: a Ctrl-C then killed the finished script by its signal, saying nothing.
    Here a signal until the end is answered with the script's line (:data:`SCRIPT_STOPPED_LINES`)
    and 130 / 143, and the process ends once the exit handlers have run, without the teardown.
    """
    from naslib_bayes.cli import end_process_with

    end_process_with(lambda: script_exit_code(main), SCRIPT_STOPPED_LINES)


def script_exit_code(main: Callable[[], int]) -> int:
    """``main()``'s exit code, or 130 / 143 (one line on stderr) when Ctrl-C / SIGTERM stopped it,
    or 2 with the message of bad input (a :class:`UserError`).

    As for a command, SIGTERM is an interrupt throughout ``main`` (not only while workers run), and
    a stop whose handler ran inside a finalizer is delivered again instead of dropped."""
    from naslib_bayes.cli import (EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, sigterm_as_interrupt,
                                  stops_in_finalizers_delivered_again)

    try:
        with sigterm_as_interrupt(), stops_in_finalizers_delivered_again():
            return main()
    except UserError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print(SCRIPT_STOPPED_LINES[signal.SIGTERM], file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(SCRIPT_STOPPED_LINES[signal.SIGINT], file=sys.stderr)
        return EXIT_INTERRUPTED
