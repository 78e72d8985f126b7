"""Compress your own CNN with BayesNAS structured sparsity, from Python.

What it shows:

* a small custom ``nn.Sequential`` CNN (conv-BN-ReLU-pool twice, then two linear layers with
  dropout) handed to :func:`naslib_bayes.compression.compress`, which puts BayesNAS switches on
  its channels and neurons, prunes them with the HARD prior and the entropy criterion, and
  returns a physically smaller ``nn.Sequential``;
* the dense baseline trained as ``naslib-bayes compress`` trains it: same initial weights,
  optimizer, augmentation, learning-rate schedule and total number of epochs;
* a per-layer table of widths before and after, parameters and FLOPs before and after, and the
  held-out accuracy of both networks (the held-out images take no part in any training step);
* saving with ``save_compressed`` and loading back with ``load_compressed`` (which reads the
  weights with ``weights_only=True``), checking that the reloaded network computes the same
  outputs;
* what a model that is not a chain of layers gets: a residual block is refused with a one-line
  ``UnsupportedModelError``.

Usage:

    python examples/compress_your_cnn.py --out runs/compress-example
    python examples/compress_your_cnn.py --dataset mnist --data-root DIR --lambda 0.5 --epochs 15 \\
        --max-params 0.1 --out runs/compress-mnist

``digits`` is scikit-learn's bundled 8x8 digits (no download). ``DIR`` holds MNIST's IDX files
(``t10k-images-idx3-ubyte.gz`` and its labels, with or without the 60,000 training images);
the split is the command's: with only the 10,000 test images, 8,000 train (1,000 of them set
aside for validation) and 2,000 held out. On one CPU core (``OMP_NUM_THREADS=1`` on a busy
machine) the defaults take about 15 s on digits, the MNIST line about a minute.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn

# Images of MNIST's training part set aside for validation, as `naslib-bayes compress` does by
# default, so that the split is the command's; here they only show in the --verbose log.
MNIST_VAL_SIZE = 1000


def parse_args(argv=None) -> argparse.Namespace:
    from naslib_bayes.commands.common import seed_int

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("digits", "mnist"), default="digits",
                        help="training data (default digits, bundled with scikit-learn)")
    parser.add_argument("--data-root", type=Path, default=None, help="folder with MNIST's IDX files (mnist only)")
    parser.add_argument("--lambda", dest="lam", type=float, default=0.2,
                        help="sparsity weight lambda: larger removes more units (default 0.2)")
    parser.add_argument("--epochs", type=int, default=30,
                        help="total epochs, sparse training then (at least) a third of fine-tuning; the dense "
                             "baseline gets as many (default 30)")
    parser.add_argument("--max-params", type=float, default=None, metavar="FRACTION",
                        help="parameter budget as a fraction of the network's (e.g. 0.2): pruning stops at the "
                             "first update within it (default: no budget)")
    parser.add_argument("--seed", type=seed_int, default=0, help="seeds the split, the weights and the batches")
    parser.add_argument("--out", type=Path, default=Path("runs/compress-example"),
                        help="folder for the compressed network (model.pt, widths.json)")
    parser.add_argument("--verbose", action="store_true", help="print one line per epoch and per pruning update")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------ the network
def build_cnn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """Your network: two conv blocks and a small classifier, for (C, H, W) images with H, W >= 4.

    Named modules make the table (and any error message) speak of ``conv1`` rather than ``0``.
    """
    channels, height, width = input_shape
    flat = 32 * (height // 4) * (width // 4)  # two 2x2 poolings of the padded convolutions' maps
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(channels, 16, 3, padding=1)), ("bn1", nn.BatchNorm2d(16)), ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(16, 32, 3, padding=1)), ("bn2", nn.BatchNorm2d(32)), ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(flat, 64)), ("relu3", nn.ReLU()), ("dropout", nn.Dropout(0.2)),
        ("fc2", nn.Linear(64, num_classes)),
    ]))


class ResidualBlock(nn.Module):
    """``x + conv(x)``: the skip connection makes the model a graph, not a chain of layers."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        return x + self.conv(x)


def build_residual_cnn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """A network compression refuses: a residual block between the stem and the classifier."""
    channels, height, width = input_shape
    return nn.Sequential(OrderedDict([
        ("stem", nn.Conv2d(channels, 8, 3, padding=1)), ("relu", nn.ReLU()), ("block", ResidualBlock(8)),
        ("flatten", nn.Flatten()), ("fc", nn.Linear(8 * height * width, num_classes)),
    ]))


# ------------------------------------------------------------------------------ the steps
def load_splits(dataset: str, data_root: Path | None, seed: int):
    """Seeded train / validation / held-out splits (``DataSplits``), as the command draws them."""
    from naslib_bayes.data import load_dataset
    from naslib_bayes.errors import UserError

    if dataset == "digits":
        return load_dataset("digits", seed=seed)  # 60% train, 20% validation, 20% held out
    if data_root is None:
        raise UserError(f"--data-root is required with --dataset {dataset}")
    return load_dataset("mnist", data_root, seed=seed, val_size=MNIST_VAL_SIZE)


def make_config(args: argparse.Namespace):
    from naslib_bayes.compression import CompressionConfig

    # The command's split of the epochs: the last third fine-tunes the pruned network. `sqrt_cost`
    # prices a switch by the square root of the parameters its unit keeps alive, so that a conv2
    # channel (which feeds a block of fc1's inputs) is not as cheap to keep as one fc1 neuron.
    return CompressionConfig(lam=args.lam, epochs=args.epochs, finetune_epochs=round(args.epochs / 3),
                             max_params=args.max_params, lam_scale="sqrt_cost")


def train_baseline(model: nn.Module, splits, cfg, seed: int, augment, log) -> tuple[nn.Module, float]:
    """The dense network trained from ``model``'s initial weights; returns it and its held-out accuracy."""
    from naslib_bayes.compression import evaluate, train_dense

    dense = copy.deepcopy(model)  # compress() leaves `model` as it is: both start from the same weights
    # no torch.manual_seed needed: dropout masks come from streams seeded by `seed` (the global state is left alone)
    train_dense(dense, splits.train, cfg, seed, augment=augment, log=log)
    return dense, evaluate(dense, splits.test)


def run_compression(model: nn.Module, splits, cfg, seed: int, augment, log):
    """``CompressionOutcome`` of compressing ``model`` on the training split (validation for the log only)."""
    from naslib_bayes.compression import compress

    return compress(model, splits.train, cfg, seed, augment=augment, val=splits.val if log else None, log=log)


def save_and_reload(outcome, out: Path, images: torch.Tensor, **description) -> tuple[nn.Sequential, float]:
    """Save the compressed network, load it back and compare outputs.

    Args: images (N, C, H, W), the held-out images. Returns the reloaded network and the largest
    absolute difference between its logits and the in-memory network's, both (N, classes).
    """
    from naslib_bayes.compression import load_compressed, save_compressed

    kept = dict(zip(outcome.layer_names, outcome.widths_after))
    save_compressed(outcome.model, out, tuple(images.shape[1:]), kept_units=kept, inputs=outcome.inputs_after,
                    **description)
    reloaded = load_compressed(out)  # rebuilt from widths.json; weights read with weights_only=True
    with torch.no_grad():
        difference = (reloaded(images) - outcome.model.eval()(images)).abs().max()
    return reloaded, float(difference)


def unsupported_model_message(splits, cfg, seed: int) -> str:
    """The one-line error ``compress`` raises for a residual network (before any training)."""
    from naslib_bayes.compression import UnsupportedModelError, compress

    try:
        compress(build_residual_cnn(splits.train.image_shape, splits.train.num_classes), splits.train, cfg, seed)
    except UnsupportedModelError as exc:
        return str(exc)
    raise AssertionError("compress accepted a residual network")


# ------------------------------------------------------------------------------ reporting
def layer_rows(model: nn.Module, outcome) -> list[tuple[str, str, int, int]]:
    """(name, what its units are, before, after): the first layer's inputs, then every layer."""
    modules = dict(model.named_modules())
    first = modules[outcome.layer_names[0]]
    rows = [("inputs", "channels" if isinstance(first, nn.Conv2d) else "features",
             outcome.inputs_before, outcome.inputs_after)]
    for name, before, after in zip(outcome.layer_names, outcome.widths_before, outcome.widths_after):
        rows.append((name, "channels" if isinstance(modules[name], nn.Conv2d) else "neurons", before, after))
    return rows


def print_report(rows, outcome, accuracy_dense: float, accuracy_compressed: float) -> None:
    print(f"\n{'layer':<8}{'units':<10}{'before':>8}    {'after':>6}{'kept':>9}")
    for name, kind, before, after in rows:
        print(f"{name:<8}{kind:<10}{before:>8} -> {after:>6}{100 * after / before:>8.1f}%")
    print(f"(the last layer's {outcome.widths_after[-1]} outputs are the classes: never pruned)\n")
    for what, before, after in (("parameters", outcome.params_before, outcome.params_after),
                                ("FLOPs", outcome.flops_before, outcome.flops_after)):
        print(f"{what:<11}{before:>11,} -> {after:>9,}   ({100 * (1 - after / before):.1f}% removed)")
    print("(FLOPs: multiply-accumulates of the conv and linear layers per image)")
    print(f"held-out accuracy: dense {accuracy_dense:.2f}%, compressed {accuracy_compressed:.2f}% "
          f"({accuracy_compressed - accuracy_dense:+.2f} pp)")


# ------------------------------------------------------------------------------ main
def main(argv=None) -> dict:
    args = parse_args(argv)
    from naslib_bayes.errors import exit_on_user_error

    with exit_on_user_error():  # bad input: one line on stderr and exit code 2, as the commands do
        return run(args)


def run(args: argparse.Namespace) -> dict:
    from naslib_bayes.results import make_folder

    start = time.perf_counter()
    cfg = make_config(args)  # checks the options before any data is read
    splits = load_splits(args.dataset, args.data_root, args.seed)
    make_folder(args.out, "--out")  # a file in the way fails here, not when saving after the training
    train, test = splits.train, splits.test
    print(f"{args.dataset}: {len(train)} training images, {len(test)} held out (seed {args.seed}), "
          f"{train.image_shape[1]}x{train.image_shape[2]} pixels, {train.num_classes} classes")
    torch.manual_seed(args.seed)
    model = build_cnn(train.image_shape, train.num_classes)
    outcome, accuracy_dense, accuracy_compressed = compress_and_compare(model, splits, cfg, args)
    rows = layer_rows(model, outcome)
    print_report(rows, outcome, accuracy_dense, accuracy_compressed)
    if outcome.budget_met is False:  # pruning stops at the budget but cannot force it
        print(f"note: no pruning update reached the budget of {cfg.max_params:g} within the sparse epochs; "
              "raise --lambda or --epochs")
    reload_difference = report_reload(outcome, args, test)
    message = unsupported_model_message(splits, cfg, args.seed)
    print(f"\na residual network is refused: UnsupportedModelError: {message}")
    wall = time.perf_counter() - start
    print(f"\n{wall:.0f} s in all")
    return {
        "dataset": args.dataset, "seed": args.seed, "config": cfg.as_dict(), "out": args.out, "rows": rows,
        **{key: getattr(outcome, key) for key in COPIED_FIELDS},
        "params_removed": 1 - outcome.params_after / outcome.params_before,
        "flops_removed": 1 - outcome.flops_after / outcome.flops_before, "budget_met": outcome.budget_met,
        "accuracy_dense": accuracy_dense, "accuracy_compressed": accuracy_compressed,
        "compressed_model": outcome.model, "reload_max_abs_diff": reload_difference,
        "unsupported_message": message, "wall_time_s": wall,
    }


#: Fields of the ``CompressionOutcome`` that :func:`main` returns as they are.
COPIED_FIELDS = ("layer_names", "widths_before", "widths_after", "inputs_before", "inputs_after",
                 "params_before", "params_after", "flops_before", "flops_after")


def compress_and_compare(model: nn.Module, splits, cfg, args: argparse.Namespace):
    """``(outcome, dense accuracy, compressed accuracy)``: the baseline and the compression of ``model``."""
    from naslib_bayes.compression import evaluate
    from naslib_bayes.data import default_augment

    augment = default_augment(args.dataset, splits.train)
    log = print if args.verbose else None
    print(f"training the dense baseline ({cfg.epochs} epochs) ...", flush=True)
    _, accuracy_dense = train_baseline(model, splits, cfg, args.seed, augment, log)
    budget = "" if cfg.max_params is None else f", budget {cfg.max_params:g} of the parameters"
    print(f"compressing (lambda {cfg.lam:g}, {cfg.epochs} epochs, the last {cfg.finetune_epochs} or more "
          f"fine-tuning{budget}) ...", flush=True)
    outcome = run_compression(model, splits, cfg, args.seed, augment, log)
    return outcome, accuracy_dense, evaluate(outcome.model, splits.test)


def report_reload(outcome, args: argparse.Namespace, test) -> float:
    """Save, reload and compare on the held-out split; returns the largest logit difference."""
    from naslib_bayes.compression import evaluate

    reloaded, difference = save_and_reload(outcome, args.out, test.images, dataset=args.dataset, seed=args.seed)
    print(f"\nsaved to {args.out}/ (model.pt, widths.json); reloaded with weights_only=True: largest "
          f"|logit difference| on the {len(test)} held-out images {difference:.2g}, "
          f"accuracy {evaluate(reloaded, test):.2f}%")
    return difference


if __name__ == "__main__":
    main()
