"""BayesNAS compression of LeNet-5 and LeNet-300-100 on MNIST, against a dense baseline.

Protocol (per model and seed):

* data: MNIST from the folder given by ``--data-root``. When only the official test files
  (``t10k-*``) are there, their 10,000 images are split at random (seeded) into 8,000 for
  training and 2,000 held out; ``--val-size`` of the 8,000 (default 1,000) are carved off for
  validation. The held-out images are used only to report the final accuracies: no training,
  pruning or fine-tuning step and no choice of this script sees them. ``--train-images N``
  trains on a seeded subset of N of the training images (the validation and held-out images
  unchanged), to measure how the accuracy lost depends on the training set's size.
* compression: :func:`naslib_bayes.compression.compress` for ``--epochs`` epochs in total
  (sparse training with HARD updates and pruning, then fine-tuning);
* dense baseline: the same network from the same initial weights, trained with the same
  optimizer, batch size and augmentation for the same total epochs (its cosine decay spans the
  last ``finetune_epochs``; the compression's spans its retraining, every epoch left once a
  parameter budget is met);
* reported: both accuracies, the difference, and the fractions of parameters and FLOPs
  (multiply-accumulates of conv and linear layers) removed; averaged over the seeds.

``--split val`` reports validation accuracies instead and never evaluates on the held-out
images; use it to choose lambda and the epochs. The per-model defaults below were chosen that
way (see ``DEFAULTS``).

Usage::

    python benchmarks/compress_mnist.py --data-root DIR --out runs/compress [--jobs 2]
    python benchmarks/compress_mnist.py --data-root DIR --split val --models lenet5 --lambdas 1e-3,2e-3
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import sys
import time
from concurrent.futures import as_completed
from pathlib import Path

#: The benchmark scripts: their own logic is code a cached run depends on, beside the package's.
SCRIPTS = tuple(sorted(Path(__file__).resolve().parent.glob("*.py")))

#: Per-model settings, chosen on the validation split (``--split val``; see docs/compression.md):
#: both stop pruning at the first update within 10% of the parameters (``max_params``); LeNet-5
#: then trains the found architecture from fresh weights (``retrain="scratch"``: seed 1, 60
#: epochs, -0.5 pp against -1.1 pp fine-tuned), LeNet-300-100 fine-tunes (seed 0: -0.5 pp
#: against -1.6 pp from scratch) and distils the dense baseline while doing so (``distill`` 0.5,
#: temperature 4) on mixup images for 100 epochs (``distill_mixup``: seeds 0-11, -0.56 pp against
#: -0.93 pp distilling on the batch for 50 epochs), with lambda 0.015, which prunes more slowly
#: and meets the budget at epoch 37-53 (22-31 at 0.025; validation seeds 0-11: -0.55 pp against
#: -0.71 pp at 0.025, -0.60 pp at 0.02 and -0.63 pp at 0.01). ``finetune_epochs`` is the least
#: retraining: the sparse phase usually ends earlier, at the budget. Gradients are clipped to norm 10
#: (``CompressionConfig.grad_clip``, its default), a guard added later: healthy LeNet-300-100 runs
#: stay below 8, and one seed diverged without it on another CPU (docs/compression.md).
DEFAULTS = {
    "lenet5": dict(lam=0.02, epochs=60, finetune_epochs=20, lam_scale="sqrt_cost", max_params=0.1, retrain="scratch"),
    "lenet300": dict(lam=0.015, epochs=100, finetune_epochs=20, lam_scale="cost", max_params=0.1, distill=0.5,
                     distill_temperature=4.0, distill_mixup=True),
}
COMMON = dict(batch_size=64, optimizer="sgd", lr=0.02, momentum=0.9, weight_decay=5e-4, warmup_epochs=1,
              update_every=1, curvature_batches=8, curvature_reduction="sum")


def data_fingerprint(root: str) -> str:
    """SHA-256 of the MNIST files the loader reads from ``root`` (names and bytes; in a subfolder
    ``mnist/`` or ``MNIST/raw/``, or mirror-named, too): other images, labels or added training
    files (which change the split) make other runs, wherever the folder lies."""
    from naslib_bayes.data.loaders import data_fingerprint as loaders_data_fingerprint

    return loaders_data_fingerprint("mnist", root)


def run_one(job: dict) -> dict:
    """One (model, seed, lambda): compression and dense baseline; returns a JSON-able record.

    With ``job["out"]`` the run's folder keeps its record and a checkpoint: a finished run with
    the same settings is not run again, and a killed one continues where it stopped.
    """
    import torch

    torch.set_num_threads(job["threads"])
    from naslib_bayes.compression import CompressionConfig, build_model, compress, evaluate, train_dense
    from naslib_bayes.compression.io import save_compressed
    from naslib_bayes.data import default_augment, load_dataset
    from naslib_bayes.results import atomic_write_json, read_json_record, remove_killed_writes, source_fingerprint

    start = time.perf_counter()
    cfg = CompressionConfig(lam=job["lam"], epochs=job["epochs"], finetune_epochs=job["finetune_epochs"],
                            **{**COMMON, **job["options"]})
    # the code is a setting too: a run finished (or checkpointed) by other code is run afresh
    settings = json.loads(json.dumps({**{k: job[k] for k in ("model", "seed", "lam", "epochs", "finetune_epochs",
                                                            "split", "val_size", "train_images", "threads")},
                                      "config": cfg.as_dict(),
                                      "data": data_fingerprint(job["data_root"]),
                                      "code": source_fingerprint(*SCRIPTS)}))
    # one folder per setting: runs of a sweep (epochs, --opt ...) keep their records side by side
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    run_dir = Path(job["out"]) / f"{job['model']}-lam{job['lam']:g}-seed{job['seed']}-{key}" if job.get("out") else None
    progress = checkpoint = None
    if run_dir is not None:
        record_file = run_dir / f"record-{job['split']}.json"
        finished = read_json_record(record_file)
        if finished is not None and finished.get("settings") == settings:
            return finished
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_killed_writes(run_dir)  # this job's folder alone (the benchmark holds --out): a killed write's temporary
        checkpoint = _checkpoint(run_dir / f"checkpoint-{job['split']}.pt", settings)
        log_file = open(run_dir / f"progress-{job['split']}.log", "a")

        def progress(line: str) -> None:
            log_file.write(f"{time.perf_counter() - start:7.0f}s {line}\n")
            log_file.flush()
    splits = _fewer_training_images(load_dataset("mnist", job["data_root"], seed=job["seed"], val_size=job["val_size"]),
                                    job["train_images"], job["seed"])
    shape, classes = splits.train.image_shape, splits.train.num_classes
    torch.manual_seed(job["seed"])
    model = build_model(job["model"], shape, classes)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    augment = default_augment("mnist", splits.train)
    dense = build_model(job["model"], shape, classes)
    dense.load_state_dict(initial)
    train_dense(dense, splits.train, cfg, job["seed"], augment=augment, log=progress,  # first: the teacher
                checkpoint=checkpoint)
    outcome = compress(model, splits.train, cfg, job["seed"], augment=augment, log=progress, teacher=dense,
                       checkpoint=checkpoint)
    report = splits.val if job["split"] == "val" else splits.test
    record = {
        **{k: job[k] for k in ("model", "seed", "lam", "epochs", "finetune_epochs", "split")},
        "train_images": len(splits.train), "val_images": len(splits.val or ()), "report_images": len(report),
        "accuracy_dense": evaluate(dense, report),
        "accuracy_compressed": evaluate(outcome.model, report),
        "params_before": outcome.params_before, "params_after": outcome.params_after,
        "flops_before": outcome.flops_before, "flops_after": outcome.flops_after,
        "widths": outcome.widths_after, "inputs": outcome.inputs_after,
        "masked_max_abs_diff": outcome.masked_max_abs_diff,
        "history": outcome.history, "config": cfg.as_dict(), "settings": settings,
        # a continued run: the killed processes' time to their last save too
        "wall_time_s": time.perf_counter() - start + (checkpoint.clock.earlier_s if checkpoint is not None else 0.0),
    }
    if run_dir is not None:
        save_compressed(outcome.model, run_dir, shape, network=job["model"], inputs=outcome.inputs_after,
                        widths=outcome.widths_after)
        atomic_write_json(record_file, record)  # last: a record means a finished run
        log_file.close()
    return record


def _fewer_training_images(splits, count: int | None, seed: int):
    """``splits`` with a seeded random subset of ``count`` training images (all when None).

    Drawn after the validation images are carved off, so those stay the same for every count.
    """
    if count is None:
        return splits
    import dataclasses

    from naslib_bayes.data.dataset import make_generator, partition
    from naslib_bayes.errors import UserError

    train = splits.train
    if not 0 < count <= len(train):
        raise UserError(f"--train-images {count}: expected 1 to {len(train)} (the training images there are)")
    (rows,) = partition(len(train), [count], make_generator(10_000 + seed))  # nested: the first count of one order
    subset = dataclasses.replace(train, images=train.images[rows], labels=train.labels[rows], indices=train.indices[rows])
    return dataclasses.replace(splits, train=subset)


def _checkpoint(path: Path, settings: dict):
    """The run's checkpoint, continued if ``path`` holds one of the same settings, else new."""
    from naslib_bayes.compression.resume import StageCheckpoint
    from naslib_bayes.errors import UserError

    if path.exists():
        try:
            return StageCheckpoint(path, settings, resume=True)
        except UserError:  # written with other settings: start over
            path.unlink()
    return StageCheckpoint(path, settings)


def _fmt_widths(record: dict) -> str:
    return "-".join(str(w) for w in [record["inputs"], *record["widths"][:-1]])


def table(records: list[dict]) -> str:
    split = records[0]["split"]
    name = f"test (held-out {records[0]['report_images']:,})" if split == "test" else "validation"
    lines = [f"accuracy on {name} images, %",
             f"{'model':<9} {'lambda':>7} {'seed':>4} {'dense':>7} {'compr.':>7} {'diff':>6} {'params':>8} "
             f"{'FLOPs':>8}  widths (inputs-units...)",
             "-" * 90]
    groups: dict[tuple, list[dict]] = {}
    for r in sorted(records, key=lambda r: (r["model"], r["lam"], r["seed"])):
        groups.setdefault((r["model"], r["lam"]), []).append(r)
        p = 1 - r["params_after"] / r["params_before"]
        f = 1 - r["flops_after"] / r["flops_before"]
        lines.append(f"{r['model']:<9} {r['lam']:>7g} {r['seed']:>4} {r['accuracy_dense']:>7.2f} "
                     f"{r['accuracy_compressed']:>7.2f} {r['accuracy_compressed'] - r['accuracy_dense']:>+6.2f} "
                     f"{100 * p:>7.2f}% {100 * f:>7.2f}%  {_fmt_widths(r)}")
    lines.append("-" * 90)
    for (model, lam), rs in groups.items():
        mean = lambda key: statistics.fmean(r[key] for r in rs)  # noqa: E731
        p = statistics.fmean(1 - r["params_after"] / r["params_before"] for r in rs)
        f = statistics.fmean(1 - r["flops_after"] / r["flops_before"] for r in rs)
        diff = mean("accuracy_compressed") - mean("accuracy_dense")
        met = p >= 0.90 and diff >= -0.5
        lines.append(f"{model:<9} {lam:>7g} {'mean':>4} {mean('accuracy_dense'):>7.2f} {mean('accuracy_compressed'):>7.2f} "
                     f"{diff:>+6.2f} {100 * p:>7.2f}% {100 * f:>7.2f}%  {len(rs)} seeds; target "
                     f"(>=90% params, >=-0.5 pp) {'met' if met else 'MISSED'}")
    return "\n".join(lines)


def _parse_option(item: str) -> tuple[str, object]:
    key, _, text = item.partition("=")
    for convert in (int, float):
        try:
            return key, convert(text)
        except ValueError:
            pass
    return key, {"true": True, "false": False}.get(text.lower(), text)


def _comma_list(convert, what: str, accept=lambda value: True):
    """An argparse type: comma-separated values, each converted and accepted, else one line saying what was expected."""
    def parse(text: str) -> list:
        try:
            values = [convert(item) for item in text.split(",")]
        except ValueError:
            values = None
        if not values or not all(accept(v) for v in values):
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}")
        return _each_once(values, text)
    return parse


def _each_once(values: list, text: str) -> list:
    """``values``, refused if one is given twice: its runs would be counted twice in the means."""
    seen = set()
    for value in values:
        if value in seen:
            raise argparse.ArgumentTypeError(f"{value!r} given twice in {text!r}: its runs would count twice in the means")
        seen.add(value)
    return values


def _models(text: str) -> list[str]:
    for name in text.split(","):
        if name not in DEFAULTS:
            raise argparse.ArgumentTypeError(f"{name!r} has no benchmark settings; choose among {', '.join(DEFAULTS)}")
    return _each_once(text.split(","), text)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line's settings; a missing data folder or a setting that leaves no images is
    refused here, before any file is read."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from naslib_bayes.commands.common import non_negative_int, positive_int  # light: no torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_root = os.environ.get("NASLIB_BAYES_DATA")
    parser.add_argument("--data-root", type=Path, default=Path(default_root) / "mnist" if default_root else None,
                        help="MNIST folder (default: $NASLIB_BAYES_DATA/mnist)")
    parser.add_argument("--models", type=_models, default="lenet5,lenet300",
                        help="comma-separated, among lenet5, lenet300 (default: both)")
    # a list, unlike the count of the other benchmarks' --seeds: "--seeds 3" is seed 3 alone
    parser.add_argument("--seeds", type=_comma_list(int, "seeds (integers)", lambda s: s >= 0), default="0,1,2",
                        help="comma-separated seeds (default 0,1,2); one number is that seed alone, not a count")
    parser.add_argument("--lambdas", type=_comma_list(float, "positive numbers", lambda v: 0 < v < float("inf")),
                        help="comma-separated lambdas (default: the per-model DEFAULTS)")
    parser.add_argument("--epochs", type=positive_int, help="total epochs (default: per model)")
    parser.add_argument("--finetune-epochs", type=non_negative_int, help="fine-tuning epochs (default: per model)")
    parser.add_argument("--val-size", type=non_negative_int, default=1000)
    parser.add_argument("--train-images", type=int,
                        help="train on a seeded subset of this many training images (default: all)")
    parser.add_argument("--split", choices=("test", "val"), default="test",
                        help="report held-out test accuracy (default) or validation accuracy (for choices)")
    parser.add_argument("--jobs", type=positive_int, default=1, help="runs in parallel (processes)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads per run")
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="override a CompressionConfig field for every run (repeatable)")
    parser.add_argument("--out", type=Path, help="folder for per-run records, compressed models and the table")
    args = parser.parse_args(argv)
    if args.data_root is None:
        parser.error("--data-root is required (or set NASLIB_BAYES_DATA)")
    if args.split == "val" and args.val_size < 1:
        parser.error(f"--split val needs validation images: --val-size {args.val_size}")
    if args.train_images is not None and args.train_images < 1:
        parser.error(f"--train-images {args.train_images}: expected a positive number of images")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from naslib_bayes.data.loaders import mnist_folder

    mnist_folder(args.data_root)  # a missing folder or files: one line now, not one failed run per job
    options = dict(_parse_option(item) for item in args.opt)
    jobs = []
    for model in args.models:
        d = DEFAULTS[model]
        for lam in args.lambdas or [d["lam"]]:
            for seed in args.seeds:
                jobs.append(dict(model=model, seed=seed, lam=lam, epochs=args.epochs or d["epochs"],
                                 finetune_epochs=args.finetune_epochs if args.finetune_epochs is not None
                                 else d["finetune_epochs"], val_size=args.val_size,
                                 train_images=args.train_images, split=args.split,
                                 options={**{k: v for k, v in d.items() if k not in ("lam", "epochs", "finetune_epochs")},
                                          **options},
                                 data_root=str(args.data_root), threads=args.threads,
                                 out=str(args.out) if args.out else None))
    start = time.perf_counter()
    from naslib_bayes import results  # torch: not for --help

    with contextlib.ExitStack() as held:
        if args.out:  # one benchmark at a time in a folder: two would train the same runs' checkpoints
            held.enter_context(results.exclusive_use(args.out, "--out"))
        records = run_jobs(jobs, args.jobs)
        if not records:
            return 1
        text = table(records)
        print(text)
        print(f"total wall time {time.perf_counter() - start:.0f}s")
        if args.out:
            (args.out / f"table-{args.split}.txt").write_text(text + "\n")
            (args.out / f"records-{args.split}.json").write_text(json.dumps(
                [{k: v for k, v in r.items() if k != "history"} for r in records], indent=1))
    return 0


def run_jobs(jobs: list[dict], processes: int) -> list[dict]:
    """The records of the runs that finished, in the order of ``jobs`` (the order they finish in
    depends on ``processes`` and on which runs were read back), each printed as it finishes; a
    failed run is reported."""
    from naslib_bayes.comparison.processes import worker_pool

    finished = {}
    with worker_pool(processes) as pool:
        futures = {pool.submit(run_one, job): index for index, job in enumerate(jobs)}
        for future in as_completed(futures):
            job = jobs[futures[future]]
            try:
                record = future.result()
            except Exception as exc:  # report and go on with the other runs
                print(f"FAILED {job['model']} lambda {job['lam']:g} seed {job['seed']}: {exc!r}", flush=True)
                continue
            finished[futures[future]] = record
            print(f"done {record['model']} lambda {record['lam']:g} seed {record['seed']}: dense "
                  f"{record['accuracy_dense']:.2f} compressed {record['accuracy_compressed']:.2f} params "
                  f"{record['params_before']} -> {record['params_after']} ({record['wall_time_s']:.0f}s)", flush=True)
    return [finished[index] for index in sorted(finished)]


if __name__ == "__main__":
    from naslib_bayes.comparison.processes import run_script

    run_script(main)
