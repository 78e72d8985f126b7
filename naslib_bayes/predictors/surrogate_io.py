"""The versioned ``surrogate.pt`` file: save and load a meta-trained TNAS surrogate.

The file is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(path, weights_only=True)`` -- reading it never executes code. One kind of file
names code: an ``images``-mode surrogate whose feature extractor is a user ``module:factory``
imports that module and calls the factory when it is rebuilt. :func:`load` refuses such a file
unless the caller trusts it (``trust_feature_extractor``); the built-in extractors
(``random-conv``, ``pixels``) are always rebuilt. The file holds:

    format             "naslib-bayes/tnas-surrogate"
    version            FORMAT_VERSION
    surrogate_config   SurrogateConfig.to_dict()
    state_dict         the surrogate's parameters and buffers
    evidence           {"cells": (m, 6) long, "values": (m,) float64, "dataset": (m,) long}
    meta_phi           images mode: (n_meta, c) float64, else absent
    info               plain metadata: meta-training datasets, seed, config, log

A file whose tensors hold NaN or an infinity (but a constraint's open bound) is refused when it
is read, and never written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from naslib_bayes.errors import UserError, cause
from naslib_bayes.results import atomic_write
from naslib_bayes.predictors.surrogate import Evidence, SurrogateConfig, TNASSurrogate
from naslib_bayes.search_spaces.nasbench201.cell import NUM_OPS

FORMAT = "naslib-bayes/tnas-surrogate"
FORMAT_VERSION = 1
FILE_NAME = "surrogate.pt"


def resolve(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``path/surrogate.pt`` when ``path`` is a folder."""
    path = Path(path)
    return path / FILE_NAME if path.is_dir() else path


def save(surrogate: TNASSurrogate, path: str | os.PathLike, info: dict[str, Any] | None = None) -> Path:
    """Write ``surrogate`` (with its evidence) to ``path`` atomically; returns the file written.

    ``path`` is the file (its missing folders are made), or an existing folder, then
    ``path/surrogate.pt``: a path that does not exist yet names a file, not a folder to make.
    ``info`` is stored with it as plain values and comes back from :func:`load`.

    A surrogate holding NaN or infinite values is a :class:`UserError` (see :func:`require_finite`)
    and nothing is written: :func:`load` would refuse the file.
    """
    path = resolve(path)
    payload = _payload_of(surrogate, info)
    _require_finite_payload(payload)
    return atomic_write(path, lambda handle: torch.save(payload, handle), binary=True)


def require_finite(surrogate: TNASSurrogate) -> None:
    """A one-line :class:`UserError` naming the first of ``surrogate``'s tensors (weights, evidence)
    to hold NaN or an infinity: a training that diverged without a NaN loss. For a command to call
    before it replaces anything of an earlier run with the surrogate's files."""
    _require_finite_payload(_payload_of(surrogate))


def _require_finite_payload(payload: dict[str, Any]) -> None:
    name = _first_non_finite(_stored_tensors(payload))
    if name is not None:
        raise UserError(f"the meta-trained surrogate's {name} holds NaN or infinite values (meta-training diverged): "
                        "run again with a lower learning rate (meta-train --lr, or TNAS's meta_lr)")


def _payload_of(surrogate: TNASSurrogate, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """What :func:`save` writes for ``surrogate`` and ``info``, its tensors copied."""
    ev = surrogate.evidence
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "surrogate_config": surrogate.config.to_dict(),
        "state_dict": {k: v.detach().clone() for k, v in surrogate.state_dict().items()},
        "info": _plain(dict(info or {})),
    }
    if ev is not None:
        payload["evidence"] = {"cells": ev.cells.clone(), "values": ev.values.clone(), "dataset": ev.dataset.clone()}
    if surrogate.meta_phi is not None:
        payload["meta_phi"] = surrogate.meta_phi.clone()
    return payload


def _plain(value: Any) -> Any:
    """``value`` with numpy numbers and arrays (a seed from ``np.arange``, say) as Python ones:
    :func:`load` reads with ``weights_only=True``, which refuses a file holding any numpy object."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


def existing(path: str | os.PathLike) -> Path:
    """The surrogate file of ``path`` (a file or its folder); a :class:`UserError` when there is none."""
    file = resolve(path)
    if not file.exists():
        raise UserError(f"surrogate file {str(file)!r} does not exist")
    return file


def load(path: str | os.PathLike, trust_feature_extractor: bool | str = False) -> tuple[TNASSurrogate, dict[str, Any]]:
    """Rebuild a surrogate from a file (or its folder); returns it and the stored ``info``.

    ``trust_feature_extractor``: an ``images``-mode file with a user ``module:factory`` feature
    extractor is refused (rebuilding it imports the module and calls the factory) unless this is
    True, or is that extractor's name (a TNAS search trusts the one its ``feature_extractor``
    hyper-parameter names). Built-in extractors need no trust.
    """
    file, payload, config = _read(path)
    _refuse_untrusted_extractor(file, config, trust_feature_extractor)
    try:
        info = dict(_of_type(payload, "info", dict, {}))
        with torch.random.fork_rng(devices=[]):  # the layers' default initialisation, replaced by the file's weights
            surrogate = TNASSurrogate(config)
        surrogate.load_state_dict(_of_type(payload, "state_dict", dict))
        if "evidence" in payload:
            evidence = _evidence(_of_type(payload, "evidence", dict), len(config.meta_datasets))
            surrogate.set_evidence(evidence, _meta_phi(payload, config))
    except UserError as exc:  # the feature extractor the file names cannot be built here: the file is whole
        raise UserError(f"{file}: {exc}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise UserError(f"{file}: a damaged surrogate file ({cause(exc)})") from None
    return surrogate, info


def read_config(path: str | os.PathLike) -> SurrogateConfig:
    """The settings a surrogate file was meta-trained with (its encoders, meta-training datasets),
    read without rebuilding it: what a command checks its other arguments against before it writes."""
    return _read(path)[2]


def is_surrogate_file(file: Path) -> bool:
    """Whether ``file`` is a TNAS surrogate file of this package's format (any version)."""
    try:
        _payload(file)
    except UserError:
        return False
    return True


def _payload(file: Path) -> dict[str, Any]:
    """The stored payload of ``file``; a UserError unless it is a file of our surrogate format."""
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise UserError(f"{file}: not a readable surrogate file ({cause(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{file}: not a naslib-bayes TNAS surrogate (no format {FORMAT!r})")
    return payload


def _read(path: str | os.PathLike) -> tuple[Path, dict[str, Any], SurrogateConfig]:
    """(file, stored payload, surrogate config) of a surrogate file or its folder, each checked."""
    file = existing(path)
    payload = _payload(file)
    if payload.get("version") != FORMAT_VERSION:
        raise UserError(f"{file}: surrogate format version {payload.get('version')!r}; this naslib-bayes reads {FORMAT_VERSION}")
    try:  # a file of the right format whose contents were edited or damaged
        config = SurrogateConfig.from_dict(_of_type(payload, "surrogate_config", dict))
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{file}: a damaged surrogate file ({cause(exc)})") from None
    name = _first_non_finite(_stored_tensors(payload))
    if name is not None:  # one NaN weight made the first GP fit a LinAlgError traceback, after --out was made
        raise UserError(f"{file}: {name} holds NaN or infinite values (a damaged surrogate file, or one saved "
                        "from a diverged training): meta-train it again")
    return file, payload, config


def _stored_tensors(payload: dict[str, Any]) -> dict[str, Any]:
    """The tensors of a payload by the names a message gives them (``state_dict[KEY]``, ...)."""
    named = {}
    for group in ("state_dict", "evidence"):
        stored = payload.get(group)
        if isinstance(stored, dict):
            named.update({f"{group}[{key!r}]": value for key, value in stored.items()})
    named["meta_phi"] = payload.get("meta_phi")
    return named


# gpytorch stores a one-sided constraint's open side as an infinite bound
_BOUND_SUFFIXES = ("_constraint.lower_bound']", "_constraint.upper_bound']")


def _first_non_finite(tensors: dict[str, Any]) -> str | None:
    """The name of the first real tensor of ``tensors`` holding NaN or an infinity (a constraint's
    bound may be infinite), or None; entries of other types are left to the checks that read them."""
    for name, value in tensors.items():
        if not (isinstance(value, torch.Tensor) and value.is_floating_point()):
            continue
        bad = value.isnan() if name.endswith(_BOUND_SUFFIXES) else ~torch.isfinite(value)
        if bool(bad.any()):
            return name
    return None


def refuse_other_meta_training(path: str | os.PathLike, info: dict[str, Any], target: str | None = None,
                               option: str = "--out", **expected: Any) -> None:
    """Before reusing the surrogate at ``path`` (``info`` as :func:`load` returns it): a one-line
    :class:`UserError` if it was meta-trained on ``target`` (searching with it would not be
    transfer) or with another ``seed`` or ``iterations`` (the cap) than ``expected``. The message
    sends the user to ``option``, the one that named ``path`` (a surrogate left in an output
    folder, or a file given as ``--surrogate``)."""
    if target is not None and target in (info.get("meta_datasets") or []):
        raise UserError(f"{path} was meta-trained on {target}, the target: give another {option}")
    recorded = {"seed": info.get("seed"), "iterations": (info.get("meta_train_config") or {}).get("iterations")}
    for key, value in expected.items():
        if recorded[key] != value:
            raise UserError(f"{path} was meta-trained with {key} {recorded[key]!r}, not {value!r}: give another {option}")


BUILT_IN_EXTRACTORS = ("random-conv", "pixels")


def _refuse_untrusted_extractor(file: Path, config: SurrogateConfig, trust: bool | str) -> None:
    name = config.feature_extractor
    if config.dataset_encoder != "images" or name in BUILT_IN_EXTRACTORS or trust is True or trust == name:
        return
    raise UserError(f"{file}: its feature extractor {name!r} is user code, imported and run to load it; if you trust it, "
                    f"load with trust_feature_extractor=True (a tnas search: --opt feature_extractor={name})")


_MISSING = object()


def _of_type(stored: dict[str, Any], key: str, kind: type, default: Any = _MISSING) -> Any:
    """``stored[key]``, which must be a ``kind`` (or ``default`` when given and the key is absent)."""
    if key not in stored and default is not _MISSING:
        return default
    value = stored[key]
    if not isinstance(value, kind):
        raise TypeError(f"{key} is a {type(value).__name__}, not a {kind.__name__}")
    return value


def _evidence(stored: dict[str, Any], num_datasets: int) -> Evidence:
    """The stored evidence, checked: cells (m, 6), values (m,) and dataset (m,) must be tensors that
    agree, hold op indices, real values (returned as float64; :func:`_read` refused non-finite ones)
    and indices of the ``num_datasets`` meta-training datasets.

    Indices are used to look rows up: an op index of -1 or 5 would silently stand for another cell.
    """
    cells, values, dataset = (_of_type(stored, key, torch.Tensor) for key in ("cells", "values", "dataset"))
    m = cells.shape[0] if cells.dim() else 0
    if cells.dim() != 2 or cells.shape[1] != 6 or values.shape != (m,) or dataset.shape != (m,):
        raise ValueError(f"evidence shapes cells {tuple(cells.shape)}, values {tuple(values.shape)}, "
                         f"dataset {tuple(dataset.shape)} do not agree")
    _require_indices("evidence cells", cells, NUM_OPS)
    _require_indices("evidence dataset", dataset, num_datasets)
    if not values.is_floating_point():
        raise ValueError(f"evidence values: {values.dtype}, not real numbers")
    # the prior sums them into float64 (the GP's dtype), which refuses another float type
    return Evidence(cells, values.to(torch.float64), dataset)


def _meta_phi(stored: dict[str, Any], config: SurrogateConfig) -> torch.Tensor | None:
    """``images`` mode: the stored phi of each meta-training dataset (finite: :func:`_read`), checked
    to be (n_meta, context_dim): its rows are the contexts the evidence is seen with."""
    meta_phi = _of_type(stored, "meta_phi", torch.Tensor, None)
    if config.dataset_encoder != "images":
        return meta_phi
    expected = (len(config.meta_datasets), config.context_dim)
    if meta_phi is None or tuple(meta_phi.shape) != expected:
        found = "none" if meta_phi is None else f"shape {tuple(meta_phi.shape)}"
        raise ValueError(f"meta_phi: {found}, not the {expected} of one phi per meta-training dataset")
    return meta_phi


def _require_indices(name: str, indices: torch.Tensor, size: int) -> None:
    """A ValueError unless ``indices`` are integers in 0..size-1."""
    if indices.is_floating_point() or indices.is_complex():
        raise ValueError(f"{name}: {indices.dtype}, not integers")
    if indices.numel() and not (0 <= int(indices.min()) and int(indices.max()) < size):
        raise ValueError(f"{name}: {int(indices.min())}..{int(indices.max())}, not indices in 0..{size - 1}")
