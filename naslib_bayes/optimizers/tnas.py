"""TNAS (Shala et al., ICLR 2023): BO with a meta-learned deep-kernel GP surrogate.

The surrogate comes from a ``surrogate.pt`` file (``naslib-bayes meta-train``) or, without one,
is meta-trained at setup leave-one-dataset-out on ``problem.source`` (the benchmark's other
datasets; the target is never seen). Its initial design is the top ``initial_design`` cells by
the surrogate's posterior mean for the target -- the meta-learned GP conditioned on its
meta-training evidence, seen with the target's dataset context -- then :class:`DeepKernelBO`
adapts it to the target's observations: each iteration fine-tunes the kernel on them and
picks the cell with the best expected improvement.

Two additions to the paper's loop. EI is weighted by the meta-learned prior as in pi-BO
(``prior_beta``; 0 turns it off): measured on NAS-Bench-201, the target-only GP's EI without it
spends most queries after the initial design on regions the other datasets already showed to be
poor (a GP fitted to five good cells cannot know the rest of the space is worse). And each BO
step scores only the cells one edge change from the three best seen (``local_radius``,
``local_centres``; ``local_radius=0`` scores every unqueried cell, as the paper), chosen on
validation datasets with fresh seeds (docs/tnas.md).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from naslib_bayes.errors import UserError
from naslib_bayes.optimizers import acquisition
from naslib_bayes.optimizers.deep_kernel_bo import DeepKernelBO
from naslib_bayes.optimizers.hyperparameters import above, at_least, require_choice
from naslib_bayes.predictors.meta_train import OUTER_UPDATES, MetaTrainConfig
from naslib_bayes.predictors.surrogate import DATASET_ENCODER_MODES, OUTPUT_TRANSFORMS

logger = logging.getLogger(__name__)


class TNAS(DeepKernelBO):
    """Transfer NAS with a meta-learned Bayesian surrogate.

    Hyper-parameters (beyond :class:`DeepKernelBO`'s):
        surrogate: path of a ``surrogate.pt`` (or its folder); ``None`` meta-trains at setup.
        dataset_encoder: ``off``, ``learned`` or ``images`` (used when meta-training here).
        image_root: ``images`` mode: root folder of the datasets' images.
        feature_extractor: ``images`` mode: ``random-conv``, ``pixels`` or ``module:factory``.
            A ``surrogate`` file whose extractor is a ``module:factory`` is loaded only when this
            names the same one: loading imports that module and calls the factory.
        encoder_hidden: psi's GRU size when meta-training here (64; the paper's is 512).
        meta_outer: ``reptile`` or ``joint``; meta_iterations, meta_lr: meta-training budget
            and inner learning rate; meta_outer_step: REPTILE's outer step size.
        meta_output_transform: how meta-training maps each dataset's accuracies to GP units,
            ``copula`` (default), ``robust`` or ``standardise`` (see ``MetaTrainConfig``); BO
            applies the transform the loaded surrogate was meta-trained with.
        meta_evidence_top: the best cells of each meta-training dataset the surrogate keeps as
            evidence for its prior (``MetaTrainConfig.evidence_top``).
        initial_design_only: ablation: spend the whole budget down the surrogate's initial
            ranking, never fitting the target's observations.
        prior_beta: pi-BO's beta (see :meth:`acquisition_scores`); None means budget / 10
            (pi-BO's own default), 0 gives the paper's plain EI.
        prior_form: pi-BO's prior belief, ``mean`` (default, ``exp(mu0)``) or ``top`` (the
            prior probability of a top cell; see :meth:`prior_log_belief`); prior_top: the
            rank that makes a cell a top cell for ``top``.
        target_units: ``own`` (default): the target's observations in GP units from their own
            statistics, as meta-training treats a dataset; ``prior``: in the meta-learned units
            with the prior in the GP's mean (see :meth:`gp_targets`).
        local_radius, local_centres: as in :class:`DeepKernelBO`, but 1 and 3 by default: each
            BO step scores the unqueried cells one edge change from the three best cells seen
            (every unqueried cell once those are used up); ``local_radius=0`` scores every
            unqueried cell, as the paper does.
    """

    defaults: dict[str, Any] = {
        **DeepKernelBO.defaults,
        "surrogate": None,
        "dataset_encoder": "off",
        "image_root": None,
        "feature_extractor": "random-conv",
        "encoder_hidden": 64,
        # meta-training's own defaults, so that `meta-train` and meta-training at setup agree
        "meta_outer": MetaTrainConfig.outer,
        "meta_iterations": MetaTrainConfig.iterations,
        "meta_lr": MetaTrainConfig.lr,
        "meta_outer_step": MetaTrainConfig.outer_step,
        "meta_output_transform": MetaTrainConfig.output_transform,
        "meta_evidence_top": MetaTrainConfig.evidence_top,
        "initial_design_only": False,
        "prior_beta": None,
        "prior_form": "mean",
        "prior_top": 100,
        "target_units": "own",
        # A trust region in cell space (see DeepKernelBO): chosen on the meta-training side, with
        # seeds no earlier choice had used (docs/tnas.md, "A trust region in cell space").
        "local_radius": 1,
        "local_centres": 3,
    }

    lower_bounds = {**DeepKernelBO.lower_bounds, "prior_top": at_least(1), "meta_lr": above(0),
                    "encoder_hidden": at_least(1), "meta_outer_step": at_least(0), "meta_iterations": at_least(1),
                    "meta_evidence_top": at_least(1)}

    TARGET_UNITS = ("own", "prior")
    PRIOR_FORMS = ("mean", "top")

    def build_surrogate(self):
        from naslib_bayes.predictors import surrogate_io

        path = self.config["surrogate"]
        if path is None and self.problem.prepared is not None:
            path = self.problem.prepared  # meta-trained once for this target by prepare()
        if path is not None:
            # A user extractor runs when the file loads: only the one this search names (and
            # prepare() meta-trained with) is trusted.
            surrogate, info = surrogate_io.load(path, trust_feature_extractor=self.config["feature_extractor"])
            self.surrogate_info = {"path": str(surrogate_io.resolve(path)), "meta_trained_here": False, **info}
        else:
            surrogate, info = self._meta_train_here()
            self.surrogate_info = {"path": None, "meta_trained_here": True, **info}
        # Allowed (an oracle ablation) but never silent: result.json records it beside the warning.
        seen = self.problem.dataset in surrogate.config.meta_datasets
        self.surrogate_info["target_in_meta_training"] = seen
        if seen:
            logger.warning("the surrogate was meta-trained on the target dataset %s: this is not transfer",
                           self.problem.dataset)
        return surrogate

    def check_inputs(self, problem) -> None:
        """Read now what :meth:`setup` will read for ``problem``: a command calls this before it
        makes its output folder, so that a surrogate file it cannot load, images missing from
        ``image_root``, an extractor that cannot be built or no dataset to meta-train on are
        refused before anything is written (the target's images are otherwise first read after
        the whole meta-training)."""
        from naslib_bayes.predictors import surrogate_io
        from naslib_bayes.predictors.dataset_context import build_feature_extractor, dataset_images

        path = self.config["surrogate"] if self.config["surrogate"] is not None else problem.prepared
        if path is not None:
            surrogate, _ = surrogate_io.load(path, trust_feature_extractor=self.config["feature_extractor"])
            encoder, datasets = surrogate.config.dataset_encoder, [problem.dataset]
        else:
            encoder, datasets = self.config["dataset_encoder"], [*_meta_training_source(problem).datasets, problem.dataset]
            if encoder == "images":
                build_feature_extractor(self.config["feature_extractor"])
        if encoder == "images":
            for name in datasets:
                dataset_images(name, self.config["image_root"])

    def _meta_train_here(self):
        source = _meta_training_source(self.problem)
        logger.warning("no surrogate given (--surrogate, or surrogate= from Python): meta-training "
                       "leave-one-dataset-out on %s (target %s left out)", ", ".join(source.datasets),
                       self.problem.dataset)
        return meta_train_surrogate(source, self.problem.objective.metric, self.config, self.seed)

    @classmethod
    def prepare(cls, source, dataset: str, directory: Path, metric: str, seed: int = 0,
                **hyperparameters: Any) -> dict[str, Any]:
        """Meta-train once on ``source`` (the benchmark without ``dataset``) into ``directory``.

        ``seed`` drives the meta-training (initialisation and task sampling). A comparison
        meta-trains one surrogate per seed by default; the paper trains one per left-out dataset
        (``--prepare-per dataset``), with which a search that has no ties repeats one trajectory.
        """
        from naslib_bayes.predictors import surrogate_io

        if not source.datasets:
            raise UserError(f"tnas: the benchmark has no dataset besides {dataset} to meta-train on")
        config = {**cls.defaults, **hyperparameters}
        surrogate, info = meta_train_surrogate(source, metric, config, seed)
        # a folder path names the file inside it even before the folder exists
        surrogate_io.save(surrogate, Path(directory) / surrogate_io.FILE_NAME, info)
        return {"meta_datasets": info["meta_datasets"]}  # the comparison records the wall time itself

    def _initial_target_context(self):
        if self.surrogate.config.dataset_encoder == "images":
            from naslib_bayes.predictors.dataset_context import target_image_context

            context = target_image_context(self.surrogate, self.problem.dataset, self.config["image_root"], self.torch_gen)
            return torch.nn.Parameter(context)
        return super()._initial_target_context()

    def prior_posterior(self, variance: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Posterior of the target over all cells given the meta-training evidence: mean (15625,)
        and, with ``variance``, std (15625,), else None.

        Uses the meta-learned state (call before fine-tuning, as :meth:`initial_design` does).
        """
        with torch.no_grad():
            x, y, noise_scale = self.surrogate.evidence_inputs(self.encodings)
            context = self.fixed_target_context()
            self.surrogate.gp.condition_on(x, y, noise_scale)
            return self.surrogate.gp.posterior(self.surrogate.kernel_inputs(self.encodings, context),
                                               variance=variance)

    def prior_mean(self) -> torch.Tensor:
        """Posterior mean of the target over all cells given the meta-training evidence, (15625,)."""
        return self.prior_posterior()[0]

    def prior_log_belief(self, prior_std: torch.Tensor | None) -> torch.Tensor:
        """log pi(x), pi-BO's prior belief that cell x is good, over all cells (15625,).

        ``mean``: the prior mean itself, pi(x) ~ exp(mu0(x)). ``top``: the probability under the
        meta-learned prior that x is as good as its ``prior_top``-th best cell,
        ``Phi((mu0(x) - tau) / sigma0(x))``, with ``prior_std`` (15625,) the prior's sigma0: a cell
        the other datasets show to be poor with confidence (a degenerate cell) gets a belief near
        0 instead of exp(-2.5), which a target GP's uncertainty far from the target's observations
        cannot outweigh.
        """
        if self.config["prior_form"] == "mean":
            return self.prior
        top = min(int(self.config["prior_top"]), self.prior.numel())
        tau = torch.topk(self.prior, top).values[-1]
        return torch.special.log_ndtr((self.prior - tau) / prior_std.clamp_min(1e-9))

    def initial_design(self) -> list[int]:
        if self.surrogate.evidence is None:
            raise UserError("the surrogate holds no meta-training evidence to rank cells with")
        # one conditioning on the evidence gives both the mean and, for prior_form=top, the std
        self.prior, prior_std = self.prior_posterior(variance=self.config["prior_form"] == "top")
        self.log_belief = self.prior_log_belief(prior_std)
        k = self.problem.objective.budget if self.config["initial_design_only"] else int(self.config["initial_design"])
        order = acquisition.ranking(self.prior, self.priority)
        self.prior_quantile = prior_quantiles(order)
        # On a partial benchmark the cells with a value come first: the others cost a query
        # and tell the GP nothing (a stable reorder, so a complete benchmark keeps the ranking).
        with_value = self.in_domain[order]
        self.initial = torch.cat([order[with_value], order[~with_value]])[:k].tolist()
        return list(self.initial)

    def check_config(self) -> None:
        super().check_config()
        require_choice("prior_form", self.config["prior_form"], self.PRIOR_FORMS)
        require_choice("target_units", self.config["target_units"], self.TARGET_UNITS)
        # meta-training's own checks run only at setup, after a comparison has spent other runs
        require_choice("meta_output_transform", self.config["meta_output_transform"], OUTPUT_TRANSFORMS)
        require_choice("meta_outer", self.config["meta_outer"], OUTER_UPDATES)
        require_choice("dataset_encoder", self.config["dataset_encoder"], DATASET_ENCODER_MODES)
        beta = self.config["prior_beta"]
        if beta is not None and not (isinstance(beta, (int, float)) and not isinstance(beta, bool) and beta >= 0):
            raise UserError(f"prior_beta={beta!r}: expected a number >= 0 (0: plain EI), or None for budget / 10")

    # ---- target_units=prior ------------------------------------------------------------------
    def gp_targets(self, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """The target's observations ``values`` (n,) of cells ``index`` (n,) in GP units, (n,).

        ``own``: their own transform (the copula among the observations), which puts the
        observations' median at the meta-learned GP's mean level, that of an average cell,
        although an initial design from the prior holds top cells only.

        ``prior``: the meta-learned units, where each dataset's cells are the normal quantiles of
        their ranks in that dataset. The target's ranks among all cells are unknown; the prior
        ranks every cell, so the queried cells take the quantiles the prior gives them
        (:func:`prior_quantiles`), reassigned in the order the target's observations put those
        cells in. The level and spread come from the prior, the order from the target.
        """
        if self.config["target_units"] != "prior":
            return super().gp_targets(index, values)
        return reorder_to(values, self.prior_quantile[index])

    def mean_offset(self) -> torch.Tensor | None:
        """``prior`` units: the GP models the target's residual from the prior's quantile of each cell."""
        return self.prior_quantile if self.config["target_units"] == "prior" else None

    def frozen(self, name: str) -> bool:
        """``prior`` units: the residual GP's constant mean stays at its meta-learned value."""
        return self.config["target_units"] == "prior" and name.startswith("mean_module.")

    def prior_beta(self) -> float:
        """pi-BO's beta: the ``prior_beta`` hyper-parameter, or a tenth of the budget."""
        beta = self.config["prior_beta"]
        return self.problem.objective.budget / 10.0 if beta is None else float(beta)

    def acquisition_scores(self, mean: torch.Tensor, std: torch.Tensor, best: float) -> torch.Tensor:
        """EI (or UCB) of the target's GP, weighted by the meta-learned prior (pi-BO), (15625,).

        ``mean`` and ``std`` (15625,) are the target GP's posterior over all cells, ``best`` the
        best GP target so far.

        ``log a(x) + (beta / n) * log pi(x)``: the acquisition ``a`` times ``pi(x)^(beta / n)``
        for the prior belief ``pi(x)`` that x is good (:meth:`prior_log_belief`; by default
        ``exp(mu0(x))``, where ``mu0`` is the surrogate's posterior mean given its meta-training
        evidence, in GP units) and n the number of target observations (Hvarfner et al., ICLR
        2022). The target's GP knows only the few cells evaluated on the target, so on its own
        EI rates the whole unexplored space as promising; the prior says which regions the other
        datasets found poor, and its weight fades as target evidence accumulates, so a target
        that disagrees takes over. UCB, which can be negative, gets the same term added to UCB
        itself. Log EI is computed as such, not as the log of EI: EI is rounding noise some 8
        standard deviations below the incumbent, where the prior's term would rank on that noise.
        """
        scores = super().acquisition_scores(mean, std, best)  # log EI, or UCB
        beta = self.prior_beta()
        if beta <= 0:
            return scores
        n = sum(math.isfinite(v) for _, v in self.history)  # a query without a value is no evidence
        return scores + (beta / n) * self.log_belief

    def result_extras(self) -> dict[str, Any]:
        from naslib_bayes.search_spaces.nasbench201.cell import to_string

        extras = super().result_extras()
        k = min(len(self.initial), self.problem.objective.budget)  # what was queried
        extras["surrogate"] = {**self.surrogate_info, "output_transform": self.surrogate.config.output_transform,
                               "encoder_hidden": self.surrogate.config.encoder_hidden,  # a file's, not config's default
                               "prior_beta": self.prior_beta(), "prior_form": self.config["prior_form"],
                               "target_units": self.config["target_units"]}
        if self.config["prior_form"] == "top":
            extras["surrogate"]["prior_top"] = int(self.config["prior_top"])
        extras["dataset_encoder"] = self._dataset_encoder_info()
        extras["initial_design"] = {
            "k": k,
            "source": "top cells by the meta-learned surrogate's posterior mean",
            "architectures": [to_string(self.cells[i]) for i in self.initial[:k]],
            "only": bool(self.config["initial_design_only"]),
        }
        return extras

    def _dataset_encoder_info(self) -> dict[str, Any]:
        config = self.surrogate.config
        info: dict[str, Any] = {"mode": config.dataset_encoder}
        if config.dataset_encoder == "images":
            info.update(feature_extractor=config.feature_extractor, images_per_class=config.images_per_class)
        if config.dataset_encoder == "learned":
            info["target_context"] = "mean of the meta-training contexts, fine-tuned on the target's observations"
        return info


def _meta_training_source(problem):
    """The benchmark's datasets other than the target, which a search without a surrogate file
    meta-trains on; a :class:`UserError` when there is none."""
    if problem.source is None or not problem.source.datasets:
        raise UserError("tnas needs a surrogate (--surrogate, or surrogate= from Python) or a benchmark with datasets "
                        "other than the target to meta-train on")
    return problem.source


def prior_quantiles(order: torch.Tensor) -> torch.Tensor:
    """Normal quantile of each cell's rank in ``order`` (best first), the copula of meta-training, (n,).

    The cell ranked r of n gets ``Phi^-1(1 - (r + 0.5) / n)``.
    """
    n = order.numel()
    rank = torch.empty(n, dtype=torch.float64)
    rank[order] = torch.arange(n, dtype=torch.float64)
    normal = torch.distributions.Normal(torch.zeros((), dtype=torch.float64), torch.ones((), dtype=torch.float64))
    return normal.icdf(1.0 - (rank + 0.5) / n)


def reorder_to(values: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``reference`` (n,) values reassigned so that their order follows ``values`` (n,).

    The largest value gets the largest reference value, and so on; tied values share the mean
    of the reference values they span.
    """
    ranked = torch.sort(reference, descending=True).values
    order = torch.argsort(values, descending=True, stable=True)
    out = torch.empty_like(reference)
    out[order] = ranked
    unique, inverse = torch.unique(values, return_inverse=True)
    if unique.numel() < values.numel():
        sums = torch.zeros(unique.numel(), dtype=out.dtype).index_add_(0, inverse, out)
        counts = torch.zeros(unique.numel(), dtype=out.dtype).index_add_(0, inverse, torch.ones_like(out))
        out = (sums / counts)[inverse]
    return out


def meta_train_surrogate(source, metric: str, config: dict[str, Any], seed: int):
    """Meta-train a surrogate on every dataset of ``source`` with TNAS's ``config``; (surrogate, info).

    ``info`` holds the meta-training datasets and the metric each was learned from, seed, log
    (``meta_train``) and configuration, as ``naslib-bayes meta-train`` records them.
    """
    from naslib_bayes.predictors.meta_train import (MetaTrainConfig, learned_from, meta_datasets_from_benchmark,
                                                     meta_train)
    from naslib_bayes.predictors.surrogate import SurrogateConfig

    surrogate_config = SurrogateConfig(encoder_hidden=int(config["encoder_hidden"]),
                                       dataset_encoder=config["dataset_encoder"],
                                       feature_extractor=config["feature_extractor"])
    datasets = meta_datasets_from_benchmark(source, source.datasets, metric, config["dataset_encoder"],
                                            config["image_root"], surrogate_config.images_per_class,
                                            surrogate_config.max_classes)
    meta_config = MetaTrainConfig(outer=config["meta_outer"], iterations=int(config["meta_iterations"]),
                                  lr=float(config["meta_lr"]), outer_step=float(config["meta_outer_step"]),
                                  threads=int(config["threads"]),
                                  output_transform=str(config["meta_output_transform"]),
                                  evidence_top=int(config["meta_evidence_top"]))
    surrogate, log = meta_train(datasets, surrogate_config, meta_config, seed=seed)
    return surrogate, {"meta_datasets": list(source.datasets), "meta_metrics": learned_from(datasets), "seed": seed,
                       "meta_train": log.to_dict(),
                       "meta_train_config": meta_config.to_dict()}
