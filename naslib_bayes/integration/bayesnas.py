"""BayesNAS as a NASLib one-shot optimizer, on NASLib's own search-space graphs.

:class:`BayesNASOptimizer` is a NASLib ``MetaOptimizer`` that works on a
``NasBench201SearchSpace`` or ``NasBench301SearchSpace`` (DARTS) graph the way NASLib's
DARTSOptimizer does: it clones the search space, stores its per-edge state in the edge data
(``bayesnas_cell_type``, ``bayesnas_cell``, ``bayesnas_edge``: which switches the edge owns)
and replaces every candidate-op list in the optimizer scope by :class:`BayesNASMixedOp`, a
NASLib ``MixedOp`` that scales each op by its switch. NASLib's Trainer then drives it:
``op_optimizer`` for its scheduler, ``step`` returning ``(logits_train, logits_val,
train_loss, val_loss)``, ``get_final_architecture`` (a plain NASLib graph of the derived
cell), ``get_checkpointables`` (``"model"``: graph and switches), ``get_model_size``.

Nothing of the method is implemented twice: the schedule, the group-sparse training loss, the
layer-wise Gauss-Newton curvature, the HARD update, pruning and the derivation are those of
:class:`naslib_bayes.optimizers.bayesnas.optimizer.BayesNAS`, which this class drives with the
NASLib graph in place of naslib-bayes's supernet (:class:`GraphSupernet`). Switches are
grouped per cell type as there: every cell has its own switches, one parent switch per edge
(its absence is NASLib's ``Zero`` op) and one child switch per non-zero op.

Importing this module imports NASLib.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from naslib_bayes.errors import UserError
from naslib_bayes.integration import hyperparameter_section, load_naslib
from naslib_bayes.optimizers.bayesnas.optimizer import BayesNAS
from naslib_bayes.optimizers.bayesnas.switches import CellTopology, SwitchBank
from naslib_bayes.search_spaces.darts.search_network import cell_edges
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.supernet import SUPERNET_OPS

_naslib = load_naslib()
_primitives = _naslib.primitives

#: NASLib's candidate ops on a NB201 cell edge, by position (``NasBench201SearchSpace``).
NB201_NASLIB_OPS = nb201.NASLIB_OPS
#: NASLib's candidate ops on a DARTS cell edge, by position (``NasBench301SearchSpace``).
DARTS_NASLIB_OPS = ("skip_connect", "none", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "sep_conv_5x5",
                    "dil_conv_3x3", "dil_conv_5x5")
DARTS_STEPS = 4

#: Module types the layer-wise curvature pass follows in NASLib's NB201 and DARTS graphs, by
#: class name. Containers run their own code through recorded tensor functions (sums,
#: slicing, concatenation, scaling by constants); leaf types have a rule of their own.
SUPPORTED_MODULE_TYPES = frozenset({
    # torch
    "Conv2d", "BatchNorm2d", "ReLU", "AvgPool2d", "MaxPool2d", "AdaptiveAvgPool2d", "Linear", "Flatten",
    "Identity", "Dropout", "Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict",
    # NASLib graphs and primitives (naslib.search_spaces.core / nasbench201 / nasbench301)
    "Graph", "NasBench201SearchSpace", "NasBench301SearchSpace", "Stem", "ReLUConvBN", "ResNetBasicblock",
    "Zero", "AvgPool1x1", "SepConv", "DilConv", "FactorizedReduce", "MaxPool", "AvgPool", "AuxiliaryHead",
    # naslib-bayes
    "BayesNASMixedOp", "GraphSupernet", "OneShotModel", "SwitchBank", "CheckpointModel",
})


def check_curvature_support(model: nn.Module) -> None:
    """Raise :class:`UserError` naming every module type in ``model`` the curvature pass does not support.

    The supported types (:data:`SUPPORTED_MODULE_TYPES`) are those of NASLib's
    ``NasBench201SearchSpace`` -- the graphs, ``Stem``, ``ReLUConvBN``, ``ResNetBasicblock``,
    ``Identity``, ``Zero``, ``AvgPool1x1`` and torch's ``Conv2d``, ``BatchNorm2d``, ``ReLU``,
    ``AvgPool2d``, ``AdaptiveAvgPool2d``, ``Flatten``, ``Linear``, ``Sequential`` -- and of its
    DARTS space ``NasBench301SearchSpace`` -- also ``SepConv``, ``DilConv``,
    ``FactorizedReduce``, ``MaxPool``, ``AvgPool``, ``AuxiliaryHead``, ``MaxPool2d``,
    ``Dropout``.
    """
    unsupported = sorted({type(m).__name__ for m in model.modules()} - SUPPORTED_MODULE_TYPES)
    if unsupported:
        raise UserError(
            f"BayesNAS's layer-wise curvature does not support the module type(s) {', '.join(unsupported)} "
            f"(supported: the modules of NASLib's NB201 and DARTS graphs: {', '.join(sorted(SUPPORTED_MODULE_TYPES))})"
        )


class BayesNASMixedOp(_primitives.MixedOp):
    """A NASLib ``MixedOp`` whose ops are scaled by BayesNAS's switches.

    ``forward(x, edge_data)`` is ``s_parent * sum_k s_k * op_k(x)`` over the unpruned non-zero
    ops of the edge, with the switches of the edge's cell as recorded in ``edge_data``
    (``bayesnas_cell_type``, ``bayesnas_cell``, ``bayesnas_edge``). A pruned edge gives
    NASLib's ``Zero`` of its input. The switches live in the optimizer's :class:`SwitchBank`,
    which the op references without registering (the graph's parameters stay the network
    weights, as NASLib's optimizers expect).

    Args:
        primitives: the non-zero candidate ops, in the order of the cell type's switches.
        zero: NASLib's ``Zero`` op of the edge (its stride).
        bank_ref: a one-element list holding the switches (filled in after the op is built).
    """

    def __init__(self, primitives, zero, bank_ref: list):
        super().__init__(list(primitives))
        self.zero = zero
        self._bank = bank_ref  # [SwitchBank], shared by all edges; a list: not registered as a submodule

    @property
    def bank(self) -> SwitchBank:
        return self._bank[0]

    def get_weights(self, edge_data):
        return edge_data.bayesnas_cell_type, int(edge_data.bayesnas_cell), int(edge_data.bayesnas_edge)

    def process_weights(self, weights):
        return weights

    def apply_weights(self, x, weights):
        cell_type, cell, edge = weights
        out = self.bank.mix(x, self._calls, cell_type, cell, edge)
        return self.zero(x, None) if out is None else out

    @property
    def _calls(self):
        return [_Call(op) for op in self.primitives]

    def get_embedded_ops(self):
        return self.primitives


class _Call:
    """``op(x)`` for a NASLib primitive, which takes ``(x, edge_data)``."""

    __slots__ = ("op",)

    def __init__(self, op):
        self.op = op

    def __call__(self, x):
        return self.op(x, None)


class GraphSupernet(nn.Module):
    """A NASLib graph seen as a naslib-bayes supernet (``forward(x, mixer)``, ``topologies()``).

    The switches reach the graph through its :class:`BayesNASMixedOp` s, so ``mixer`` is unused.
    """

    def __init__(self, graph, topologies: list[CellTopology], space_name: str, steps: int | None = None):
        super().__init__()
        self.graph = graph
        self._topologies = list(topologies)
        self.space_name = space_name
        self.steps = steps

    def topologies(self) -> list[CellTopology]:
        return list(self._topologies)

    def forward(self, x: torch.Tensor, mixer=None) -> torch.Tensor:
        return self.graph(x)


# ---- how one search space maps onto switch groups ------------------------------------------------
class _Layout:
    """Cell types, edge numbering and op naming of a NASLib search space."""

    def __init__(self, space):
        kind = space.get_type() if hasattr(space, "get_type") else None
        self.kind = kind
        if kind == "nasbench201":
            self.naslib_ops = NB201_NASLIB_OPS
            self.ops = SUPERNET_OPS  # naslib-bayes's order, so derive() and the supernet agree
            self.edges = nb201.EDGES
            self.inputs, self.outputs = (0,), (nb201.NUM_NODES - 1,)
            self.cell_type_of_scope = {scope: "normal" for scope in space.OPTIMIZER_SCOPE}
            self.steps = None
        elif kind == "nasbench301":
            self.naslib_ops = DARTS_NASLIB_OPS
            self.ops = tuple(op for op in DARTS_NASLIB_OPS if op != "none")
            self.edges = cell_edges(DARTS_STEPS)
            self.inputs, self.outputs = (0, 1), tuple(range(2, 2 + DARTS_STEPS))
            self.cell_type_of_scope = {scope: ("reduce" if scope.startswith("r_") else "normal")
                                       for scope in space.OPTIMIZER_SCOPE}
            self.steps = DARTS_STEPS
        else:
            raise UserError(f"BayesNASOptimizer runs on NASLib's NasBench201SearchSpace and NasBench301SearchSpace "
                            f"(DARTS) graphs, not on {kind or type(space).__name__}")

    def edge_index(self, head: int, tail: int) -> int:
        """Switch edge of NASLib's cell edge ``head -> tail`` (NASLib numbers cell nodes from 1)."""
        return self.edges.index((head - 1, tail - 1))


def _refuse_an_lr_min_the_trainer_ignores(own: dict[str, Any], search: dict[str, Any]) -> None:
    """NASLib's Trainer builds the cosine schedule itself, down to ``search.learning_rate_min``:
    another ``search.bayesnas.lr_min`` would be recorded as used and never take effect."""
    lr_min, trainers = own.get("lr_min"), search.get("learning_rate_min")
    if lr_min is not None and trainers is not None and float(lr_min) != float(trainers):
        raise UserError(f"search.bayesnas.lr_min={lr_min}: NASLib's Trainer anneals the learning rate to "
                        f"search.learning_rate_min ({trainers}); set that instead")


class BayesNASOptimizer(_naslib.metaclasses.MetaOptimizer):
    """BayesNAS (Zhou et al., ICML 2019) as a NASLib one-shot ``MetaOptimizer``.

    Args:
        config: a NASLib config (optional). Reads ``search.epochs`` (the schedule's length),
            ``search.seed``, ``search.learning_rate``, ``momentum``, ``weight_decay``,
            ``grad_clip``, ``learning_rate_min`` and the mapping ``search.bayesnas`` of BayesNAS
            hyper-parameters (``lambda_origin``, ``lambda_child``, ``warmup_epochs``,
            ``epochs``, ``rounds``, ``curvature_batches``, ``curvature_reduction``,
            ``gamma_init``).
        **hyperparameters: override those (as naslib-bayes's ``bayesnas`` names them); NASLib
            names (``learning_rate``, ``epochs`` of the search, ...) are also accepted so
            that ``BayesNASOptimizer(**config.search)`` works as NASLib's DARTS example does.
            Without ``config`` they are read as a config's ``search``, so that this is the
            optimizer ``BayesNASOptimizer(config)`` builds (``search.bayesnas`` beats the keys
            beside it in both).

    The schedule (``warmup_epochs`` + ``rounds`` x ``epochs``) must fill NASLib's
    ``search.epochs``; by default one warm-up epoch (none for a one-epoch search) and one round.
    """

    using_step_function = True

    def __init__(self, config=None, **hyperparameters: Any):
        super().__init__()
        if config is None:  # BayesNASOptimizer(**config.search): the keywords are a config's search section
            search, overrides = dict(hyperparameters), {}
        else:
            search, overrides = dict(config.search), hyperparameters
        own = hyperparameter_section(search, "bayesnas")
        _refuse_an_lr_min_the_trainer_ignores(own, search)
        own.update(hyperparameter_section(overrides, "bayesnas"))
        overrides.pop("bayesnas", None)
        naslib_side = {**search, **overrides}
        self.search_epochs = int(naslib_side.get("epochs", 0) or 0) or None
        seed = int(naslib_side.get("seed", getattr(config, "seed", 0) if config is not None else 0) or 0)
        for naslib_name, ours in (("learning_rate", "lr"), ("learning_rate_min", "lr_min"), ("momentum", "momentum"),
                                  ("weight_decay", "weight_decay"), ("grad_clip", "grad_clip")):
            if naslib_side.get(naslib_name) is not None:
                own.setdefault(ours, naslib_side[naslib_name])
        own_keys = (set(BayesNAS.common_defaults) | set(BayesNAS.defaults)) - {"epochs", "lr", "lr_min"}
        for key in own_keys & set(search):  # beside NASLib's keys, a BayesNAS name yields to search.bayesnas
            own.setdefault(key, search[key])
        own.update({k: v for k, v in overrides.items() if k in own_keys})
        if self.search_epochs is not None:
            own = _fit_schedule(own, self.search_epochs)
        self.core = BayesNAS(seed=seed, **own)
        self.seed = seed
        self.graph = None
        self.search_space = None
        self.layout: _Layout | None = None
        self.dataset = config.dataset if config is not None and "dataset" in config else None

    # ---- NASLib's MetaOptimizer ------------------------------------------------------------------
    def adapt_search_space(self, search_space, dataset=None, scope=None, dataset_api=None, **kwargs):
        """Both NASLib call forms: ``(ss, dataset, scope)`` (one-shot) and ``(ss, dataset_api=api)`` (runners)."""
        layout = _Layout(search_space)
        if dataset is not None:
            self.dataset = dataset
        self.dataset_api = dataset_api
        self.search_space = search_space.clone()  # unmodified template of the final architecture
        graph = search_space.clone()
        scope = scope if scope else graph.OPTIMIZER_SCOPE
        self.scope = scope
        counts = self._label_edges(graph, layout, scope)
        topologies = [CellTopology(name, n, layout.edges, layout.ops, layout.inputs, layout.outputs)
                      for name, n in counts.items()]
        self.layout = layout
        supernet = GraphSupernet(graph, topologies, layout.kind if layout.kind == "nasbench201" else "darts",
                                 steps=layout.steps)
        # The mixed ops reach the switches through a reference filled in once BayesNAS has
        # built its switch bank (from the topologies) and its SGD optimizer over the parsed
        # graph's weights plus the switches.
        bank_ref: list[SwitchBank] = []
        graph.update_edges(lambda edge: self._replace_op(edge, layout, bank_ref), scope=scope, private_edge_data=True)
        graph.parse()
        self.core.adapt_search_space(supernet, self.dataset)
        bank_ref.append(self.core.bank)
        check_curvature_support(self.core.model)
        self.checkpoint_model = CheckpointModel(self.core)
        self.graph = graph
        graph.train()

    @staticmethod
    def _label_edges(graph, layout: _Layout, scope) -> dict[str, int]:
        """Store which switches each cell edge owns in its (private) edge data; cells per type."""
        counts: dict[str, int] = {}
        for naslib_scope in scope:
            cell_type = layout.cell_type_of_scope.get(naslib_scope)
            if cell_type is None:
                raise UserError(f"BayesNASOptimizer: unknown scope {naslib_scope!r} for {layout.kind}")
            seen: set[tuple[int, int]] = set()
            state = {"cell": counts.get(cell_type, 0) - 1}

            def label(edge, cell_type=cell_type, seen=seen, state=state):
                key = (edge.head, edge.tail)
                if not seen or key in seen:  # every cell visits each of its edges once
                    seen.clear()
                    state["cell"] += 1
                seen.add(key)
                if not isinstance(edge.data.op, list):
                    raise UserError("BayesNASOptimizer needs a search space whose cell edges still hold their "
                                    "candidate-op lists (a fresh search space, not an architecture)")
                edge.data.set("bayesnas_cell_type", cell_type)
                edge.data.set("bayesnas_cell", state["cell"])
                edge.data.set("bayesnas_edge", layout.edge_index(edge.head, edge.tail))

            graph.update_edges(label, scope=[naslib_scope], private_edge_data=True)
            counts[cell_type] = state["cell"] + 1
        return counts

    @staticmethod
    def _replace_op(edge, layout: _Layout, bank_ref: list) -> None:
        candidates = edge.data.op
        if len(candidates) != len(layout.naslib_ops):
            raise UserError(f"BayesNASOptimizer: an edge holds {len(candidates)} candidate ops, "
                            f"{layout.kind} has {len(layout.naslib_ops)}")
        by_name = dict(zip(layout.naslib_ops, candidates))
        primitives = [by_name[name] for name in layout.ops]
        edge.data.set("op", BayesNASMixedOp(primitives, by_name["none"], bank_ref))

    @property
    def op_optimizer(self):
        return self.core.op_optimizer

    @property
    def architectural_weights(self):
        return self.core.architectural_weights

    @property
    def bank(self) -> SwitchBank:
        return self.core.bank

    def new_epoch(self, epoch: int) -> None:
        self.core.new_epoch(epoch)

    def step(self, data_train, data_val):
        return self.core.step(data_train, data_val)

    def before_training(self) -> None:
        device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")  # as NASLib's Trainer
        self.core.model.to(device)

    def after_training(self) -> None:
        self.core.after_training()

    def get_final_architecture(self):
        """The derived cell as a plain NASLib graph (queryable on NB201, trainable on DARTS)."""
        core = self.core
        if core.last_derivation is None and core.epoch < 0 and int(core.bank.num_updates) > 0:
            # a fresh optimizer that loaded a search's checkpoint: derive from its gammas
            core.rounds_done = int(core.bank.num_updates)
            core.last_derivation = core.derive()
        derived = core.get_final_architecture()
        if self.layout.kind == "nasbench201":
            graph = self.search_space.clone()
            graph.set_spec(list(nb201.to_naslib(derived)), dataset_api=self.dataset_api)
            graph.parse()
            return graph
        conversions = __import__("naslib.search_spaces.nasbench301.conversions", fromlist=["convert_genotype_to_naslib"])
        graph = self.search_space.clone()
        conversions.convert_genotype_to_naslib(_naslib_genotype(derived), graph)
        graph.prepare_evaluation()
        graph.parse()
        return graph

    def get_op_optimizer(self):
        return self.core.op_optimizer

    def get_checkpointables(self):
        """``model``: graph, switches and BayesNAS's schedule state (:class:`CheckpointModel`); ``op_optimizer``."""
        return {"model": self.checkpoint_model, "op_optimizer": self.core.op_optimizer}

    def get_model_size(self) -> float:
        return self.core.get_model_size()

    def test_statistics(self):
        return None

    # ---- what naslib-run reports ------------------------------------------------------------------
    def gammas(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{cell_type: (gamma_parent (E,), gamma_child (E, K))}`` of the last update."""
        return {name: self.core.bank.gammas(name) for name in self.core.bank.topologies}

    def result_extras(self) -> dict[str, Any]:
        return self.core.result_extras()


class CheckpointModel(nn.Module):
    """The ``"model"`` NASLib's Trainer checkpoints: BayesNAS's network and switch bank.

    NASLib's Trainer saves this module at the end of an epoch (its periodic checkpointer,
    always after the last epoch) and only then calls ``after_training``. Saving is therefore
    BayesNAS's end-of-epoch signal here: :meth:`state_dict` first runs the architecture update
    due at the end of a round, so the checkpoint holds the updated gammas, and
    ``Trainer.evaluate`` in a fresh process (which loads it and calls
    ``get_final_architecture``) derives the architecture the search derived.
    """

    def __init__(self, core: BayesNAS):
        super().__init__()
        self.model = core.model
        self._core = [core]  # not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def state_dict(self, *args, **kwargs):
        core = self._core[0]
        if core.epoch >= 0:
            core.end_epoch(core.epoch)  # a no-op unless a round ends with this epoch and is not updated yet
        return super().state_dict(*args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        """Load the network and switches; the rounds done are the switch bank's updates.

        ``Trainer.search(resume_from=...)`` goes on from the loaded epoch: without this, the
        next round's update would count as the first (pruning after the last round, and a
        second update of the same round when the checkpoint is saved twice, which fails).
        """
        loaded = super().load_state_dict(*args, **kwargs)
        core = self._core[0]
        core.rounds_done = int(core.bank.num_updates)
        core.last_derivation = core.derive() if core.rounds_done else None
        return loaded


def _fit_schedule(own: dict, total: int) -> dict:
    """Fill the unspecified BayesNAS schedule counts so that the schedule lasts ``total`` epochs
    (a count given as None, YAML's ``null``, is unspecified too)."""
    schedule = ("warmup_epochs", "epochs", "rounds")
    own = {key: value for key, value in own.items() if key not in schedule or value is not None}
    if total < 1:
        raise UserError(f"search.epochs must be at least 1 for BayesNAS, got {total}")
    given = set(schedule) & set(own)
    if given == {"warmup_epochs", "epochs", "rounds"}:
        pass
    elif "warmup_epochs" not in given:
        own.setdefault("rounds", 1)
        if "epochs" not in given:
            own["warmup_epochs"] = 1 if total > 1 else 0
            own["epochs"] = max(1, (total - own["warmup_epochs"]) // int(own["rounds"]))
        own["warmup_epochs"] = total - int(own["rounds"]) * int(own["epochs"])
    else:
        own.setdefault("rounds", 1)
        if "epochs" not in given:
            own["epochs"] = max(1, (total - int(own["warmup_epochs"])) // int(own["rounds"]))
        else:
            own["rounds"] = max(1, (total - int(own["warmup_epochs"])) // int(own["epochs"]))
    scheduled = int(own["warmup_epochs"]) + int(own["rounds"]) * int(own["epochs"])
    if scheduled != total or int(own["warmup_epochs"]) < 0:
        raise UserError(f"BayesNAS's schedule (warmup_epochs {own['warmup_epochs']} + rounds {own['rounds']} x "
                        f"epochs {own['epochs']}) does not fill NASLib's search.epochs={total}")
    return own


def _naslib_genotype(genotype):
    """naslib-bayes's DARTS ``Genotype`` as the namedtuple NASLib's conversion reads."""
    from collections import namedtuple

    NaslibGenotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")
    return NaslibGenotype(list(genotype.normal), list(genotype.normal_concat), list(genotype.reduce),
                          list(genotype.reduce_concat))
