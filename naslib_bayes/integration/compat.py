"""Runtime fixes that let NASLib's Develop branch import and run on Python 3.11 and current libraries.

NASLib's setup refuses Python above 3.9, but its source works on 3.11 once a few things it
relies on are put back. Each fix here is a small named function that

* does nothing until it is called (``import naslib_bayes`` never calls any of them; only
  ``naslib-bayes naslib-run`` and the NASLib integration tests do),
* is idempotent: calling it again changes nothing and returns False,
* logs one line on the ``naslib_bayes.integration.compat`` logger when it changes something,
* returns True when it changed something now.

The fixes:

``fix_collections_abc_aliases``
    Python 3.10 removed the aliases ``collections.Iterable``, ``collections.Mapping``, ...
    NASLib's GP-WL kernel (``isinstance(x, collections.Iterable)``) and others still use them.
``fix_torchvision``
    NASLib imports ``torchvision`` at module level everywhere (``naslib.utils`` imports
    ``torchvision.datasets`` and ``torchvision.transforms``), but only its data loaders use it.
    The torchvision wheel that pip resolves for a CPU build of torch is a CUDA build whose
    import fails (``operator torchvision::nms does not exist``), and torchvision may simply be
    absent. When ``import torchvision`` fails, a placeholder package takes its place: importing
    from it works, and *using* anything from it raises an ImportError that says why. naslib-bayes
    hands NASLib's Trainer its own data loaders, so the placeholder is never used by a run.
``fix_tensorwatch``
    NASLib's zero-cost predictors import the optional ``tensorwatch`` (its pinned version does not
    install on current Python). A placeholder module lets ``naslib.predictors`` import; the
    FLOPs/params zero-cost measures that need it raise an ImportError when used.
``fix_parameter_counter``
    NASLib's ``count_parameters_in_MB`` calls ``np.sum`` on a generator, which numpy 2.4 turned
    into a TypeError; the Trainer calls it for every one-shot optimizer and for BANANAS/NPENAS.
    The ``naslib`` extra of naslib-bayes pins ``numpy<2.4``; when a newer numpy is installed
    anyway, this fix rebinds the counter (in every loaded NASLib module that imported it) to an
    equivalent that sums a list. It runs after NASLib is imported.
``fix_graph_clone``
    NASLib's DARTS search space stores its auxiliary head's output (with autograd history) in
    the graph after each forward pass, and ``Graph.clone()`` cannot deep-copy it, so the
    one-shot optimizers' ``get_final_architecture()`` fails on that space. ``clone`` detaches
    such stored outputs first. It runs after NASLib is imported.
``fix_rmse_metric``
    NASLib's predictor evaluator (and its cross-validation) compute RMSEs with
    ``mean_squared_error(..., squared=False)``, which scikit-learn 1.6 removed; the evaluator
    then reports every metric as NaN. The NASLib modules that use it get a view of
    ``sklearn.metrics`` that accepts ``squared`` again. It runs after NASLib is imported.
``fix_unparse_settings``
    ``Graph.unparse()`` rebuilds a search space with default constructor arguments, so the
    final architecture of a one-shot search on a DARTS space built with ``auxiliary=False`` or
    another class count is retrained with NASLib's defaults instead. ``unparse`` copies those
    settings back. It runs after NASLib is imported.
"""

from __future__ import annotations

import collections
import collections.abc
import importlib
import logging
import sys
import types

from naslib_bayes.errors import cause

logger = logging.getLogger(__name__)

#: name of each fix applied in this process -> what it did
APPLIED: dict[str, str] = {}

_ABC_ALIASES = (
    "Awaitable", "Coroutine", "AsyncIterable", "AsyncIterator", "AsyncGenerator", "Hashable",
    "Iterable", "Iterator", "Generator", "Reversible", "Sized", "Container", "Callable",
    "Collection", "Set", "MutableSet", "Mapping", "MutableMapping", "MappingView", "KeysView",
    "ItemsView", "ValuesView", "Sequence", "MutableSequence", "ByteString",
)

# torchvision submodules NASLib imports by name (``import torchvision.transforms as T``,
# ``from torchvision.transforms import functional as F``, ``import torchvision.models``).
_TORCHVISION_SUBMODULES = ("datasets", "transforms", "transforms.functional", "models", "utils", "io", "ops")


def _record(name: str, what: str) -> bool:
    APPLIED[name] = what
    logger.info("NASLib compatibility fix %s: %s", name, what)
    return True


# ---- before NASLib is imported ----------------------------------------------------------
def fix_collections_abc_aliases() -> bool:
    """Restore ``collections.<ABC>`` aliases (removed in Python 3.10) that NASLib still uses."""
    if "collections_abc_aliases" in APPLIED:
        return False
    missing = [n for n in _ABC_ALIASES if hasattr(collections.abc, n) and not hasattr(collections, n)]
    if not missing:
        return False
    for name in missing:
        setattr(collections, name, getattr(collections.abc, name))
    return _record("collections_abc_aliases", f"restored collections.{{{', '.join(missing)}}} from collections.abc")


class _Unavailable:
    """Stands in for a class or function of a package that cannot be imported.

    Subclassing it works (NASLib subclasses torchvision transforms at import time); creating
    or calling it raises an ImportError naming the package and the reason.
    """

    _package = "?"
    _reason = "?"

    def __init__(self, *args, **kwargs):
        raise ImportError(
            f"{self._package} is unavailable in this process ({self._reason}); "
            f"{type(self).__qualname__} was needed. naslib-bayes replaced it with a placeholder so that "
            f"NASLib imports; install a working {self._package} to use this part of NASLib."
        )


def _placeholder_module(fullname: str, package: str, reason: str) -> types.ModuleType:
    module = types.ModuleType(fullname, f"naslib-bayes placeholder for {fullname} ({reason})")
    module.__path__ = []  # a package, so that submodules can be registered below it
    module.__naslib_bayes_placeholder__ = True
    base = type("_Unavailable", (_Unavailable,), {"_package": package, "_reason": reason})

    def __getattr__(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        made = type(attr, (base,), {"__module__": fullname, "__qualname__": f"{fullname}.{attr}"})
        setattr(module, attr, made)
        return made

    module.__getattr__ = __getattr__
    return module


def _install_placeholder_package(package: str, submodules: tuple[str, ...], reason: str) -> None:
    for key in [k for k in sys.modules if k == package or k.startswith(package + ".")]:
        del sys.modules[key]
    root = _placeholder_module(package, package, reason)
    root.__version__ = "0+unavailable"
    sys.modules[package] = root
    for sub in submodules:
        fullname = f"{package}.{sub}"
        parent_name, _, leaf = fullname.rpartition(".")
        module = _placeholder_module(fullname, package, reason)
        sys.modules[fullname] = module
        setattr(sys.modules[parent_name], leaf, module)


def _is_placeholder(name: str) -> bool:
    return bool(getattr(sys.modules.get(name), "__naslib_bayes_placeholder__", False))


def fix_torchvision() -> bool:
    """Put a placeholder ``torchvision`` in place when the real one does not import."""
    if "torchvision" in APPLIED or _is_placeholder("torchvision"):
        return False
    try:
        importlib.import_module("torchvision")
        for sub in ("datasets", "transforms"):
            importlib.import_module(f"torchvision.{sub}")
        return False
    except Exception as exc:  # ImportError when absent, RuntimeError for a CUDA-only build
        reason = f"import torchvision failed: {cause(exc)}"
    _install_placeholder_package("torchvision", _TORCHVISION_SUBMODULES, reason)
    return _record("torchvision", f"placeholder torchvision installed ({reason}); NASLib's own data loaders are unusable")


def fix_tensorwatch() -> bool:
    """Put a placeholder ``tensorwatch`` in place when it is not installed."""
    if "tensorwatch" in APPLIED or _is_placeholder("tensorwatch"):
        return False
    try:
        importlib.import_module("tensorwatch")
        return False
    except Exception as exc:
        reason = f"import tensorwatch failed: {type(exc).__name__}"
    _install_placeholder_package("tensorwatch", (), reason)
    return _record("tensorwatch", "placeholder tensorwatch installed; NASLib's flops/params zero-cost measures are unusable")


# ---- after NASLib is imported -----------------------------------------------------------
def _numpy_sums_generators() -> bool:
    import warnings

    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            np.sum(x for x in (1, 2))
            return True
        except TypeError:
            return False


def count_parameters_in_mb(model) -> float:
    """NASLib's ``count_parameters_in_MB`` (millions of parameters outside auxiliary heads)."""
    return sum(int(p.numel()) for name, p in model.named_parameters() if "auxiliary" not in name) / 1e6


def fix_parameter_counter() -> bool:
    """Rebind NASLib's parameter counter where numpy no longer sums generators (numpy >= 2.4)."""
    if "parameter_counter" in APPLIED or _numpy_sums_generators():
        return False
    utils = sys.modules.get("naslib.utils")
    original = getattr(utils, "count_parameters_in_MB", None)
    if original is None:
        raise RuntimeError("fix_parameter_counter runs after NASLib is imported (import naslib.utils first)")
    rebound = []
    for name, module in list(sys.modules.items()):
        if (name == "naslib" or name.startswith("naslib.")) and getattr(module, "count_parameters_in_MB", None) is original:
            module.count_parameters_in_MB = count_parameters_in_mb
            rebound.append(name)
    return _record("parameter_counter", f"numpy cannot sum generators: rebound count_parameters_in_MB in {len(rebound)} NASLib modules")


def _detach_stored_outputs(graph) -> int:
    """Detach tensors that carry autograd history from the attribute dicts of ``graph`` and its sub-graphs."""
    import torch

    count = 0
    for module in graph.modules():
        store = getattr(module, "graph", None)
        if not isinstance(store, dict):
            continue
        for key, value in list(store.items()):
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                store[key] = value.detach()
                count += 1
    return count


def fix_graph_clone() -> bool:
    """Let ``Graph.clone()`` copy a graph that has run forward with an auxiliary head.

    NASLib's DARTS space (``NasBench301SearchSpace``, auxiliary head on by default) keeps the
    head's output, a tensor with autograd history, in the graph's attribute dict
    (``graph.graph["out_from_12"]``) after every forward pass; ``clone()`` deep-copies the graph
    and torch refuses to deep-copy such tensors, so ``get_final_architecture()`` of DARTS,
    GDAS and DrNAS fails there. The fix detaches those stored outputs before cloning (their
    values are unchanged; nothing backpropagates through them after the training step).
    """

    def clone(original, self):
        _detach_stored_outputs(self)
        return original(self)

    if not _wrap_graph_method("clone", clone, "fix_graph_clone"):
        return False
    return _record("graph_clone", "Graph.clone detaches stored auxiliary-head outputs before deep-copying")


#: settings NASLib's search spaces take in their constructors and keep as attributes
_CONSTRUCTOR_SETTINGS = ("num_classes", "in_channels", "auxiliary_output", "instantiate_model", "space_name")


def fix_unparse_settings() -> bool:
    """Keep a search space's constructor settings through ``Graph.unparse()``.

    ``unparse`` rebuilds the graph as ``self.__class__()`` -- with default constructor arguments
    -- and copies back only the graph structure and a few members. A DARTS space built with
    ``auxiliary=False`` or ``n_classes=100`` therefore comes back from the one-shot optimizers'
    ``get_final_architecture()`` with an auxiliary head and a 10-class classifier again
    (``prepare_evaluation`` reads those attributes). The fix copies them onto the new graph.
    """

    def unparse(original, self):
        new = original(self)
        for name in _CONSTRUCTOR_SETTINGS:
            if name in vars(self):
                setattr(new, name, vars(self)[name])
        return new

    if not _wrap_graph_method("unparse", unparse, "fix_unparse_settings"):
        return False
    return _record("unparse_settings", f"Graph.unparse keeps {', '.join(_CONSTRUCTOR_SETTINGS)}")


def _wrap_graph_method(name: str, wrapper, fix: str) -> bool:
    """Replace NASLib's ``Graph.<name>`` by ``wrapper(original, self)``; False when already done.

    The replacement is marked, so that applying a fix twice wraps the method once, and keeps
    the original as ``__wrapped__`` and its docstring.
    """
    graph_module = sys.modules.get("naslib.search_spaces.core.graph")
    if graph_module is None:
        raise RuntimeError(f"{fix} runs after NASLib is imported (import naslib.search_spaces first)")
    graph_cls = graph_module.Graph
    original = getattr(graph_cls, name)
    if getattr(original, "__naslib_bayes_fix__", False):
        return False

    def method(self):
        return wrapper(original, self)

    method.__naslib_bayes_fix__ = True
    method.__wrapped__ = original
    method.__doc__ = original.__doc__
    setattr(graph_cls, name, method)
    return True


def _sklearn_has_squared() -> bool:
    import inspect

    from sklearn import metrics

    return "squared" in inspect.signature(metrics.mean_squared_error).parameters


def _metrics_with_squared():
    """``sklearn.metrics`` whose ``mean_squared_error`` takes ``squared=False`` again (as the RMSE)."""
    from sklearn import metrics

    proxy = types.ModuleType("sklearn.metrics", "sklearn.metrics with mean_squared_error(squared=...) for NASLib")

    def mean_squared_error(y_true, y_pred, *args, squared=True, **kwargs):
        if squared:
            return metrics.mean_squared_error(y_true, y_pred, *args, **kwargs)
        return metrics.root_mean_squared_error(y_true, y_pred, *args, **kwargs)

    proxy.__getattr__ = lambda name: getattr(metrics, name)
    proxy.mean_squared_error = mean_squared_error
    proxy.__naslib_bayes_fix__ = True
    return proxy


def fix_rmse_metric() -> bool:
    """Let NASLib's ``metrics.mean_squared_error(..., squared=False)`` calls work on scikit-learn >= 1.6.

    NASLib computes RMSEs with ``sklearn.metrics.mean_squared_error(y, p, squared=False)``
    (its predictor evaluator, cross-validation and zero-cost utilities); scikit-learn 1.6 removed
    ``squared`` in favour of ``root_mean_squared_error``, and NASLib's predictor evaluator then
    catches the TypeError and reports every metric (Spearman, Kendall tau...) as NaN. The fix
    rebinds ``metrics`` in the loaded NASLib modules that use it to a view of
    ``sklearn.metrics`` whose ``mean_squared_error`` accepts ``squared``; scikit-learn itself is
    not changed. It runs after NASLib is imported.
    """
    if "rmse_metric" in APPLIED or _sklearn_has_squared():
        return False
    from sklearn import metrics

    proxy = _metrics_with_squared()
    rebound = []
    for name, module in list(sys.modules.items()):
        if (name == "naslib" or name.startswith("naslib.")) and getattr(module, "metrics", None) is metrics:
            module.metrics = proxy
            rebound.append(name)
    if not rebound:
        return False
    return _record("rmse_metric", f"scikit-learn has no mean_squared_error(squared=...): rebound metrics in {', '.join(sorted(rebound))}")


PRE_IMPORT_FIXES = (fix_collections_abc_aliases, fix_torchvision, fix_tensorwatch)
POST_IMPORT_FIXES = (fix_parameter_counter, fix_graph_clone, fix_unparse_settings, fix_rmse_metric)


def apply_pre_import_fixes() -> list[str]:
    """Apply the fixes NASLib needs before its modules are imported; returns the names applied now."""
    return [fix.__name__ for fix in PRE_IMPORT_FIXES if fix()]


def apply_post_import_fixes() -> list[str]:
    """Apply the fixes that patch loaded NASLib modules; returns the names applied now."""
    return [fix.__name__ for fix in POST_IMPORT_FIXES if fix()]
