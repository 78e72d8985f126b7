"""BayesNAS network compression: structured sparsity for ordinary CNNs.

The priors, curvature and pruning criterion are those of the BayesNAS search
(:mod:`naslib_bayes.optimizers.bayesnas`); this package maps them onto the units (channels and
neurons) of a sequential CNN and turns the decisions into a physically smaller network:

* :mod:`.models` — shipped networks (LeNet-5, LeNet-300-100, a VGG-style CIFAR net);
* :mod:`.trace` — reading a model as a chain of supported layers (``torch.fx``);
* :mod:`.switched` — per-unit parent/child switches and the HARD update;
* :mod:`.prune` — dependency propagation, bias folding and slimming;
* :mod:`.config` — the hyper-parameters (:class:`CompressionConfig`);
* :mod:`.compressor` — the training / update / prune / fine-tune schedule and the dense baseline;
* :mod:`.io` — saving and loading compressed networks (``weights_only=True``).
"""

import importlib

# Lazy attribute loading (PEP 562): ``import naslib_bayes.compression.config`` (used by the
# command line to build its parser) must not import torch.
_EXPORTS = {
    "CompressionConfig": "config", "MODEL_NAMES": "config",
    "CompressionOutcome": "compressor", "compress": "compressor", "evaluate": "compressor",
    "train_dense": "compressor", "model_costs": "compressor", "load_compressed": "io", "save_compressed": "io",
    "MODELS": "models", "build_model": "models", "lenet5": "models", "lenet300": "models", "vgg": "models",
    "PrunePlan": "prune", "plan_pruning": "prune", "slim": "prune", "SwitchedNetwork": "switched",
    "InputSelect": "trace", "UnsupportedModelError": "trace", "analyse_chain": "trace", "trace_chain": "trace",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
