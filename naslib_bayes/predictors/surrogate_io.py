"""The versioned ``surrogate.pt`` file: save and load a meta-trained TNAS surrogate.

The file is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(path, weights_only=True)`` -- loading it never executes code:

    format             "naslib-bayes/tnas-surrogate"
    version            FORMAT_VERSION
    surrogate_config   SurrogateConfig.to_dict()
    state_dict         the surrogate's parameters and buffers
    evidence           {"cells": (m, 6) long, "values": (m,) float64, "dataset": (m,) long}
    meta_phi           images mode: (n_meta, c) float64, else absent
    info               plain metadata: meta-training datasets, seed, config, log
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from naslib_bayes.errors import UserError, cause
from naslib_bayes.results import atomic_write
from naslib_bayes.predictors.surrogate import Evidence, SurrogateConfig, TNASSurrogate

FORMAT = "naslib-bayes/tnas-surrogate"
FORMAT_VERSION = 1
FILE_NAME = "surrogate.pt"


def resolve(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``path/surrogate.pt`` when ``path`` is a folder."""
    path = Path(path)
    return path / FILE_NAME if path.is_dir() else path


def save(surrogate: TNASSurrogate, path: str | os.PathLike, info: dict[str, Any] | None = None) -> Path:
    """Write ``surrogate`` (with its evidence) to ``path`` atomically; returns the file written."""
    path = resolve(path)
    ev = surrogate.evidence
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "surrogate_config": surrogate.config.to_dict(),
        "state_dict": {k: v.detach().clone() for k, v in surrogate.state_dict().items()},
        "info": dict(info or {}),
    }
    if ev is not None:
        payload["evidence"] = {"cells": ev.cells.clone(), "values": ev.values.clone(), "dataset": ev.dataset.clone()}
    if surrogate.meta_phi is not None:
        payload["meta_phi"] = surrogate.meta_phi.clone()
    return atomic_write(path, lambda handle: torch.save(payload, handle), binary=True)


def existing(path: str | os.PathLike) -> Path:
    """The surrogate file of ``path`` (a file or its folder); a :class:`UserError` when there is none."""
    file = resolve(path)
    if not file.exists():
        raise UserError(f"surrogate file {str(file)!r} does not exist")
    return file


def load(path: str | os.PathLike) -> tuple[TNASSurrogate, dict[str, Any]]:
    """Rebuild a surrogate from a file (or its folder); returns it and the stored ``info``."""
    file = existing(path)
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise UserError(f"{file}: not a readable surrogate file ({cause(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{file}: not a naslib-bayes TNAS surrogate (no format {FORMAT!r})")
    if payload.get("version") != FORMAT_VERSION:
        raise UserError(f"{file}: surrogate format version {payload.get('version')!r}; this naslib-bayes reads {FORMAT_VERSION}")
    try:  # a file of the right format whose contents were edited or damaged
        surrogate = TNASSurrogate(SurrogateConfig.from_dict(payload["surrogate_config"]))
        surrogate.load_state_dict(payload["state_dict"])
        if "evidence" in payload:
            surrogate.set_evidence(_evidence(payload["evidence"]), payload.get("meta_phi"))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise UserError(f"{file}: a damaged surrogate file ({cause(exc)})") from None
    return surrogate, dict(payload.get("info", {}))


def _evidence(stored: dict[str, Any]) -> Evidence:
    """The stored evidence, checked: cells (m, 6), values (m,) and dataset (m,) must agree."""
    cells, values, dataset = stored["cells"], stored["values"], stored["dataset"]
    m = cells.shape[0]
    if cells.dim() != 2 or cells.shape[1] != 6 or values.shape != (m,) or dataset.shape != (m,):
        raise ValueError(f"evidence shapes cells {tuple(cells.shape)}, values {tuple(values.shape)}, "
                         f"dataset {tuple(dataset.shape)} do not agree")
    return Evidence(cells, values, dataset)
