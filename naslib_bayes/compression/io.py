"""Saving and loading compressed networks without pickled code.

A compressed network is an ``nn.Sequential`` of supported modules whose sizes are not those of
any shipped model, so it is stored as two files:

* ``widths.json`` — the architecture: one entry per module with its type and constructor
  arguments (channel and neuron counts included), the input shape, and the kept units per
  layer;
* ``model.pt`` — the ``state_dict``, a plain mapping of tensors, which
  :func:`load_compressed` reads with ``torch.load(..., weights_only=True)``: loading never
  executes code from the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from naslib_bayes.compression.trace import InputSelect
from naslib_bayes.errors import UserError
from naslib_bayes.results import atomic_write, atomic_write_json, make_folder

FORMAT = "naslib-bayes-compressed-cnn/1"
WEIGHTS_FILE = "model.pt"
WIDTHS_FILE = "widths.json"


def _pair(value) -> Any:
    return list(value) if isinstance(value, (tuple, list)) else value


def module_spec(module: nn.Module) -> dict[str, Any]:
    """Type and constructor arguments of one supported module (JSON-serialisable)."""
    if type(module) is nn.Conv2d:
        return {"type": "Conv2d", "in_channels": module.in_channels, "out_channels": module.out_channels,
                "kernel_size": _pair(module.kernel_size), "stride": _pair(module.stride),
                "padding": _pair(module.padding), "dilation": _pair(module.dilation),
                "bias": module.bias is not None, "padding_mode": module.padding_mode}
    if type(module) is nn.Linear:
        return {"type": "Linear", "in_features": module.in_features, "out_features": module.out_features,
                "bias": module.bias is not None}
    if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d):
        return {"type": type(module).__name__, "num_features": module.num_features, "eps": module.eps,
                "momentum": module.momentum, "affine": module.affine,
                "track_running_stats": module.track_running_stats}
    if type(module) is nn.ReLU:
        return {"type": "ReLU"}
    if type(module) is nn.MaxPool2d:
        return {"type": "MaxPool2d", "kernel_size": _pair(module.kernel_size), "stride": _pair(module.stride),
                "padding": _pair(module.padding), "dilation": _pair(module.dilation), "ceil_mode": module.ceil_mode}
    if type(module) is nn.AvgPool2d:
        return {"type": "AvgPool2d", "kernel_size": _pair(module.kernel_size), "stride": _pair(module.stride),
                "padding": _pair(module.padding), "ceil_mode": module.ceil_mode,
                "count_include_pad": module.count_include_pad, "divisor_override": module.divisor_override}
    if type(module) is nn.AdaptiveAvgPool2d:
        return {"type": "AdaptiveAvgPool2d", "output_size": _pair(module.output_size)}
    if type(module) is nn.Flatten:
        return {"type": "Flatten", "start_dim": module.start_dim, "end_dim": module.end_dim}
    if type(module) is nn.Dropout:
        return {"type": "Dropout", "p": module.p}
    if type(module) is nn.Identity:
        return {"type": "Identity"}
    if type(module) is InputSelect:
        return {"type": "InputSelect", "num_inputs": module.num_inputs, "kept": int(module.index.numel())}
    raise UserError(f"cannot save module type {type(module).__name__} in a compressed network")


def _tuple(value):
    return tuple(value) if isinstance(value, list) else value


def build_module(spec: dict[str, Any]) -> nn.Module:
    """The (freshly initialised) module a :func:`module_spec` entry describes."""
    try:
        kind = spec["type"]
        if kind == "Conv2d":
            return nn.Conv2d(spec["in_channels"], spec["out_channels"], _tuple(spec["kernel_size"]),
                             stride=_tuple(spec["stride"]), padding=_tuple(spec["padding"]),
                             dilation=_tuple(spec["dilation"]), bias=spec["bias"], padding_mode=spec["padding_mode"])
        if kind == "Linear":
            return nn.Linear(spec["in_features"], spec["out_features"], bias=spec["bias"])
        if kind in ("BatchNorm1d", "BatchNorm2d"):
            return getattr(nn, kind)(spec["num_features"], eps=spec["eps"], momentum=spec["momentum"],
                                     affine=spec["affine"], track_running_stats=spec["track_running_stats"])
        if kind == "ReLU":
            return nn.ReLU()
        if kind == "MaxPool2d":
            return nn.MaxPool2d(_tuple(spec["kernel_size"]), stride=_tuple(spec["stride"]),
                                padding=_tuple(spec["padding"]), dilation=_tuple(spec["dilation"]),
                                ceil_mode=spec["ceil_mode"])
        if kind == "AvgPool2d":
            return nn.AvgPool2d(_tuple(spec["kernel_size"]), stride=_tuple(spec["stride"]),
                                padding=_tuple(spec["padding"]), ceil_mode=spec["ceil_mode"],
                                count_include_pad=spec["count_include_pad"], divisor_override=spec["divisor_override"])
        if kind == "AdaptiveAvgPool2d":
            return nn.AdaptiveAvgPool2d(_tuple(spec["output_size"]))
        if kind == "Flatten":
            return nn.Flatten(spec["start_dim"], spec["end_dim"])
        if kind == "Dropout":
            return nn.Dropout(spec["p"])
        if kind == "Identity":
            return nn.Identity()
        if kind == "InputSelect":
            return InputSelect(spec["num_inputs"], torch.arange(spec["kept"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: e.g. a negative size
        raise UserError(f"malformed module entry {spec!r}: {exc}") from None
    raise UserError(f"unknown module type {spec.get('type')!r}")


def save_compressed(model: nn.Sequential, out_dir: str | os.PathLike, input_shape: Sequence[int], /,
                    **extra: Any) -> tuple[Path, Path]:
    """Write ``model.pt`` (state dict) and ``widths.json`` (architecture) into ``out_dir``.

    ``extra`` (JSON-serialisable, e.g. kept units per layer) is stored in ``widths.json`` too.
    Returns the two paths.
    """
    out = Path(out_dir)
    make_folder(out, "output folder")  # a file in the way is one line naming it, not FileExistsError
    description = {"format": FORMAT, "input_shape": [int(s) for s in input_shape],
                   "modules": [module_spec(m) for m in model], **extra}
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    weights = atomic_write(out / WEIGHTS_FILE, lambda handle: torch.save(state, handle), binary=True)
    widths = atomic_write_json(out / WIDTHS_FILE, description)
    return weights, widths


def read_description(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``widths.json`` of a saved compressed network (``path``: the file or its folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / WIDTHS_FILE
    try:
        description = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise UserError(f"{path} is not a compressed-network description (format {FORMAT!r})")
    return description


def _build_model(description: dict[str, Any], path: Path) -> nn.Sequential:
    """The (freshly initialised) network of a description read from ``path``; damage names the file."""
    specs = description.get("modules")
    if not isinstance(specs, list) or not specs:
        raise UserError(f"{path}: 'modules' must be a non-empty list of module entries, got {specs!r}")
    try:
        return nn.Sequential(*[build_module(spec) for spec in specs])
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def _saved_dtype(state) -> torch.dtype:
    """The dtype of the saved weights (their first floating tensor's; float32 when there is none)."""
    tensors = state.values() if isinstance(state, dict) else ()
    return next((v.dtype for v in tensors if isinstance(v, torch.Tensor) and v.is_floating_point()), torch.float32)


def load_compressed(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Sequential:
    """The network saved by :func:`save_compressed` in ``directory``, in eval mode and the saved dtype.

    The weights are read with ``torch.load(..., weights_only=True)``; torch's global random
    stream is left where it was.
    """
    directory = Path(directory)
    with torch.random.fork_rng(devices=[]):  # the layers' default initialisation, replaced by the file's weights
        model = _build_model(read_description(directory), directory / WIDTHS_FILE)
    weights = directory / WEIGHTS_FILE
    if not weights.exists():
        raise UserError(f"{weights} does not exist")
    try:
        state = torch.load(weights, map_location=map_location, weights_only=True)
    except Exception as exc:  # damaged or foreign file
        raise UserError(f"{weights} cannot be read as a state dict: {exc}") from None
    try:
        model.to(_saved_dtype(state)).load_state_dict(state)  # load_state_dict keeps the modules' dtype
    except RuntimeError as exc:
        raise UserError(f"{weights} does not match {directory / WIDTHS_FILE}: {exc}") from None
    return model.to(map_location).eval()
