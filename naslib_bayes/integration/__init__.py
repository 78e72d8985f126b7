"""Running naslib-bayes's optimizers inside NASLib, and NASLib's optimizers on naslib-bayes's data.

naslib-bayes never depends on NASLib: importing this package imports nothing from NASLib
and patches nothing. :func:`load_naslib` does both, on request: it applies the runtime fixes
of :mod:`naslib_bayes.integration.compat`, imports the parts of NASLib the integration uses,
checks that they are recent enough, and raises :class:`NaslibUnavailable` (naming what to
install) otherwise.

Modules:

* :mod:`.compat` -- the runtime fixes NASLib needs on Python 3.11 and current libraries;
* :mod:`.dataset_api` -- NASLib's NB201 ``dataset_api`` from a naslib-bayes benchmark (no NASLib
  needed); ``naslib_dataset_api`` is re-exported here;
* :mod:`.data` -- naslib-bayes's image data as NASLib-style search/evaluation loaders;
* :mod:`.trainer` -- NASLib's Trainer taking those loaders (imports NASLib);
* :mod:`.run` -- ``naslib-run`` as a library: NASLib config, optimizer table, search + evaluate
  (imports NASLib).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import warnings
from types import SimpleNamespace

from naslib_bayes.errors import UserError

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "NASLib is installed from its repository, not from the package registry: "
    "git clone -b Develop https://github.com/automl/NASLib, put the clone on PYTHONPATH "
    "(its setup refuses Python > 3.9), and install its runtime dependencies with "
    "pip install -e \".[naslib]\" in the naslib-bayes checkout (see the README, 'Using NASLib')"
)
#: NASLib commit the integration was verified against (branch Develop).
VERIFIED_NASLIB_COMMIT = "0b51bc184622a98317ea1048b2daf7dd1150f243"


class NaslibUnavailable(UserError, ImportError):
    """NASLib is missing, too old, or one of its dependencies does not import."""


# What the integration needs from NASLib: module -> attributes. Checked by load_naslib().
_REQUIRED = {
    "naslib.search_spaces": ("NasBench201SearchSpace", "NasBench301SearchSpace"),  # 301: the DARTS space
    "naslib.search_spaces.core.query_metrics": ("Metric",),
    "naslib.search_spaces.core.graph": ("Graph", "EdgeData"),
    "naslib.search_spaces.core.primitives": ("MixedOp",),
    "naslib.optimizers.core.metaclasses": ("MetaOptimizer",),
    "naslib.optimizers": ("DARTSOptimizer", "GDASOptimizer", "DrNASOptimizer", "RandomSearch",
                          "RegularizedEvolution", "LocalSearch", "Bananas", "Npenas"),
    "naslib.predictors.predictor": ("Predictor",),
    "naslib.defaults.trainer": ("Trainer",),
    "naslib.defaults.predictor_evaluator": ("PredictorEvaluator",),
    "naslib.utils": ("get_config_from_args", "parse_args", "load_config", "Checkpointer"),
}


def _too_old(missing: str) -> NaslibUnavailable:
    return NaslibUnavailable(
        f"the installed NASLib is too old or not the Develop branch ({missing}); "
        f"naslib-bayes needs NASLib's Develop branch (verified at commit {VERIFIED_NASLIB_COMMIT[:12]} or later). "
        + INSTALL_HINT
    )


_LOADED: SimpleNamespace | None = None


class NaslibPatchedWarning(UserWarning):
    """NASLib was patched to run here (shown once per process outside ``naslib-run``)."""


def load_naslib(announce: bool = True) -> SimpleNamespace:
    """Apply the compatibility fixes, import NASLib and return its modules by short name.

    Returns a namespace with ``search_spaces``, ``query_metrics``, ``graph``, ``primitives``,
    ``metaclasses``, ``optimizers``, ``predictor``, ``trainer``, ``utils``. Raises
    :class:`NaslibUnavailable` when NASLib is missing, too old, or a dependency of it fails.

    The fixes also change what the user's own NASLib code does in this process (e.g. NASLib's
    baselines run with the patched ``Graph``), so the first load says which were applied as a
    :class:`NaslibPatchedWarning`, unless ``announce`` is False (``naslib-run`` logs each fix).
    """
    global _LOADED
    if _LOADED is not None:
        return _LOADED
    from naslib_bayes.integration import compat

    if importlib.util.find_spec("naslib") is None:
        raise NaslibUnavailable("NASLib is not importable (no module named 'naslib'). " + INSTALL_HINT)
    compat.apply_pre_import_fixes()
    modules = {}
    for name, attributes in _REQUIRED.items():
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] == "naslib":
                raise _too_old(f"no module {exc.name}") from None
            raise NaslibUnavailable(
                f"NASLib is present but its dependency {exc.name!r} is missing (importing {name}). " + INSTALL_HINT
            ) from None
        except ImportError as exc:
            raise NaslibUnavailable(f"NASLib is present but importing {name} failed ({exc}). " + INSTALL_HINT) from None
        for attribute in attributes:
            if not hasattr(module, attribute):
                raise _too_old(f"{name} has no {attribute}")
        modules[name.rsplit(".", 1)[-1]] = module
    search_params = inspect.signature(modules["trainer"].Trainer.search).parameters
    if "report_incumbent" not in search_params:
        raise _too_old("Trainer.search has no report_incumbent")
    if "dataset_api" not in inspect.signature(modules["search_spaces"].NasBench201SearchSpace.query).parameters:
        raise _too_old("NasBench201SearchSpace.query has no dataset_api")
    compat.apply_post_import_fixes()
    _LOADED = SimpleNamespace(**modules)
    if announce and compat.APPLIED:
        warnings.warn(f"naslib-bayes patched NASLib in this process: {', '.join(compat.APPLIED)} "
                      "(naslib_bayes.integration.compat.APPLIED says what each did)", NaslibPatchedWarning, stacklevel=2)
    return _LOADED


def naslib_available() -> tuple[bool, str]:
    """(True, "") when :func:`load_naslib` succeeds, else (False, the reason)."""
    try:
        load_naslib(announce=False)
        return True, ""
    except NaslibUnavailable as exc:
        return False, str(exc)


def hyperparameter_section(search, name: str) -> dict:
    """``search.<name>``, optimizer ``name``'s hyper-parameters in a NASLib config's ``search`` (a
    mapping, or the keyword arguments an optimizer was given), as a dict: ``{}`` when absent or
    empty; anything but a mapping is one line naming the key, not a TypeError from ``dict()``."""
    section = search.get(name) if hasattr(search, "get") else None
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise UserError(f"search.{name} must be a mapping of {name}'s hyper-parameters "
                        f"(search: {{{name}: {{NAME: VALUE}}}}), got {section!r}")
    return dict(section)


_LAZY = {
    "naslib_dataset_api": "naslib_bayes.integration.dataset_api",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
