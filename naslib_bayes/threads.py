"""How many CPU threads torch uses for a block of work."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` (at least 1) torch intra-op threads, restoring the caller's setting.

    The networks here are small: extra threads mostly add synchronisation, which costs an order
    of magnitude on a busy machine, and the thread count changes float reductions, so a fixed
    count also keeps results identical however many workers run beside each other.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)
