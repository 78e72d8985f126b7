"""TNAS and its deep-kernel GP as NASLib classes: a black-box ``MetaOptimizer`` and a ``Predictor``.

* :class:`TNASOptimizer` is :class:`~naslib_bayes.integration.blackbox.NaslibBlackBox` bound to
  naslib-bayes's ``tnas`` (:class:`naslib_bayes.optimizers.tnas.TNAS`, never a second
  implementation): NASLib's Trainer calls ``new_epoch`` once per query and ``train_statistics``
  for ``(train_acc, val_acc, test_acc, train_time)``; candidates are scored as op-index tuples
  (the GP scores all 15,625 cells at once), every value is read through
  ``search_space.query(Metric.VAL_ACCURACY, dataset, dataset_api=...)``, and only the chosen
  architecture of an epoch is cloned into a NASLib graph for ``history``.
  The surrogate is a ``surrogate.pt`` file (``surrogate``) or is meta-trained at setup
  leave-one-dataset-out on the benchmark's other datasets -- taken from the naslib-bayes
  ``dataset_api`` when NASLib is given one built by :func:`naslib_dataset_api`.
* :class:`DeepKernelGPPredictor` is NASLib's ``Predictor`` around
  :class:`naslib_bayes.predictors.naslib_predictor.TNASPredictor`, for NASLib's predictor
  evaluator and ensembles: ``fit(xtrain, ytrain)``, ``query(xtest)``, ``get_data_reqs()``;
  architectures are NASLib graphs, NB201 strings or NASLib op-index tuples.

Importing this module imports NASLib.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from naslib_bayes.errors import UserError
from naslib_bayes.integration import hyperparameter_section, load_naslib
from naslib_bayes.integration.blackbox import NaslibBlackBox
from naslib_bayes.integration.dataset_api import NB201Data
from naslib_bayes.predictors.naslib_predictor import TNASPredictor, to_cell
from naslib_bayes.search_spaces.nasbench201 import cell as nb201

_naslib = load_naslib()


class TNASOptimizer(NaslibBlackBox):
    """TNAS (Shala et al., ICLR 2023) as a NASLib black-box optimizer.

    Args:
        config: NASLib config; reads ``dataset``, ``seed``, ``search.epochs`` (the query
            budget), ``search.surrogate`` (a ``surrogate.pt`` file or folder) and the mapping
            ``search.tnas`` of TNAS hyper-parameters (``initial_design``, ``finetune_steps``,
            ``meta_iterations``, ``prior_beta``, ... see :class:`naslib_bayes.optimizers.tnas.TNAS`).
        surrogate: overrides ``search.surrogate``; None (and none in the config) meta-trains at
            setup on ``source``.
        source: a naslib-bayes ``Benchmark`` of the other datasets to meta-train on; when None,
            the benchmark behind a naslib-bayes ``dataset_api`` (without the target) is used.
        **hyperparameters: TNAS hyper-parameters, overriding ``search.tnas``.
    """

    def __init__(self, config, surrogate=None, source=None, optimizer: str = "tnas", **hyperparameters: Any):
        if optimizer != "tnas":
            raise UserError(f"TNASOptimizer runs tnas, not {optimizer!r} (use NaslibBlackBox for other optimizers)")
        search = config.search
        if surrogate is None:
            surrogate = search.get("surrogate") or hyperparameter_section(search, "tnas").get("surrogate")
        if surrogate is not None:
            hyperparameters["surrogate"] = str(surrogate)
        super().__init__(config, optimizer="tnas", source=source, **hyperparameters)

    def adapt_search_space(self, search_space, dataset=None, scope=None, dataset_api=None, **kwargs):
        """Both NASLib call forms: ``(ss, dataset_api=api)`` (runners) and ``(ss, dataset, scope)``."""
        if "source" not in kwargs:
            self._meta_training_source(dataset_api, dataset if dataset is not None else self.dataset)
        super().adapt_search_space(search_space, dataset, scope, dataset_api, **kwargs)

    def check_inputs(self, dataset_api) -> None:
        self._meta_training_source(dataset_api, self.dataset)
        super().check_inputs(dataset_api)

    def _meta_training_source(self, dataset_api, target: str) -> None:
        """Without a surrogate file or ``source``, take the other datasets of a naslib-bayes
        ``dataset_api`` to meta-train on; a UserError when there are none."""
        if self.source is not None or self.core.config.get("surrogate") is not None:
            return
        data = dataset_api.get("nb201_data") if isinstance(dataset_api, dict) else None
        if isinstance(data, NB201Data):
            source = data.benchmark.without(target)  # the target's evaluations never reach meta-training
            self.source = source if source.datasets else None
        if self.source is None:
            raise UserError("TNASOptimizer needs a surrogate file (search.surrogate) or evaluations on other "
                            "datasets to meta-train on (a naslib-bayes benchmark as dataset_api, or source=)")

    @property
    def surrogate(self):
        """The TNAS surrogate (meta-learned deep-kernel GP) in use."""
        return self.core.surrogate


class DeepKernelGPPredictor(TNASPredictor, _naslib.predictor.Predictor):
    """TNAS's deep-kernel GP as a NASLib ``Predictor``.

    Args:
        surrogate: a ``surrogate.pt`` path or folder, a ``TNASSurrogate``, or None for an
            untrained one (then seeded by ``seed``).
        ss_type: NASLib's search-space type; ``nasbench201``.
        encoding_type: accepted as NASLib's predictors take it; the GP encodes cells itself.
        finetune_steps, lr: Adam steps and learning rate of ``fit``.
        seed: seeds an untrained surrogate (and an ``images`` surrogate's image samples).
        dataset, image_root, target_transform, trust_feature_extractor: as :class:`TNASPredictor`
            takes them (the target dataset and its images for an ``images`` surrogate; the GP
            units of ``fit``; whether a surrogate file's user feature extractor may be imported).

    ``xtrain``/``xtest`` hold NASLib ``NasBench201SearchSpace`` graphs (read through
    ``get_hash()``), NB201 strings (``|nor_conv_3x3~0|+|...``) or op-index tuples in NASLib's
    order (what ``get_hash()`` returns). ``query`` returns the posterior mean (accuracy
    units) as NASLib's predictors do; :meth:`predict_dist` also gives the standard deviation.
    """

    def __init__(self, surrogate=None, ss_type: str = "nasbench201", encoding_type=None,
                 finetune_steps: int = 50, lr: float = 0.01, seed: int = 0, dataset: str | None = None,
                 image_root=None, target_transform: str = "standardise", trust_feature_extractor: bool | str = False):
        TNASPredictor.__init__(self, surrogate=surrogate, ss_type=ss_type, encoding_type=encoding_type,
                               finetune_steps=finetune_steps, lr=lr, seed=seed, dataset=dataset,
                               image_root=image_root, target_transform=target_transform,
                               trust_feature_extractor=trust_feature_extractor)

    @staticmethod
    def to_cells(archs: Sequence[Any]) -> list[nb201.Cell]:
        """naslib-bayes cells of NASLib graphs, NB201 strings or NASLib op-index tuples."""
        cells = []
        for arch in archs:
            if isinstance(arch, (tuple, list, np.ndarray, torch.Tensor)):  # NASLib's op order, however held
                cells.append(nb201.from_naslib(list(arch)))  # checked there: whole op indices in range
            else:
                cells.append(to_cell(arch))
        return cells

    def pre_compute(self, xtrain, xtest, unlabeled=None) -> None:
        super().pre_compute(self.to_cells(xtrain), self.to_cells(xtest))

    def fit(self, xtrain, ytrain, train_info=None, **kwargs) -> float:
        return super().fit(self.to_cells(xtrain), ytrain, train_info)

    def query(self, xtest, info=None, **kwargs) -> np.ndarray:
        return TNASPredictor.predict_dist(self, self.to_cells(xtest))[0]

    def predict_dist(self, xtest, observation_noise: bool = True) -> tuple[np.ndarray, np.ndarray]:
        return TNASPredictor.predict_dist(self, self.to_cells(xtest), observation_noise)
