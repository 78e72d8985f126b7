"""``naslib-bayes train``: train a derived architecture from scratch and test it (NAS's evaluation phase)."""

from __future__ import annotations

from pathlib import Path

from naslib_bayes.commands import common


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train an architecture from scratch and report its test accuracy")
    parser.add_argument("--arch", required=True,
                        help="NB201 cell string, DARTS genotype (JSON text or file) or a search's result.json")
    parser.add_argument("--dataset", required=True, help="digits, mnist, cifar10, cifar100 or ImageNet16-120")
    parser.add_argument("--data-root", type=Path, help="folder of the dataset's files (digits needs none)")
    parser.add_argument("--epochs", type=common.positive_int, required=True, help="training epochs")
    parser.add_argument("--channels", type=common.positive_int, help="initial channels (NB201: 16, DARTS: 36)")
    parser.add_argument("--cells", type=common.positive_int, help="NB201: cells per stage (5); DARTS: cells (20)")
    parser.add_argument("--batch-size", type=common.positive_int, help="batch size (NB201: 256, DARTS: 96)")
    parser.add_argument("--lr", type=common.positive_float, help="initial learning rate (NB201: 0.1, DARTS: 0.025)")
    parser.add_argument("--weight-decay", type=common.non_negative_float, help="weight decay (NB201: 5e-4, DARTS: 3e-4)")
    parser.add_argument("--cutout", type=common.non_negative_int,
                        help="cutout side (default: 16 CIFAR, 8 ImageNet16, 7 MNIST, 2 digits; 0: off)")
    parser.add_argument("--auxiliary-weight", type=common.non_negative_float, help="DARTS auxiliary head loss weight (0.4; 0: no head)")
    # below 1: at 1 every sample is dropped and there is nothing to rescale
    parser.add_argument("--drop-path", type=common.unit_interval(with_0=True, with_1=False, what="probability"),
                        help="DARTS final drop-path probability (0.2)")
    parser.add_argument("--resume", action="store_true", help="continue the training checkpointed in --out")
    common.add_device(parser)
    common.add_seed(parser)
    common.add_out(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from naslib_bayes.training.evaluate import TrainConfig, load_training_data, resolve_settings, run_training

    import torch

    torch.set_num_threads(args.threads)
    cfg = TrainConfig(
        arch=args.arch, dataset=args.dataset, epochs=args.epochs,
        data_root=None if args.data_root is None else str(args.data_root), seed=args.seed, channels=args.channels,
        cells=args.cells, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, cutout=args.cutout,
        auxiliary_weight=args.auxiliary_weight, drop_path=args.drop_path, device=args.device,
    )
    settings = resolve_settings(cfg)  # a bad architecture or setting is an error before anything is written
    data = load_training_data(cfg, settings, torch.device(args.device))  # so is data it cannot read
    out = common.prepare_resumable_out(args.out, args.overwrite, args.resume, args.held_folders)
    bar, progress = common.step_bar(f"train {args.dataset}")

    with bar:
        result = run_training(cfg, out, resume=args.resume, progress=progress, data=data)
    path = common.write_final_result(out, result, writes_checkpoints=True)
    print(f"test accuracy {result['test_accuracy']:.2f}%  -> {path}")
    return 0
