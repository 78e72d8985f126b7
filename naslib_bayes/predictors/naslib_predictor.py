"""A NASLib-style predictor around the TNAS deep-kernel GP.

NASLib's ``Predictor`` contract: ``fit(xtrain, ytrain, train_info=None)`` then
``query(xtest, info=None)`` returning the predicted accuracy of each architecture as an
``np.ndarray``. :meth:`TNASPredictor.predict_dist` also returns the predictive standard
deviation. Architectures may be NB201 benchmark strings, op-index tuples (this package's
order), or NASLib ``NasBench201SearchSpace`` graphs (read through ``get_hash()``, NASLib's
op-index tuple) when NASLib is installed.

``fit`` adapts the surrogate to the target as one TNAS BO iteration does (see
:mod:`naslib_bayes.optimizers.deep_kernel_bo`, with TNAS's default ``target_units=own``): the
accuracies go to GP units computed from ``ytrain`` alone
(:func:`~naslib_bayes.predictors.target_fit.transform_observations`), the GP's MLP and
hyper-parameters (never psi) and the target's dataset context are reset to their starting state
and fine-tuned (:func:`~naslib_bayes.predictors.target_fit.finetune_gp`), and the GP is
conditioned on the data. Predictions are mapped back to accuracy units by :class:`AccuracyMap`.

The one choice that differs from BO by default is the GP units: ``target_transform=
"standardise"``. BO ranks cells by EI, for which the copula units of meta-training (the
surrogate's ``output_transform``) serve best; a predictor is judged by its accuracies and their
spread, and on CIFAR-100 (a surrogate meta-trained on CIFAR-10 and ImageNet16-120, 50 training
cells, 1,000 held out) standardised targets predicted better (Spearman 0.983 against 0.937, 93%
of held-out accuracies within +-2 std against 82%). ``target_transform="surrogate"`` fits in
BO's units exactly.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch

from naslib_bayes.errors import UserError
from naslib_bayes.optimizers.hyperparameters import above, at_least, merge_hyperparameters, require_choice, whole_number
from naslib_bayes.predictors import surrogate_io
from naslib_bayes.predictors.meta_train import ROBUST_CLIP
from naslib_bayes.predictors.surrogate import OUTPUT_TRANSFORMS, SurrogateConfig, TNASSurrogate, standardise_encodings
from naslib_bayes.predictors.target_fit import finetune_gp, transform_observations
from naslib_bayes.search_spaces.nasbench201 import cell as nb201


def to_cell(arch: Any) -> nb201.Cell:
    """An op-index tuple from a benchmark string, an op-index sequence or a NASLib graph."""
    if isinstance(arch, str):
        return nb201.from_string(arch)
    if hasattr(arch, "get_hash"):  # NASLib NasBench201SearchSpace
        return nb201.from_naslib(arch.get_hash())
    if isinstance(arch, (tuple, list, np.ndarray, torch.Tensor)):
        return nb201.validate(list(arch))  # whole numbers only: a fraction is refused, not truncated
    raise UserError(f"cannot read {type(arch).__name__} as a NAS-Bench-201 architecture")


class AccuracyMap:
    """A target's map from accuracies to GP units, as BO applies it, and its inverse.

    Forward: ``targets`` (n,) are ``values`` (n,) in GP units by ``kind`` (``standardise``,
    ``copula`` or ``robust``) with the statistics of ``values`` themselves -- what BO's
    ``gp_targets`` fits the GP to (:func:`~naslib_bayes.predictors.target_fit.transform_observations`).

    Inverse (:meth:`to_accuracy`): the copula (normal quantile of each value's mid-rank) has no
    closed-form inverse away from the observed values, so the inverse is the piecewise-linear
    interpolation through the knots ``(targets_k, values_k)`` of the distinct observations,
    continued linearly beyond the first and last knot with the slope of the end segment. It
    returns every observed value at its own target exactly and is strictly increasing, so it
    never changes a ranking. For ``standardise`` and ``robust`` (affine maps) the knots lie on a
    line and the inverse is the exact affine one; ``robust``'s clipped observations (those at the
    clip's target, one or several) are left out of the knots while two others remain. With a
    single knot (one distinct value) the inverse has unit slope, as ``standardise`` takes the
    standard deviation of a constant sample as 1.

    :meth:`to_accuracy_dist` maps a Gaussian (mean, std) in GP units: the mean through the map
    (the median of the mapped distribution; its mean too where the map is affine) and the std
    as half the accuracy span of the mean +- 1 std, i.e. the std times the map's average slope
    over that interval (exact for affine maps).

    Args:
        values: (n,) accuracies, finite, n >= 1.
        kind: the transform (the predictor's ``target_transform``, resolved).
    """

    def __init__(self, values: np.ndarray, kind: str):
        values = np.asarray(values, dtype=np.float64)
        self.kind = kind
        self.targets = transform_observations(torch.as_tensor(values), kind)  # (n,) float64
        z = self.targets.numpy()
        keys = np.unique(z)
        groups = [values[z == key] for key in keys]
        injective = np.asarray([group.min() == group.max() for group in groups])
        # robust's clip has no inverse: an observation at it is no knot, even alone at the clip,
        # else the segment to it bends the affine inverse of the others
        unclipped = keys > ROBUST_CLIP if kind == "robust" else np.ones_like(injective)
        usable = injective & unclipped
        keep = usable if usable.sum() >= 2 else np.ones_like(injective)
        self.knots_z = keys[keep]  # (k,) strictly increasing
        self.knots_v = np.asarray([g.mean() for g, k in zip(groups, keep) if k])  # (k,) strictly increasing

    def to_accuracy(self, z: np.ndarray) -> np.ndarray:
        """GP units (any shape) -> accuracy units (same shape)."""
        z = np.asarray(z, dtype=np.float64)
        kz, kv = self.knots_z, self.knots_v
        if kz.size == 1:
            return kv[0] + (z - kz[0])
        left = (kv[1] - kv[0]) / (kz[1] - kz[0])
        right = (kv[-1] - kv[-2]) / (kz[-1] - kz[-2])
        out = np.interp(z, kz, kv)
        out = np.where(z < kz[0], kv[0] + (z - kz[0]) * left, out)
        return np.where(z > kz[-1], kv[-1] + (z - kz[-1]) * right, out)

    def to_accuracy_dist(self, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) in GP units, (n,) each -> (mean, std) in accuracy units, (n,) each."""
        mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        return self.to_accuracy(mean), 0.5 * (self.to_accuracy(mean + std) - self.to_accuracy(mean - std))


class TNASPredictor:
    """NASLib predictor: a (meta-learned) deep-kernel GP fitted to the given evaluations.

    Args:
        surrogate: a ``surrogate.pt`` path/folder, a :class:`TNASSurrogate` (copied: predictors
            made from one object do not share their fits, and the object stays as it is), or None
            for a fresh untrained one (seeded by ``seed``; its encodings are standardised per dimension).
        ss_type: NASLib's search-space type; only ``nasbench201`` is supported.
        encoding_type: accepted for NASLib compatibility (the GP encodes cells itself).
        finetune_steps, lr: Adam steps and learning rate of ``fit`` (TNAS's ``finetune_steps``
            and ``finetune_lr``, bounded alike: a whole number >= 0 and a number > 0, here and
            in ``set_hyperparams``).
        seed: seeds the fresh surrogate and (``images`` mode) the target's image samples, as a
            TNAS search's ``--seed`` does.
        dataset: ``images`` mode (required there): the target dataset whose images give its
            context phi, as TNAS's ``--dataset``.
        image_root: ``images`` mode: the folder holding its images, as TNAS's ``image_root``
            (not needed for ``digits``).
        target_transform: GP units of the accuracies ``fit`` gets: ``standardise`` (default,
            see the module's docstring), ``copula``, ``robust``, or ``surrogate`` (the
            surrogate's meta-training transform, i.e. exactly what a BO iteration fits).
        trust_feature_extractor: passed to ``surrogate_io.load`` for a ``surrogate`` path: an
            ``images``-mode file whose feature extractor is a user ``module:factory`` (imported
            and run when it loads) is refused unless this is True or names that extractor.

    The target's dataset context is the one a TNAS search starts from -- ``learned``: the mean
    of the meta-training contexts; ``images``: phi of seeded samples of ``dataset``'s images --
    and ``fit`` fine-tunes it with the kernel, from that start each time, as BO does.
    """

    default_hyperparams = {"finetune_steps": 50, "lr": 0.01}
    # TNAS's bounds of finetune_steps and finetune_lr: a zero rate or a negative count would fit nothing
    hyperparameter_bounds = {"finetune_steps": at_least(0), "lr": above(0)}

    def __init__(self, surrogate=None, ss_type: str = "nasbench201", encoding_type=None,
                 finetune_steps: int = 50, lr: float = 0.01, seed: int = 0,
                 dataset: str | None = None, image_root=None, target_transform: str = "standardise",
                 trust_feature_extractor: bool | str = False):
        self.set_ss_type(ss_type)
        seed = whole_number("seed", seed)  # torch.Generator.manual_seed takes a Python int only, not numpy's
        self.encoding_type = encoding_type
        # the instance's defaults, as NASLib's predictors keep theirs: NASLib's PredictorEvaluator
        # calls reset_hyperparams() before every fit, which must not undo the settings given here
        self.default_hyperparams = self._checked({"finetune_steps": finetune_steps, "lr": lr})
        self.hyperparams = dict(self.default_hyperparams)
        require_choice("target_transform", target_transform, (*OUTPUT_TRANSFORMS, "surrogate"))
        self.target_transform = target_transform
        self.surrogate = _own_surrogate(surrogate, seed, trust_feature_extractor)
        self._standardise_encodings = surrogate is None  # a fresh psi is untrained (see gp-bo)
        self._start_context = self._initial_context(dataset, image_root, seed)
        self.context = None if self._start_context is None else self._start_context.clone()
        self._start_gp = copy.deepcopy(self.surrogate.gp.state_dict())
        self._encoding_cache: dict[nb201.Cell, torch.Tensor] = {}
        self._fitted = False

    def _initial_context(self, dataset: str | None, image_root, seed: int) -> torch.Tensor | None:
        """The target's starting context (c,) float64, as TNAS's setup makes it, or None (``off``)."""
        if self.surrogate.config.dataset_encoder != "images":
            context = self.surrogate.initial_context()
            return None if context is None else context.to(torch.float64)
        from naslib_bayes.predictors.dataset_context import target_image_context

        if dataset is None:
            raise UserError("TNASPredictor: this surrogate was meta-trained with --dataset-encoder images: "
                            "pass dataset=NAME, the target dataset whose images give its context")
        if image_root is None and dataset != "digits":
            raise UserError(f"TNASPredictor: the images context of {dataset} needs image_root=DIR, "
                            "the folder holding its images")
        return target_image_context(self.surrogate, dataset, image_root, torch.Generator().manual_seed(seed))

    # ---- NASLib's Predictor methods ------------------------------------------------------------
    def set_ss_type(self, ss_type: str) -> None:
        if ss_type not in ("nasbench201", None):
            raise UserError(f"TNASPredictor supports the nasbench201 search space, not {ss_type!r}")
        self.ss_type = ss_type or "nasbench201"

    def pre_process(self) -> None:
        pass

    def pre_compute(self, xtrain, xtest, unlabeled=None) -> None:
        self._encodings([to_cell(a) for a in list(xtrain) + list(xtest)])  # fills the cache

    def get_data_reqs(self) -> dict[str, Any]:
        return {"requires_partial_lc": False, "metric": None, "requires_hyperparameters": False,
                "hyperparams": None, "unlabeled": False, "unlabeled_factor": 0}

    def set_hyperparams(self, params: dict[str, Any]) -> None:
        self.hyperparams.update(self._checked(params))

    def _checked(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` with ``finetune_steps`` and ``lr`` typed and bounded (a UserError naming a bad one);
        other names pass as given."""
        known = {name: value for name, value in params.items() if name in self.hyperparameter_bounds}
        checked = merge_hyperparameters(type(self).__name__, type(self).default_hyperparams, known,
                                        self.hyperparameter_bounds)
        return {**params, **{name: checked[name] for name in known}}

    def get_hyperparams(self) -> dict[str, Any]:
        return dict(self.hyperparams)

    def reset_hyperparams(self) -> None:
        self.hyperparams = dict(self.default_hyperparams)

    def get_hpo_wrapper(self) -> bool:
        """False: NASLib's PredictorEvaluator (``max_hpo_time`` > 0) is not to tune this predictor by
        cross-validation; ``fit`` fine-tunes the GP itself and there is no ``set_random_hyperparams``."""
        return False

    def fit(self, xtrain: Sequence[Any], ytrain: Sequence[float], train_info=None) -> float:
        """Fine-tune and condition on (architectures, accuracies) as a BO iteration; returns the final loss.

        Pairs whose accuracy is not finite are left out, as BO leaves out a cell a partial
        benchmark lacks. The GP targets (n,) are ``ytrain`` in the units of ``target_transform``
        (:class:`AccuracyMap`; ``surrogate``: the units BO fits); the GP and the target's context restart from
        their starting state.
        """
        cells = [to_cell(a) for a in xtrain]
        y = _accuracies(ytrain)
        if len(cells) != len(y) or len(cells) == 0:
            raise UserError(f"fit needs as many accuracies as architectures (got {len(cells)} and {len(y)})")
        finite = np.isfinite(y)
        if not finite.any():
            raise UserError("fit needs at least one finite accuracy")
        cells, y = [c for c, ok in zip(cells, finite) if ok], y[finite]
        kind = self.surrogate.config.output_transform if self.target_transform == "surrogate" else self.target_transform
        self._fitted = False  # until this fit is through: its map would not match the GP an error leaves behind
        self.output_map = AccuracyMap(y, kind)
        target = self.output_map.targets
        encodings = self._encodings(cells)
        self.surrogate.gp.load_state_dict(self._start_gp)
        self.context = None if self._start_context is None else torch.nn.Parameter(self._start_context.clone())
        loss = finetune_gp(self.surrogate, encodings, target, self.context,
                           int(self.hyperparams["finetune_steps"]), float(self.hyperparams["lr"]))
        with torch.no_grad():
            self.surrogate.gp.condition_on(self._inputs(encodings), target)
        self._fitted = True
        return float(loss)

    def query(self, xtest: Sequence[Any], info=None) -> np.ndarray:
        """Predicted accuracy of each architecture, shape (len(xtest),): the mean of :meth:`predict_dist`."""
        return self.predict_dist(xtest)[0]

    def predict_dist(self, xtest: Sequence[Any], observation_noise: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Predictive mean and standard deviation of each architecture's accuracy, in its units, (n,) each.

        The standard deviation is that of a measured accuracy: the GP's latent uncertainty plus
        its fitted observation noise (a training run's noise is part of what a benchmark entry
        holds). ``observation_noise=False`` gives the latent function's alone, the one expected
        improvement uses. Both are computed in GP units and mapped to accuracy units by
        :meth:`AccuracyMap.to_accuracy_dist` (an affine map for ``standardise``; for the copula,
        the mean is the mapped posterior mean and the std follows the map's local slope).
        """
        if not self._fitted:
            raise UserError("call fit(xtrain, ytrain) before query or predict_dist")
        if len(xtest) == 0:
            return np.zeros(0), np.zeros(0)
        gp = self.surrogate.gp
        mean, std = gp.posterior(self._inputs(self._encodings([to_cell(a) for a in xtest])))
        if observation_noise:
            std = (std**2 + gp.likelihood.noise.detach().squeeze()).sqrt()
        return self.output_map.to_accuracy_dist(mean.numpy(), std.numpy())

    # ---- internals ------------------------------------------------------------------------------
    def _encodings(self, cells: list[nb201.Cell]) -> torch.Tensor:
        """psi of ``cells`` from the cache, (n, L)."""
        missing = [c for c in dict.fromkeys(cells) if c not in self._encoding_cache]
        if missing:
            if self._standardise_encodings and not self._encoding_cache:
                self._fill_standardised_cache()
            else:
                for cell, row in zip(missing, self.surrogate.encode_all(missing)):
                    self._encoding_cache[cell] = row
        return torch.stack([self._encoding_cache[c] for c in cells])

    def _inputs(self, encodings: torch.Tensor) -> torch.Tensor:
        """Kernel inputs of cells, from their encodings (n, L), with the target's current context:
        (n, L + c), no gradient."""
        context = None if self.context is None else self.context.detach()
        return self.surrogate.kernel_inputs(encodings, context)

    def _fill_standardised_cache(self) -> None:
        """Cache psi of every cell, standardised over all cells as ``gp-bo`` does (the encoder is untrained)."""
        cells = list(nb201.all_cells())
        self._encoding_cache = dict(zip(cells, standardise_encodings(self.surrogate.encode_all(cells))))


def _own_surrogate(surrogate, seed: int, trust_feature_extractor: bool | str):
    """The :class:`TNASSurrogate` a predictor fits, from its ``surrogate`` argument: a fresh one
    seeded by ``seed`` (None), a copy of a given object (``fit`` tunes the GP; the caller's object
    stays as given), or the one a ``surrogate.pt`` path holds."""
    if surrogate is None:
        return TNASSurrogate(SurrogateConfig(), generator=torch.Generator().manual_seed(seed))
    if isinstance(surrogate, TNASSurrogate):
        return copy.deepcopy(surrogate)
    return surrogate_io.load(surrogate, trust_feature_extractor=trust_feature_extractor)[0]


def _accuracies(ytrain: Sequence[float]) -> np.ndarray:
    """``ytrain`` as a (n,) float64 array: one number per architecture, or a one-line error (a
    (2, 10) table was flattened into 20 accuracies, and text was numpy's ValueError traceback)."""
    try:
        y = np.asarray(ytrain, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise UserError(f"fit: ytrain must be numbers, one per architecture ({exc})") from None
    if y.ndim == 2 and y.shape[1] == 1:  # a column, as scikit-learn's targets may come
        y = y[:, 0]
    if y.ndim != 1:
        raise UserError(f"fit: ytrain must be one accuracy per architecture, got an array of shape {y.shape}")
    return y
