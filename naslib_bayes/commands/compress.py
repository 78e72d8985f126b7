"""``naslib-bayes compress``: BayesNAS structured compression of a shipped CNN.

Trains the model with BayesNAS switches on its units, prunes them with the HARD prior and the
entropy criterion, slims the network and fine-tunes it; by default also trains the dense
baseline (same optimizer, schedule and number of epochs) for ``accuracy_dense``. Writes
``DIR/result.json``, ``DIR/model.pt`` (state dict) and ``DIR/widths.json`` (architecture; load
both with :func:`naslib_bayes.compression.io.load_compressed`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, NamedTuple

from naslib_bayes import results
from naslib_bayes.commands import common

logger = logging.getLogger("naslib_bayes")

DATASETS = ("mnist", "digits", "cifar10")
#: Training images held out for validation when --val-size is not given (mnist, cifar10; digits
#: holds out its fixed 20%, and result.json records that count).
DEFAULT_VAL_SIZE = 1000


#: CompressionConfig fields set by an option of this command (the others keep their names in messages)
OPTION_OF_FIELD = {"lam": "--lambda", "epochs": "--epochs", "finetune_epochs": "--finetune-epochs",
                   "batch_size": "--batch-size", "lr": "--lr", "lam_scale": "--lam-scale", "max_params": "--max-params",
                   "retrain": "--retrain", "distill": "--distill", "distill_temperature": "--distill-temperature",
                   "distill_mixup": "--distill-mixup", "grad_clip": "--grad-clip"}


def _run_settings(args, cfg) -> dict:
    """What defines a run, keyed by the option that sets it: a checkpoint resumes only the same."""
    from naslib_bayes.training.checkpoint import environment_settings

    settings = {"--model": args.model, "--dataset": args.dataset, "--seed": args.seed, "--val-size": args.val_size,
                "--no-baseline": args.no_baseline}
    settings.update({OPTION_OF_FIELD.get(field, field): value for field, value in cfg.as_dict().items()})
    # the files may move, their contents not; the thread count (set from --threads) is kept too
    return {**settings, **environment_settings(args.dataset, args.data_root)}


def register(subparsers) -> None:
    from naslib_bayes.compression.config import LAM_SCALES, MODEL_NAMES, RETRAIN_MODES, CompressionConfig

    d = CompressionConfig()
    parser = subparsers.add_parser("compress", help="compress a CNN with BayesNAS structured sparsity")
    parser.add_argument("--model", required=True, choices=MODEL_NAMES, help="network to compress")
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="training data")
    parser.add_argument("--data-root", type=Path, help="folder with the dataset's files (not needed for digits)")
    parser.add_argument("--lambda", dest="lam", type=common.positive_float, default=d.lam,
                        help=f"sparsity weight lambda (default {d.lam})")
    parser.add_argument("--lam-scale", choices=LAM_SCALES, default=d.lam_scale,
                        help="lambda per switch: the same for all (none), scaled by the parameters the "
                             f"switch's unit keeps alive (cost) or by their square root (default {d.lam_scale})")
    parser.add_argument("--max-params", type=common.unit_interval(with_0=False, with_1=False), default=d.max_params,
                        metavar="FRACTION",
                        help="parameter budget as a fraction of the model's (e.g. 0.1): pruning stops at the first "
                             "update within it and the retraining (--retrain) takes the remaining epochs (default: no budget)")
    parser.add_argument("--retrain", choices=RETRAIN_MODES, default=d.retrain,
                        help="after pruning, fine-tune the pruned weights (finetune) or train the found "
                             f"architecture from fresh initial weights (scratch) (default {d.retrain})")
    parser.add_argument("--distill", type=common.unit_interval(with_0=True, with_1=True), default=d.distill,
                        metavar="ALPHA",
                        help="weight of distilling the dense baseline into the pruned network while it is retrained: "
                             "(1 - ALPHA) cross-entropy + ALPHA soft-target loss (default 0: off; needs the baseline)")
    parser.add_argument("--distill-temperature", type=common.positive_float, metavar="T",
                        help=f"softmax temperature of distillation; needs --distill (default {d.distill_temperature:g})")
    parser.add_argument("--distill-mixup", action="store_true",
                        help="match the teacher on mixup images of each batch (the cross-entropy stays on the batch); "
                             "needs --distill and works best with long retraining")
    parser.add_argument("--epochs", type=common.positive_int, default=d.epochs,
                        help=f"total epochs, sparse training plus fine-tuning (default {d.epochs})")
    parser.add_argument("--finetune-epochs", type=common.non_negative_int,
                        help="epochs of retraining after pruning (--retrain), part of --epochs (default: a third of them)")
    parser.add_argument("--val-size", type=common.non_negative_int,
                        help=f"training images held out for validation (mnist, cifar10; default {DEFAULT_VAL_SIZE})")
    parser.add_argument("--batch-size", type=common.positive_int, default=d.batch_size,
                        help=f"images per step (default {d.batch_size})")
    parser.add_argument("--lr", type=common.positive_float, default=d.lr, help=f"learning rate (default {d.lr})")
    parser.add_argument("--grad-clip", type=common.non_negative_float, default=d.grad_clip, metavar="NORM",
                        help=f"clip each step's gradient to this norm, a guard against a run that diverges; "
                             f"0: no clipping (default {d.grad_clip:g})")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip training the dense baseline (accuracy_dense is then null)")
    common.add_threads(parser)
    common.add_seed(parser)
    common.add_out(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run checkpointed in --out (the same options; a checkpoint is written "
                             "after every epoch)")
    parser.set_defaults(run=run)


def resolve_val_size(args) -> None:
    """``--val-size`` filled in, refused with digits: its split is fixed (60/20/20), so a value
    given there would be ignored while result.json recorded it as used."""
    from naslib_bayes.errors import UserError

    if args.val_size is None:
        args.val_size = DEFAULT_VAL_SIZE
    elif args.dataset == "digits":
        raise UserError("--val-size applies to mnist and cifar10: digits comes split 60/20/20 already "
                        "(its validation images are fixed)")


def load_splits(dataset: str, root, seed: int, val_size: int):
    """Seeded train/val/test splits; MNIST from its test files alone is split 8,000 / 2,000."""
    from naslib_bayes.data import load_dataset
    from naslib_bayes.errors import UserError

    if dataset == "digits":
        return load_dataset("digits", root, seed=seed)
    if root is None:
        raise UserError(f"--data-root is required with --dataset {dataset}")
    return load_dataset(dataset, root, seed=seed, val_size=val_size)


def compression_config(args):
    """The :class:`CompressionConfig` of the options, refusing combinations that cannot run."""
    from naslib_bayes.compression.config import CompressionConfig
    from naslib_bayes.errors import UserError

    if args.distill_mixup and args.distill == 0:
        raise UserError("--distill-mixup needs --distill ALPHA > 0 (it changes the images the teacher is matched on)")
    if args.distill_temperature is not None and args.distill == 0:
        # without distillation no temperature is used, while result.json would record the one given
        raise UserError(f"--distill-temperature {args.distill_temperature:g} needs --distill ALPHA > 0 "
                        "(it is the temperature of the distillation, which is off)")
    temperature = args.distill_temperature or CompressionConfig.distill_temperature  # a given T is positive
    if args.finetune_epochs is None:
        finetune = default_finetune_epochs(args.epochs)
        _refuse_too_few_epochs_for_the_default_finetune(args.epochs, finetune)
    else:
        finetune = args.finetune_epochs
    cfg = CompressionConfig(lam=args.lam, epochs=args.epochs, finetune_epochs=finetune, batch_size=args.batch_size,
                            lr=args.lr, lam_scale=args.lam_scale, max_params=args.max_params,
                            retrain=args.retrain, distill=args.distill,
                            distill_temperature=temperature, distill_mixup=args.distill_mixup,
                            grad_clip=args.grad_clip)
    if cfg.distill > 0 and args.no_baseline:
        raise UserError("--distill needs the dense baseline as its teacher: drop --no-baseline")
    return cfg


def default_finetune_epochs(epochs: int) -> int:
    """The retraining epochs when --finetune-epochs is not given: a third of --epochs."""
    return round(epochs / 3)


def _refuse_too_few_epochs_for_the_default_finetune(epochs: int, finetune: int) -> None:
    """Too few --epochs for a sparse one after the warm-up, said with the least --epochs that
    leaves one once its own third retrains (the configuration's message counts this run's
    finetune epochs, which a larger --epochs changes: --epochs 1 named 2, itself refused)."""
    import itertools

    from naslib_bayes.compression.config import CompressionConfig
    from naslib_bayes.errors import UserError

    warmup = CompressionConfig.warmup_epochs
    if epochs - finetune > warmup:
        return
    least = next(n for n in itertools.count(epochs + 1) if n - default_finetune_epochs(n) > warmup)
    most_finetune = epochs - warmup - 1  # --finetune-epochs that leaves this --epochs a sparse one
    fewer = f" or --finetune-epochs {most_finetune}" if most_finetune >= 0 else ""
    raise UserError(f"epochs={epochs} with finetune_epochs={finetune} (a third of --epochs when --finetune-epochs is "
                    f"not given) leaves {epochs - finetune} epoch(s) before retraining, none of them sparse after the "
                    f"first warmup_epochs={warmup}: give at least {least} epochs{fewer}")


def prepare_out_and_checkpoint(args, cfg):
    """``--out`` made ready for this run, and the run's stage checkpoint in it (continued with ``--resume``)."""
    from naslib_bayes.compression.resume import StageCheckpoint
    from naslib_bayes.training.checkpoint import CHECKPOINT_FILE

    out = common.prepare_resumable_out(args.out, args.overwrite, args.resume, args.held_folders)
    return out, StageCheckpoint(out / CHECKPOINT_FILE, _run_settings(args, cfg), resume=args.resume)


def seeded_model(args, train):
    """The network to compress, initialised from ``--seed``, and a copy of its initial weights."""
    import torch

    from naslib_bayes.compression.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = build_model(args.model, train.image_shape, train.num_classes)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


class Baseline(NamedTuple):
    """The trained dense baseline (None with ``--no-baseline``) and its test and validation accuracy."""

    model: Any
    accuracy: float | None
    val_accuracy: float | None


def train_baseline(args, cfg, splits, initial: dict, augment, checkpoint) -> Baseline:
    """The dense baseline trained from the compressed network's ``initial`` weights, and its accuracies."""
    from naslib_bayes.compression.compressor import evaluate, train_dense
    from naslib_bayes.compression.models import build_model

    if args.no_baseline:
        return Baseline(None, None, None)
    dense = build_model(args.model, splits.train.image_shape, splits.train.num_classes)
    dense.load_state_dict(initial)  # the same initial weights as the compressed run
    train_dense(dense, splits.train, cfg, args.seed, augment=augment, log=logger.info, checkpoint=checkpoint)
    val_dense = evaluate(dense, splits.val) if splits.val is not None else None
    return Baseline(dense, evaluate(dense, splits.test), val_dense)


def kept_channels(outcome) -> dict:
    """The units each compressed layer keeps, by layer name."""
    return dict(zip(outcome.layer_names, outcome.widths_after))


def compression_result(args, cfg, splits, outcome, baseline: Baseline, accuracy_compressed: float,
                       wall_time_s: float) -> dict:
    """result.json of the run (``wall_time_s``: the run's, earlier processes of a resumed one included)."""
    from naslib_bayes.compression.compressor import evaluate

    return results.new_result(
        "compress",
        torch_threads=results.torch_threads(),
        optimizer="bayesnas",
        dataset=args.dataset,
        seed=args.seed,
        report_metric="test_accuracy",
        final_architecture="-".join(str(w) for w in [outcome.inputs_after, *outcome.widths_after]),
        model=args.model,
        params_before=outcome.params_before,
        params_after=outcome.params_after,
        flops_before=outcome.flops_before,
        flops_after=outcome.flops_after,
        params_removed=1.0 - outcome.params_after / outcome.params_before,
        flops_removed=1.0 - outcome.flops_after / outcome.flops_before,
        kept_channels=kept_channels(outcome),
        channels_before=dict(zip(outcome.layer_names, outcome.widths_before)),
        inputs_before=outcome.inputs_before,
        inputs_after=outcome.inputs_after,
        accuracy_dense=baseline.accuracy,
        accuracy_compressed=accuracy_compressed,
        val_accuracy_dense=baseline.val_accuracy,
        val_accuracy_compressed=evaluate(outcome.model, splits.val) if splits.val is not None else None,
        masked_max_abs_diff=outcome.masked_max_abs_diff,
        budget_met=outcome.budget_met,
        compression_history=outcome.history,
        config={**cfg.as_dict(), "model": args.model, "val_size": validation_images(splits),
                "train_images": len(splits.train), "test_images": len(splits.test)},
        wall_time_s=wall_time_s,
    )


def validation_images(splits) -> int:
    """The images held out for validation: --val-size's for mnist and cifar10, the fixed 20% of
    digits (which takes no --val-size, so its number is not the one to record)."""
    return 0 if splits.val is None else len(splits.val)


def summary_line(result: dict, path: Path) -> str:
    """The line printed at the end: architecture, parameters before and after, accuracies, result file."""
    dense = result["accuracy_dense"]
    dense_text = "n/a" if dense is None else f"{dense:.2f}"
    return (f"{result['model']} {result['final_architecture']}: params {result['params_before']} -> "
            f"{result['params_after']} ({100 * result['params_removed']:.1f}% removed), accuracy dense {dense_text} "
            f"/ compressed {result['accuracy_compressed']:.2f}  -> {path}")


def run(args) -> int:
    """Train the baseline, compress the network, write its files and result.json, print a summary."""
    from naslib_bayes.compression.compressor import check_batch_size, compress, evaluate
    from naslib_bayes.compression.io import save_compressed
    from naslib_bayes.data import default_augment

    import torch

    torch.set_num_threads(args.threads)  # the benchmark's count: its numbers, bit for bit
    start = time.perf_counter()
    resolve_val_size(args)
    cfg = compression_config(args)
    splits = load_splits(args.dataset, args.data_root, args.seed, args.val_size)
    model, initial = seeded_model(args, splits.train)
    check_batch_size(model, splits.train, cfg.batch_size)
    out, checkpoint = prepare_out_and_checkpoint(args, cfg)
    augment = default_augment(args.dataset, splits.train) if cfg.augment else None
    # the baseline is trained first: it is the teacher when distilling
    baseline = train_baseline(args, cfg, splits, initial, augment, checkpoint)
    outcome = compress(model, splits.train, cfg, args.seed, augment=augment, val=splits.val, log=logger.info,
                       teacher=baseline.model, checkpoint=checkpoint)
    accuracy_compressed = evaluate(outcome.model, splits.test)
    results.retire_result(out)
    save_compressed(outcome.model, out, splits.train.image_shape, model=args.model, dataset=args.dataset,
                    kept_channels=kept_channels(outcome), inputs=outcome.inputs_after)
    result = compression_result(args, cfg, splits, outcome, baseline, accuracy_compressed,
                                time.perf_counter() - start + checkpoint.clock.earlier_s)
    path = common.write_final_result(out, result, writes_checkpoints=True)
    print(summary_line(result, path))
    return 0
