"""A NASLib-style predictor around the TNAS deep-kernel GP.

NASLib's ``Predictor`` contract: ``fit(xtrain, ytrain, train_info=None)`` then
``query(xtest, info=None)`` returning the predicted accuracy of each architecture as an
``np.ndarray``. :meth:`TNASPredictor.predict_dist` also returns the predictive standard
deviation. Architectures may be NB201 benchmark strings, op-index tuples (this package's
order), or NASLib ``NasBench201SearchSpace`` graphs (read through ``get_hash()``, NASLib's
op-index tuple) when NASLib is installed.

``fit`` standardises ``ytrain`` with its own mean and standard deviation, fine-tunes the GP's
MLP and hyper-parameters (never psi) from the surrogate's meta-learned state and conditions the
GP on the data; predictions are mapped back to accuracy units.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch

from naslib_bayes.errors import UserError
from naslib_bayes.search_spaces.nasbench201 import cell as nb201


def to_cell(arch: Any) -> nb201.Cell:
    """An op-index tuple from a benchmark string, an op-index sequence or a NASLib graph."""
    if isinstance(arch, str):
        return nb201.from_string(arch)
    if hasattr(arch, "get_hash"):  # NASLib NasBench201SearchSpace
        return nb201.from_naslib(arch.get_hash())
    if isinstance(arch, (tuple, list, np.ndarray, torch.Tensor)):
        return nb201.validate([int(op) for op in arch])
    raise UserError(f"cannot read {type(arch).__name__} as a NAS-Bench-201 architecture")


class TNASPredictor:
    """NASLib predictor: a (meta-learned) deep-kernel GP fitted to the given evaluations.

    Args:
        surrogate: a ``surrogate.pt`` path/folder, a :class:`TNASSurrogate`, or None for a fresh
            untrained one (seeded by ``seed``; its encodings are standardised per dimension).
        ss_type: NASLib's search-space type; only ``nasbench201`` is supported.
        encoding_type: accepted for NASLib compatibility (the GP encodes cells itself).
        finetune_steps, lr: Adam steps and learning rate of ``fit``.
        seed: seeds the fresh surrogate.
    """

    default_hyperparams = {"finetune_steps": 50, "lr": 0.01}

    def __init__(self, surrogate=None, ss_type: str = "nasbench201", encoding_type=None,
                 finetune_steps: int = 50, lr: float = 0.01, seed: int = 0):
        from naslib_bayes.predictors import surrogate_io
        from naslib_bayes.predictors.surrogate import SurrogateConfig, TNASSurrogate

        self.set_ss_type(ss_type)
        self.encoding_type = encoding_type
        self.hyperparams = {"finetune_steps": int(finetune_steps), "lr": float(lr)}
        if surrogate is None:
            self.surrogate = TNASSurrogate(SurrogateConfig(), generator=torch.Generator().manual_seed(seed))
            self._standardise_encodings = True
        elif isinstance(surrogate, TNASSurrogate):
            self.surrogate, self._standardise_encodings = surrogate, False
        else:
            self.surrogate, _ = surrogate_io.load(surrogate)
            self._standardise_encodings = False
        self.context = self.surrogate.initial_context()
        self._start_gp = copy.deepcopy(self.surrogate.gp.state_dict())
        self._encoding_cache: dict[nb201.Cell, torch.Tensor] = {}
        self._fitted = False

    # ---- NASLib's Predictor methods ------------------------------------------------------------
    def set_ss_type(self, ss_type: str) -> None:
        if ss_type not in ("nasbench201", None):
            raise UserError(f"TNASPredictor supports the nasbench201 search space, not {ss_type!r}")
        self.ss_type = ss_type or "nasbench201"

    def pre_process(self) -> None:
        pass

    def pre_compute(self, xtrain, xtest, unlabeled=None) -> None:
        self._inputs([to_cell(a) for a in list(xtrain) + list(xtest)])

    def get_data_reqs(self) -> dict[str, Any]:
        return {"requires_partial_lc": False, "metric": None, "requires_hyperparameters": False,
                "hyperparams": None, "unlabeled": False, "unlabeled_factor": 0}

    def set_hyperparams(self, params: dict[str, Any]) -> None:
        self.hyperparams.update(params)

    def get_hyperparams(self) -> dict[str, Any]:
        return dict(self.hyperparams)

    def reset_hyperparams(self) -> None:
        self.hyperparams = dict(self.default_hyperparams)

    def fit(self, xtrain: Sequence[Any], ytrain: Sequence[float], train_info=None) -> float:
        """Fine-tune and condition on (architectures, accuracies); returns the final loss."""
        cells = [to_cell(a) for a in xtrain]
        y = np.asarray(ytrain, dtype=np.float64)
        if len(cells) != len(y) or len(cells) == 0:
            raise UserError(f"fit needs as many accuracies as architectures (got {len(cells)} and {len(y)})")
        self._mean, self._std = float(y.mean()), float(y.std()) or 1.0
        target = torch.as_tensor((y - self._mean) / self._std)
        x = self._inputs(cells)
        gp = self.surrogate.gp
        gp.load_state_dict(self._start_gp)
        optimizer = torch.optim.Adam(gp.parameters(), lr=self.hyperparams["lr"])
        loss = torch.zeros(())
        for _ in range(self.hyperparams["finetune_steps"]):
            optimizer.zero_grad()
            loss = gp.neg_mll(x, target)
            loss.backward()
            optimizer.step()
        gp.condition_on(x, target)
        self._fitted = True
        return float(loss.detach())

    def query(self, xtest: Sequence[Any], info=None) -> np.ndarray:
        """Predicted accuracy (posterior mean) of each architecture, shape (len(xtest),)."""
        return self.predict_dist(xtest)[0]

    def predict_dist(self, xtest: Sequence[Any], observation_noise: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Predictive mean and standard deviation of each architecture's accuracy, in its units, (n,) each.

        The standard deviation is that of a measured accuracy: the GP's latent uncertainty plus
        its fitted observation noise (a training run's noise is part of what a benchmark entry
        holds). ``observation_noise=False`` gives the latent function's alone, the one expected
        improvement uses.
        """
        if not self._fitted:
            raise UserError("call fit(xtrain, ytrain) before query")
        gp = self.surrogate.gp
        mean, std = gp.posterior(self._inputs([to_cell(a) for a in xtest]))
        if observation_noise:
            std = (std**2 + gp.likelihood.noise.detach().squeeze()).sqrt()
        return mean.numpy() * self._std + self._mean, std.numpy() * self._std

    # ---- internals ------------------------------------------------------------------------------
    def _inputs(self, cells: list[nb201.Cell]) -> torch.Tensor:
        missing = [c for c in dict.fromkeys(cells) if c not in self._encoding_cache]
        if missing:
            if self._standardise_encodings and not self._encoding_cache:
                self._fill_standardised_cache()
            else:
                for cell, row in zip(missing, self.surrogate.encode_all(missing)):
                    self._encoding_cache[cell] = row
        encodings = torch.stack([self._encoding_cache[c] for c in cells])
        context = None if self.context is None else self.context
        return self.surrogate.kernel_inputs(encodings, context)

    def _fill_standardised_cache(self) -> None:
        # An untrained psi varies little around an offset (see gp_bo); standardise over all cells.
        cells = list(nb201.all_cells())
        encodings = self.surrogate.encode_all(cells)
        encodings = (encodings - encodings.mean(0)) / encodings.std(0).clamp_min(1e-12)
        self._encoding_cache = dict(zip(cells, encodings))
