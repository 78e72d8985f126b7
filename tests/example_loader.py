"""Import a script of ``examples/`` as a module (the folder is not a package), and run it."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str) -> ModuleType:
    """The module of ``examples/<name>.py``, imported once per test session."""
    key = f"naslib_bayes_example_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def run_example(module: ModuleType, argv: list[str]) -> tuple[dict, str]:
    """The example's returned dict and what it printed (module-scoped fixtures cannot use capsys).

    Also checks that ``main`` leaves the caller's torch thread setting as it found it.
    """
    import torch

    stdout = io.StringIO()
    before = torch.get_num_threads()
    with contextlib.redirect_stdout(stdout):
        result = module.main(argv)
    assert torch.get_num_threads() == before
    return result, stdout.getvalue()
