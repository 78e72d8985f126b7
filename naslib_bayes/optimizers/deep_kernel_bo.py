"""The BO loop shared by ``tnas`` and ``gp-bo``: a deep-kernel GP over cached cell encodings.

Each iteration after the initial design:

1. put the target's observations in GP units with the surrogate's output transform (by default
   the copula: the normal quantile of each one's rank among them), computed from what has been
   seen so far, never the benchmark column;
2. reset the trainable part of the surrogate (xi, the GP hyper-parameters and, when the
   surrogate has one, the target's dataset context) to its starting state and fine-tune it on
   those observations for ``finetune_steps`` Adam steps of the negative log marginal
   likelihood -- restarting from the same state keeps a few noisy observations from dragging
   the surrogate away step after step;
3. score the not-yet-queried cells by the acquisition function (every one, or with
   ``local_radius`` those of the trust region while it has any), from psi encodings computed
   once in :meth:`DeepKernelBO.setup` (psi is frozen during BO), and propose the best one (on a
   partial benchmark, the best one with a value while any is left).

Subclasses say where the surrogate comes from (:meth:`build_surrogate`) and what the initial
design is (:meth:`initial_design`); they may put the observations in other units
(:meth:`DeepKernelBO.gp_targets`), have the GP model their residual from a fixed mean function
(:meth:`DeepKernelBO.mean_offset`) and keep GP parameters out of the fine-tuning
(:meth:`DeepKernelBO.frozen`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from naslib_bayes.optimizers import acquisition
from naslib_bayes.optimizers.blackbox import BlackBoxOptimizer
from naslib_bayes.optimizers.hyperparameters import above, at_least, require_choice
from naslib_bayes.predictors.target_fit import finetune_gp, transform_observations
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.threads import torch_threads

logger = logging.getLogger(__name__)


class DeepKernelBO(BlackBoxOptimizer):
    """Bayesian optimisation with a deep-kernel GP over all NB201 cells (abstract).

    Hyper-parameters:
        initial_design: cells queried before the first GP fit.
        finetune_steps: Adam steps fitting the GP to the target's observations each iteration.
        finetune_lr: their learning rate.
        acquisition: ``ei`` (expected improvement) or ``ucb``.
        ei_xi: EI's improvement margin, in GP units.
        ucb_beta: UCB's ``beta`` in ``mean + sqrt(beta) * std``.
        local_radius: 0 (default) scores every unqueried cell; r > 0 only those within r edge
            changes of the ``local_centres`` best observed cells (a trust region in cell space),
            all of them again once that neighbourhood is used up.
        local_centres: how many of the best observed cells centre the neighbourhood.
        threads: torch intra-op threads (1 keeps runs steady on a busy machine).
    """

    # The initial designs (tnas's prior ranking, gp-bo's random draw) and the BO steps all pick
    # among the cells with a value while any is left.
    picks_only_from_domain = True

    defaults: dict[str, Any] = {
        "initial_design": 5,
        "finetune_steps": 50,
        "finetune_lr": 0.01,
        "acquisition": "ei",
        "ei_xi": 0.0,
        "ucb_beta": 2.0,
        "local_radius": 0,
        "local_centres": 1,
        "threads": 1,
    }
    # Declared here, they bound every subclass (TNAS and gp-bo) alike.
    lower_bounds = {
        "initial_design": at_least(1),
        "finetune_steps": at_least(0),
        "finetune_lr": above(0),
        "ucb_beta": at_least(0),  # UCB takes its square root
        "local_radius": at_least(0),
        "local_centres": at_least(1),
        "threads": at_least(1),
    }

    # ---- what subclasses provide ---------------------------------------------------------
    def build_surrogate(self):
        """The :class:`~naslib_bayes.predictors.surrogate.TNASSurrogate` to fine-tune."""
        raise NotImplementedError

    def initial_design(self) -> list[int]:
        """Indices (into ``self.cells``) of the initial design, in query order."""
        raise NotImplementedError

    def prepare_encodings(self, encodings: torch.Tensor) -> torch.Tensor:
        """Hook to transform the cached encodings (identity by default)."""
        return encodings

    # ---- setup -----------------------------------------------------------------------------
    def check_config(self) -> None:
        require_choice("acquisition", self.config["acquisition"], acquisition.ACQUISITIONS)

    def setup(self) -> None:
        with torch_threads(self.config["threads"]):
            self.cells: list[nb201.Cell] = list(nb201.all_cells())
            self._index = {c: i for i, c in enumerate(self.cells)}
            self.cell_ops = torch.as_tensor(self.cells, dtype=torch.long)  # (15625, 6): each edge's op
            self.in_domain = self._domain_mask()
            self.surrogate = self.build_surrogate()
            start, cpu = time.perf_counter(), time.process_time()
            self.encodings = self.prepare_encodings(self.surrogate.encode_all(self.cells))
            self.encoding_time_s = time.perf_counter() - start
            self.encoding_cpu_s = time.process_time() - cpu
            self.target_context = self._initial_target_context()
            self._start_state = self._trainable_state()
            self.priority = acquisition.tie_priority(len(self.cells), self.torch_gen)
            self.queue = list(self.initial_design())
        self.iteration_times: list[float] = []
        self.iteration_cpu_times: list[float] = []  # CPU seconds: wall time on a busy machine overstates
        self.fit_log: list[dict[str, float]] = []

    def _domain_mask(self) -> torch.Tensor:
        """(15625,) bool over ``self.cells``: the cells the benchmark has a value for (all on a complete one)."""
        domain = self.problem.objective.domain
        if domain is None:
            return torch.ones(len(self.cells), dtype=torch.bool)
        mask = torch.zeros(len(self.cells), dtype=torch.bool)
        mask[[self._index[c] for c in domain]] = True
        return mask

    def selectable(self) -> torch.Tensor:
        """(15625,) bool: the cells a BO step may pick, the unqueried ones with a value while any is
        left (any other query costs budget and tells the GP nothing), else every unqueried one;
        with ``local_radius``, only those of them in :meth:`neighbourhood` while it has any."""
        unqueried = torch.ones(len(self.cells), dtype=torch.bool)
        unqueried[[self._index[c] for c, _ in self.history]] = False
        preferred = unqueried & self.in_domain
        local = preferred & self.neighbourhood()
        for mask in (local, preferred):
            if bool(mask.any()):
                return mask
        return unqueried

    def neighbourhood(self) -> torch.Tensor:
        """(15625,) bool: the cells within ``local_radius`` edge changes of the ``local_centres``
        best observed cells; every cell when the radius is 0 or nothing has been measured."""
        radius = int(self.config["local_radius"])
        index, values = self.observed()
        if radius == 0 or index.numel() == 0:
            return torch.ones(len(self.cells), dtype=torch.bool)
        best = index[torch.argsort(values, descending=True, stable=True)[: int(self.config["local_centres"])]]
        changes = (self.cell_ops[:, None, :] != self.cell_ops[best][None, :, :]).sum(dim=2)  # (15625, centres)
        return changes.min(dim=1).values <= radius

    def _initial_target_context(self) -> torch.nn.Parameter | None:
        context = self.surrogate.initial_context()
        return None if context is None else torch.nn.Parameter(context.to(torch.float64))

    # ---- proposing -------------------------------------------------------------------------
    def propose(self) -> nb201.Cell:
        while self.queue:
            index = self.queue.pop(0)
            if not self.is_queried(self.cells[index]):
                return self.cells[index]
        start, cpu = time.perf_counter(), time.process_time()
        with torch_threads(self.config["threads"]):
            index = self.bo_step()
        self.iteration_times.append(time.perf_counter() - start)
        self.iteration_cpu_times.append(time.process_time() - cpu)
        return self.cells[index]

    def observed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices (n,) of the queried cells with a value and those values (n,), in query order.

        A cell a partial benchmark lacks (NaN) was spent but tells the GP nothing.
        """
        pairs = [(self._index[c], v) for c, v in self.history if np.isfinite(v)]
        index = torch.as_tensor([i for i, _ in pairs], dtype=torch.long)
        return index, torch.as_tensor([v for _, v in pairs], dtype=torch.float64)

    def bo_step(self) -> int:
        """Fine-tune on the observations so far, then return the acquisition's best unqueried cell."""
        index, values = self.observed()
        if index.numel() == 0:  # nothing measured yet: fall back to the next cell by tie priority
            return acquisition.select_best(torch.zeros(len(self.cells)), self.selectable(), self.priority)
        y = self.gp_targets(index, values)
        offset = self.mean_offset()
        fitted = y if offset is None else y - offset[index]
        self._load_trainable_state(self._start_state)
        self.fit_log.append(self.finetune(index, fitted))
        mean, std = self.posterior(index, fitted)
        if offset is not None:
            mean = mean + offset
        scores = self.acquisition_scores(mean, std, float(y.max()))
        return acquisition.select_best(scores, self.selectable(), self.priority)

    def gp_targets(self, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """The observations (n,) of cells ``index`` (n,) in GP units (by default their own transform)."""
        return transform_observations(values, self.surrogate.config.output_transform)

    def mean_offset(self) -> torch.Tensor | None:
        """A fixed mean function over all cells (15625,) that the GP models the residual of, or None."""
        return None

    def frozen(self, name: str) -> bool:
        """Whether the GP parameter ``name`` stays at its starting value during fine-tuning (none by default)."""
        return False

    def acquisition_scores(self, mean: torch.Tensor, std: torch.Tensor, best: float) -> torch.Tensor:
        """Acquisition value of every cell (n,), from the posterior (n,), (n,) and the best y."""
        return acquisition.score(self.config["acquisition"], mean, std, best,
                                 xi=float(self.config["ei_xi"]), beta=float(self.config["ucb_beta"]))

    def finetune(self, index: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """``finetune_steps`` Adam steps of the GP's negative log marginal likelihood on the cells
        ``index`` (n,) with GP targets ``y`` (n,); returns the fit's log entry."""
        loss = finetune_gp(self.surrogate, self.encodings[index], y, self.target_context,
                           int(self.config["finetune_steps"]), float(self.config["finetune_lr"]), self.frozen)
        return {"n": int(index.numel()), "loss": float(loss), **self.surrogate.gp.hyperparameters()}

    def posterior(self, index: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GP posterior mean and std over all cells, each (15625,), given the cells ``index`` (n,)
        and their GP targets ``y`` (n,)."""
        with torch.no_grad():
            context = self.fixed_target_context()
            self.surrogate.gp.condition_on(self.surrogate.kernel_inputs(self.encodings[index], context), y)
            return self.surrogate.gp.posterior(self.surrogate.kernel_inputs(self.encodings, context))

    def fixed_target_context(self) -> torch.Tensor | None:
        """The target's dataset context (c,) cut from the fine-tuning's graph, to score cells with;
        None when the surrogate sees no dataset context."""
        return None if self.target_context is None else self.target_context.detach()

    # ---- state -----------------------------------------------------------------------------
    def _trainable_state(self) -> dict[str, torch.Tensor]:
        state = {f"gp.{k}": v.detach().clone() for k, v in self.surrogate.gp.state_dict().items()}
        if self.target_context is not None:
            state["target_context"] = self.target_context.detach().clone()
        return state

    def _load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        gp_state = {k[3:]: v for k, v in state.items() if k.startswith("gp.")}
        self.surrogate.gp.load_state_dict(gp_state, strict=False)
        if self.target_context is not None:
            with torch.no_grad():
                self.target_context.copy_(state["target_context"])

    def result_extras(self) -> dict[str, Any]:
        times, cpu = self.iteration_times, self.iteration_cpu_times
        return {
            "timing": {
                "encode_all_cells_s": self.encoding_time_s,
                "encode_all_cells_cpu_s": self.encoding_cpu_s,
                "bo_iterations": len(times),
                "bo_iteration_mean_s": float(np.mean(times)) if times else None,
                "bo_iteration_max_s": float(np.max(times)) if times else None,
                "bo_iteration_mean_cpu_s": float(np.mean(cpu)) if cpu else None,
            },
        }

    def get_checkpointables(self) -> dict[str, Any]:
        return {**super().get_checkpointables(), "surrogate": self.surrogate.state_dict()}
