"""``naslib-bayes list``: every registered optimizer with its kind."""

from __future__ import annotations

from naslib_bayes.optimizers import registry


def register(subparsers) -> None:
    parser = subparsers.add_parser("list", help="list the optimizers and their kinds")
    parser.set_defaults(run=run)


def run(args) -> int:
    width = max(len(name) for name in registry.OPTIMIZERS)
    for spec in registry.OPTIMIZERS.values():
        print(f"{spec.name:<{width}}  {spec.kind:<9}  {spec.summary}")
    return 0
