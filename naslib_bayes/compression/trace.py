"""Reading a CNN as a sequential chain of supported layers (via ``torch.fx``).

Network compression works on *chains*: the network is one path of modules, each taking the
previous one's output. The supported modules are

* ``nn.Conv2d`` (``groups == 1``) and ``nn.Linear`` — the *layers*, whose output channels or
  neurons are the *units* that compression can remove;
* ``nn.BatchNorm1d`` / ``nn.BatchNorm2d`` (at most one per layer, after it), ``nn.ReLU``,
  ``nn.MaxPool2d``, ``nn.AvgPool2d``, ``nn.AdaptiveAvgPool2d``, ``nn.Flatten`` (``start_dim=1``),
  ``nn.Dropout`` and ``nn.Identity`` — per-channel operations between layers — and the
  :class:`InputSelect` that a compressed network which lost inputs starts with (so that it can be
  compressed again);
* the functions ``torch.flatten(x, 1)``, ``torch.relu``/``F.relu`` (in place or not) and the
  tensor methods ``x.flatten(1)``/``x.relu()``/``x.relu_()``, and a view to the batch size by
  -1 (``x.view(x.size(0), -1)``, ``x.reshape(x.shape[0], -1)``), which are read as the
  equivalent modules; so are ``F.max_pool2d``/``torch.max_pool2d``, ``F.avg_pool2d`` and
  ``F.adaptive_avg_pool2d`` (same arguments, positional or keyword),
  ``F.dropout(x, p, training=self.training)``/``torch.dropout(x, p, self.training)`` (as
  ``nn.Dropout(p)``: the model is traced in train and eval mode to check that ``training``
  follows the mode) and the global mean ``x.mean((2, 3))`` (``nn.AdaptiveAvgPool2d(1)``, then
  ``nn.Flatten()`` unless ``keepdim=True``). Arguments no module reproduces
  (``return_indices=True``, a mean over other dims, a dropout that drops in eval mode too) are
  refused naming the call.

:func:`trace_chain` traces a model with ``torch.fx`` (custom container modules are traced
through) and returns the chain as a list of modules; anything else — an unsupported module,
function or method, a branch, a second input, a layer with weights called twice, two layers
sharing a weight tensor, a forward hook on the model or a layer — is an
:class:`UnsupportedModelError` that names the module it occurs in. :func:`analyse_chain` derives the layer structure that switches, pruning and
slimming need (where each layer's units are, how a linear layer's inputs group into the
producing convolution's channels after a ``Flatten``) by running the chain once on a zero input
of the given shape.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from naslib_bayes.errors import UserError


class UnsupportedModelError(UserError):
    """The model is not a chain of supported modules; the message names the offending part."""


class InputSelect(nn.Module):
    """Keeps the input features (or channels) listed in ``index`` along dimension 1.

    Compressed networks that lost some of their inputs start with it; ``index`` is a buffer,
    so it travels with the state dict.
    """

    def __init__(self, num_inputs: int, index: torch.Tensor | Sequence[int] | None = None):
        super().__init__()
        self.num_inputs = int(num_inputs)
        index = torch.arange(num_inputs) if index is None else torch.as_tensor(index, dtype=torch.long)
        if index.dim() != 1 or index.numel() < 1:
            raise ValueError("InputSelect needs a non-empty 1-d index")
        self.register_buffer("index", index.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.index)

    def extra_repr(self) -> str:
        return f"{self.index.numel()} of {self.num_inputs}"


LAYER_TYPES = (nn.Conv2d, nn.Linear)
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)
#: Per-channel operations allowed between layers (they map zero to zero, channel by channel).
BETWEEN_TYPES = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Identity,
                 InputSelect)
SUPPORTED_TYPES = LAYER_TYPES + BN_TYPES + BETWEEN_TYPES


def _supported_names() -> str:
    return ", ".join(t.__name__ for t in SUPPORTED_TYPES if t is not InputSelect)


# ------------------------------------------------------------------------------- tracing
class _ChainTracer(fx.Tracer):
    """fx's tracer, keeping an :class:`InputSelect` as one call: a compressed network starts with
    one when it lost inputs, and compressing it again must read it as the module, not its index."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, InputSelect) or super().is_leaf_module(m, module_qualified_name)


def _trace_graph(model: nn.Module) -> fx.Graph:
    return _ChainTracer().trace(model)


def _where(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "the model's forward"
    path, cls = list(stack.values())[-1]
    return f"module '{path}' ({getattr(cls, '__name__', cls)})"


class _Unreadable(Exception):
    """A supported function called with arguments that no module computes; the message says which."""


def _bind(node: fx.Node, names: Sequence[str], defaults: dict | None = None) -> dict:
    """The call's arguments after the activation by name, positional or keyword, defaults filled in."""
    args = node.args[1:]
    if len(args) > len(names):
        raise _Unreadable(f"it takes {len(args)} arguments after the input, more than {', '.join(names)}")
    bound = {**(defaults or {}), **dict(zip(names, args))}
    for key, value in node.kwargs.items():
        if key not in names:
            raise _Unreadable(f"the argument {key}={value!r} has no module equivalent")
        bound[key] = value
    missing = [name for name in names if name not in bound]
    if missing:
        raise _Unreadable(f"it is called without {', '.join(missing)}")
    return bound


def _size(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _stride(value):
    """PyTorch's default stride (None, or ``[]`` for ``torch.max_pool2d``) is the kernel size."""
    return None if value is None or (isinstance(value, (list, tuple)) and not value) else _size(value)


_POOL_DEFAULTS = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False,
                  "count_include_pad": True, "divisor_override": None}
_MAX_POOL_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVG_POOL_ARGS = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")


def _max_pool(node: fx.Node) -> list[nn.Module]:
    a = _bind(node, _MAX_POOL_ARGS, _POOL_DEFAULTS)
    if a["return_indices"]:
        raise _Unreadable("return_indices=True makes its output a pair, not the next layer's input")
    return [nn.MaxPool2d(_size(a["kernel_size"]), _stride(a["stride"]), _size(a["padding"]), _size(a["dilation"]),
                         ceil_mode=a["ceil_mode"])]


def _max_pool_with_indices(node: fx.Node) -> list[nn.Module]:
    raise _Unreadable("its output is a pair (values, indices), not the next layer's input")


def _avg_pool(node: fx.Node) -> list[nn.Module]:
    a = _bind(node, _AVG_POOL_ARGS, _POOL_DEFAULTS)
    return [nn.AvgPool2d(_size(a["kernel_size"]), _stride(a["stride"]), _size(a["padding"]), a["ceil_mode"],
                         a["count_include_pad"], a["divisor_override"])]


def _adaptive_avg_pool(node: fx.Node) -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(_size(_bind(node, ("output_size",))["output_size"]))]


def _global_mean(node: fx.Node) -> list[nn.Module]:
    """``x.mean((2, 3))``: global average pooling, then (without keepdim) the flatten it implies."""
    a = _bind(node, ("dim", "keepdim", "dtype"), {"dim": None, "keepdim": False, "dtype": None})
    dim, keepdim = a["dim"], a["keepdim"]
    if a["dtype"] is not None:
        raise _Unreadable(f"dtype={a['dtype']} changes the dtype, which no pooling module does")
    if dim is None:
        raise _Unreadable("a mean over all dims; compression reads a mean over dims (2, 3) (global average pooling)")
    dims = tuple(dim) if isinstance(dim, (list, tuple)) else (dim,)
    if len(dims) != 2 or {d + 4 if isinstance(d, int) and d < 0 else d for d in dims} != {2, 3}:
        raise _Unreadable(f"a mean over dim={dim!r}; only the mean over a feature map's height and width, "
                          "dims (2, 3), is a module (global average pooling)")
    return [nn.AdaptiveAvgPool2d(1)] + ([] if keepdim else [nn.Flatten(1, -1)])


def _dropout_args(node: fx.Node) -> dict:
    if node.target is torch.dropout:  # torch.dropout(input, p, train)
        bound = _bind(node, ("p", "train"))
        return {"p": bound["p"], "training": bound["train"]}
    return _bind(node, ("p", "training", "inplace"), {"p": 0.5, "training": True, "inplace": False})


def _dropout(node: fx.Node, training_by_mode: dict[bool, object]) -> list[nn.Module]:
    """``F.dropout(x, p, training=self.training)`` as ``nn.Dropout(p)``: its ``training`` argument, read
    in a trace of the model in train mode and one in eval mode, must follow the mode (in place or not,
    the values are the same); never training is an identity."""
    p = _dropout_args(node)["p"]
    try:
        module = nn.Dropout(p)
    except (TypeError, ValueError) as exc:
        raise _Unreadable(f"p={p!r}: {exc}") from None
    in_train, in_eval = training_by_mode.get(True), training_by_mode.get(False)
    if (in_train, in_eval) == (True, False):
        return [module]
    if (in_train, in_eval) == (False, False):
        return [nn.Identity()]
    if (in_train, in_eval) == (True, True):
        raise _Unreadable("training=True in train and in eval mode: it drops in eval mode too, which nn.Dropout "
                          "does not; pass training=self.training")
    raise _Unreadable(f"its training argument does not follow the model's mode (training={in_train!r} in train "
                      f"mode, {in_eval!r} in eval mode); pass training=self.training")


_POOLING_FUNCTIONS = {F.max_pool2d: _max_pool, torch.max_pool2d: _max_pool, F.avg_pool2d: _avg_pool,
                      F.max_pool2d_with_indices: _max_pool_with_indices,
                      F.adaptive_avg_pool2d: _adaptive_avg_pool, torch.mean: _global_mean}
_DROPOUT_FUNCTIONS = (F.dropout, torch.dropout)


def _is_dropout(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target in _DROPOUT_FUNCTIONS


def _dropout_training(model: nn.Module, nodes: Sequence[fx.Node]) -> dict[str, dict[bool, object]]:
    """The ``training`` argument of every dropout call, by node name, in a trace of the model in train
    mode and one in eval mode: ``self.training`` becomes a constant when traced, so ``training=True``
    written by hand is told apart from the model's mode only by tracing in both. Modes are restored."""
    if not any(_is_dropout(node) for node in nodes):
        return {}
    found: dict[str, dict[bool, object]] = {}
    modes = {m: m.training for m in model.modules()}
    try:
        for mode in (True, False):
            for module in modes:  # the flag only: a train() of the user's with side effects is not called
                module.training = mode
            try:
                graph = _trace_graph(model)
            except Exception:  # untraceable in this mode: its dropouts' training stays unknown
                continue
            for node in filter(_is_dropout, graph.nodes):
                try:
                    found.setdefault(node.name, {})[mode] = _dropout_args(node)["training"]
                except _Unreadable:
                    pass
    finally:
        for module, training in modes.items():
            module.training = training
    return found


def _modules_from_function(node: fx.Node, dropout_training: dict[str, dict[bool, object]]) -> list[nn.Module] | None:
    """The modules equivalent to a supported function/method call on the activation (None: not one).

    Raises :class:`_Unreadable` for a supported function whose arguments no module reproduces.
    """
    if _is_flatten_view(node):
        return [nn.Flatten(1, -1)]
    if node.op == "call_function":
        target = node.target
        args, kwargs = node.args[1:], dict(node.kwargs)
        if target in _POOLING_FUNCTIONS:
            return _POOLING_FUNCTIONS[target](node)
        if target in _DROPOUT_FUNCTIONS:
            return _dropout(node, dropout_training.get(node.name, {}))
        if target is torch.flatten:
            return _flatten(args, kwargs)
        kwargs.pop("inplace", None)  # in place or not, the chain's ReLU computes the same values
        if target in (torch.relu, F.relu, torch.relu_, F.relu_) and not args and not kwargs:
            return [nn.ReLU()]
        return None
    if node.op == "call_method":
        args, kwargs = node.args[1:], dict(node.kwargs)
        if node.target == "mean":
            return _global_mean(node)
        if node.target == "flatten":
            return _flatten(args, kwargs)
        if node.target in ("relu", "relu_") and not args and not kwargs:
            return [nn.ReLU()]
    return None


def _flatten(args: tuple, kwargs: dict) -> list[nn.Module] | None:
    """``torch.flatten(x, ...)`` / ``x.flatten(...)`` with the arguments after ``x`` as a Flatten
    (None: an argument it has no counterpart for)."""
    start = kwargs.pop("start_dim", args[0] if len(args) > 0 else 0)
    end = kwargs.pop("end_dim", args[1] if len(args) > 1 else -1)
    return [nn.Flatten(int(start), int(end))] if not kwargs else None


def _is_batch_size(node: fx.Node) -> bool:
    """``x.size(0)``, ``x.shape[0]`` or ``x.size()[0]``: the batch size, which every step of a chain keeps."""
    if node.op == "call_method" and node.target == "size":
        return (node.args[1:], node.kwargs) in (((0,), {}), ((), {"dim": 0}))
    if node.op != "call_function" or node.target is not operator.getitem or node.args[1:] != (0,):
        return False
    shape = node.args[0]
    return isinstance(shape, fx.Node) and (
        (shape.op == "call_function" and shape.target is getattr and shape.args[1:] == ("shape",))
        or (shape.op == "call_method" and shape.target == "size" and len(shape.args) == 1 and not shape.kwargs))


def _is_flatten_view(node: fx.Node) -> bool:
    """``x.view(x.size(0), -1)``, ``x.reshape(x.shape[0], -1)``, ``torch.reshape(x, (n, -1))`` with
    ``n`` the batch size: a ``Flatten(1, -1)`` written by hand."""
    if node.kwargs or not ((node.op == "call_method" and node.target in ("view", "reshape"))
                           or (node.op == "call_function" and node.target is torch.reshape)):
        return False
    shape = node.args[1:]
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return len(shape) == 2 and isinstance(shape[0], fx.Node) and _is_batch_size(shape[0]) and shape[1] == -1


def _batch_size_reads(nodes: Sequence[fx.Node]) -> set[fx.Node]:
    """The nodes that read an activation's batch size only for flattening views (``x.size(0)`` and
    the ``x.shape`` it comes from): not steps of the chain, nor other uses of the activation."""
    reads = {node for node in nodes if _is_batch_size(node) and all(_is_flatten_view(u) for u in node.users)}
    shapes = {node.args[0] for node in reads if node.op == "call_function"}
    return reads | {shape for shape in shapes if set(shape.users) <= reads}


def trace_chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model as a list of ``(name, module)`` in execution order (modules are the model's own).

    Raises :class:`UnsupportedModelError` naming the module (or function) that is not part of
    a supported chain.
    """
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"expected an nn.Module, got {type(model).__name__}")
    try:
        graph = _trace_graph(model)
    except Exception as exc:  # fx raises many kinds of errors on untraceable code
        raise UnsupportedModelError(
            f"{type(model).__name__} cannot be traced with torch.fx as a chain of layers: {exc}") from None
    modules = dict(model.named_modules())
    nodes = list(graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedModelError(f"{type(model).__name__}.forward must take exactly one input, "
                                    f"it takes {len(placeholders)}")
    chain: list[tuple[str, nn.Module]] = []
    called: set[int] = set()
    current = placeholders[0]
    batch_reads = _batch_size_reads(nodes)
    dropout_training = _dropout_training(model, nodes)
    for node in nodes:
        if node.op == "placeholder" or node in batch_reads:
            continue
        if node.op == "output":
            if node.args[0] is not current:
                raise UnsupportedModelError(f"{type(model).__name__} does not return the output of its last layer")
            break
        if node.op == "get_attr":
            raise UnsupportedModelError(f"{_where(node)} reads the tensor attribute '{node.target}' inside "
                                        "forward; only chains of modules are supported")
        _check_single_chain_step(node, current, batch_reads)
        if node.op == "call_module":
            module = modules[node.target]
            if type(module) not in SUPPORTED_TYPES or (node.args[1:] or node.kwargs):
                raise UnsupportedModelError(
                    f"unsupported module '{node.target}' ({type(module).__name__}); compression supports "
                    f"chains of {_supported_names()}")
            _check_called_once(node, module, called, modules, nodes)
            chain.append((str(node.target), module))
        else:
            chain += _function_steps(node, dropout_training)
        current = node
    _check_no_shared_tensors(chain)
    _check_no_hooks(model, chain)
    return chain


def _check_single_chain_step(node: fx.Node, current: fx.Node, batch_reads: set[fx.Node]) -> None:
    """``node`` reads only ``current`` (besides batch-size reads), and nothing else reads ``current``."""
    if not node.args or node.args[0] is not current or any(
            isinstance(a, fx.Node) and a not in batch_reads for a in list(node.args[1:]) + list(node.kwargs.values())):
        raise UnsupportedModelError(f"{_where(node)}: '{node.name}' is not a step of a single chain "
                                    "(branches, skip connections and several inputs are not supported)")
    users = [user for user in current.users if user not in batch_reads]
    if len(users) != 1:
        names = ", ".join(repr(user.name) for user in users)
        places = ", ".join(sorted({_where(user) for user in users}))
        raise UnsupportedModelError(f"the output of '{current.name}' is used {len(users)} times "
                                    f"(by {names}, in {places}); only sequential chains are supported")


def _function_steps(node: fx.Node, dropout_training: dict[str, dict[bool, object]]) -> list[tuple[str, nn.Module]]:
    """The chain steps of a function or method call, named after its node; refused in one line naming it."""
    what = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", node.target)
    try:
        modules = _modules_from_function(node, dropout_training)
    except _Unreadable as exc:
        raise UnsupportedModelError(f"'{what}' in {_where(node)} cannot be read as a module: {exc}") from None
    if modules is None:
        raise UnsupportedModelError(
            f"unsupported operation '{what}' in {_where(node)}; compression supports chains of "
            f"{_supported_names()} (and, written in forward, torch.flatten, x.view(x.size(0), -1), relu, "
            "max_pool2d, avg_pool2d, adaptive_avg_pool2d, dropout and a mean over dims (2, 3))")
    kind = node.op.replace("call_", "")
    return [(f"{node.name} ({kind})" if i == 0 else f"{node.name} ({kind}, {type(m).__name__})", m)
            for i, m in enumerate(modules)]


def _check_no_hooks(model: nn.Module, chain: list[tuple[str, nn.Module]]) -> None:
    """Refuse forward (pre-)hooks on the model or a module of the chain: tracing does not see them
    (fx keeps a layer as one call and traces the model's forward, not its __call__), and the
    slimmed network is built from fresh modules without them, so what they change is lost."""
    for name, module in [("", model)] + chain:
        if module._forward_hooks or module._forward_pre_hooks:
            what = f"module '{name}' ({type(module).__name__})" if name else f"the model ({type(module).__name__})"
            raise UnsupportedModelError(
                f"{what} has forward hooks, which the compressed network would not have (torch.nn.utils."
                "weight_norm's, say, which computes the weight in one); remove them before compressing")


def _check_no_shared_tensors(chain: list[tuple[str, nn.Module]]) -> None:
    """Refuse two modules of the chain holding one parameter or buffer (``fc2.weight = fc1.weight``):
    switches, pruning and slimming work on a copy of each module and would untie them."""
    owners: dict[int, tuple[str, str]] = {}
    for name, module in chain:
        tensors = list(module.named_parameters(remove_duplicate=False)) + list(module.named_buffers())
        for tensor_name, tensor in tensors:
            first_module, first_tensor = owners.setdefault(id(tensor), (name, tensor_name))
            if first_module != name:
                raise UnsupportedModelError(
                    f"modules '{first_module}' and '{name}' share one tensor ('{first_module}.{first_tensor}' is "
                    f"'{name}.{tensor_name}'); compression needs every layer to have weights of its own "
                    "(no tied weights)")


def _check_called_once(node: fx.Node, module: nn.Module, called: set[int], modules: dict[str, nn.Module],
                       nodes: list[fx.Node]) -> None:
    """Refuse a second call of a module with weights or statistics: the chain would hold it twice,
    and switches, pruning and slimming would untie its weights (a reused ReLU is fine)."""
    stateful = any(True for _ in module.parameters()) or any(True for _ in module.buffers())
    if stateful and id(module) in called:
        calls = sum(1 for n in nodes if n.op == "call_module" and modules[n.target] is module)
        raise UnsupportedModelError(f"module '{node.target}' ({type(module).__name__}) is called {calls} times; "
                                    "compression needs every layer with weights to be called once (no tied weights)")
    called.add(id(module))


# ------------------------------------------------------------------------------- analysis
@dataclass(frozen=True)
class LayerInfo:
    """One conv/linear layer of a chain and what surrounds it.

    Attributes:
        step: index of the layer in the chain.
        bn: index of its BatchNorm, or None.
        end: index of the next layer (or the chain's length): ``step+1 .. end-1`` are its
            per-channel operations.
        switch_after: chain index after which the layer's unit (parent) switch acts: its
            BatchNorm if any, else the layer itself.
        units: output channels / neurons.
        in_groups: input groups of the layer: input channels of a conv; for a linear layer fed
            (through Flatten) by a conv, the conv's channels; else the input features.
        group_size: input features per group (H*W of the producing feature map, else 1).
        out_shape: shape of the layer's output for one sample.
    """

    step: int
    bn: int | None
    end: int
    switch_after: int
    units: int
    in_groups: int
    group_size: int
    out_shape: tuple[int, ...]


@dataclass(frozen=True)
class ChainInfo:
    """The layer structure of a chain (see :func:`analyse_chain`)."""

    layers: tuple[LayerInfo, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    step_inputs: tuple[tuple[int, ...], ...]  # input shape of every step (one sample)

    @property
    def num_layers(self) -> int:
        return len(self.layers)


def _check_module(name: str, module: nn.Module, x: torch.Tensor) -> None:
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise UnsupportedModelError(f"module '{name}' (Conv2d) has groups={module.groups}; only groups=1 "
                                        "convolutions are supported")
        if x.dim() != 4:
            raise UnsupportedModelError(f"module '{name}' (Conv2d) gets a {x.dim()}-d input; a convolution "
                                        "cannot follow a flattened layer")
    elif isinstance(module, nn.Linear):
        if x.dim() != 2:
            raise UnsupportedModelError(f"module '{name}' (Linear) gets a {x.dim()}-d input; flatten the "
                                        "feature map first")
    elif isinstance(module, BN_TYPES) and _normalises_one_value_per_channel(module, x):
        raise UnsupportedModelError(
            f"module '{name}' ({type(module).__name__}) has track_running_stats=False, so it normalises with the "
            f"statistics of the batch it gets, in eval mode too, and it gets one value per channel of an image "
            f"(input shape {tuple(x.shape[1:])}): a single image, which compression runs to analyse and prune the "
            "network, cannot be normalised; use track_running_stats=True")
    elif isinstance(module, nn.MaxPool2d) and module.return_indices:
        raise UnsupportedModelError(f"module '{name}' (MaxPool2d) has return_indices=True; its output is a "
                                    "pair, not the next layer's input")
    elif isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim not in (-1, x.dim() - 1):
            raise UnsupportedModelError(f"module '{name}' (Flatten) must flatten dims 1..-1, "
                                        f"not {module.start_dim}..{module.end_dim}")


def _normalises_one_value_per_channel(bn: nn.Module, x: torch.Tensor) -> bool:
    """Whether a BatchNorm without running statistics (batch statistics in eval mode too) gets one value
    per channel of a sample: it then cannot normalise the single-image batches of the analysis."""
    without_statistics = bn.running_mean is None and bn.running_var is None
    return without_statistics and x.dim() >= 2 and x[0, 0].numel() == 1


def analyse_chain(chain: Sequence[tuple[str, nn.Module]] | Sequence[nn.Module],
                  input_shape: Sequence[int]) -> ChainInfo:
    """Layer structure of a chain for inputs of ``input_shape`` (one sample, e.g. (1, 28, 28)).

    Raises :class:`UnsupportedModelError` for chains that compression cannot handle: no layer,
    a BatchNorm not directly serving one layer (before the first layer, or two in one layer),
    a grouped convolution, a convolution after a flattened layer, a linear layer on a feature map,
    a BatchNorm without running statistics that gets one value per channel of a sample, weights
    off the CPU (a model on CUDA).
    """
    named = [(item if isinstance(item, tuple) else (f"[{i}]", item)) for i, item in enumerate(chain)]
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise UserError(f"input_shape must be positive sizes without the batch dimension, got {tuple(input_shape)}")
    _refuse_off_cpu(named)
    step_inputs, outputs = _trace_shapes(named, shape)
    layer_steps = [i for i, (_, m) in enumerate(named) if isinstance(m, LAYER_TYPES)]
    if not layer_steps:
        raise UnsupportedModelError("the model has no Conv2d or Linear layer to compress")
    _check_first_layer_order(named, layer_steps[0])
    layers = []
    for n, step in enumerate(layer_steps):
        end = layer_steps[n + 1] if n + 1 < len(layer_steps) else len(named)
        layers.append(_layer_info(named, step, end, outputs[step], layers[-1] if layers else None))
    return ChainInfo(layers=tuple(layers), input_shape=shape, output_shape=outputs[-1],
                     step_inputs=tuple(step_inputs))


def _device_of(tensor: torch.Tensor) -> torch.device:
    return tensor.device


def _refuse_off_cpu(named) -> None:
    """Compression analyses, trains and prunes on the CPU: a module whose weights are elsewhere
    (a model on CUDA) would otherwise fail the shape trace, in a message about its input shape."""
    for name, module in named:
        for tensor in (*module.parameters(), *module.buffers()):
            device = _device_of(tensor)
            if device.type != "cpu":
                raise UnsupportedModelError(f"module '{name}' ({type(module).__name__}) has its weights on {device}; "
                                            "compression runs on the CPU: pass model.cpu()")


def _trace_shapes(named, shape: tuple[int, ...]) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """Each step's input and output shape (without the batch dimension) for one zero sample.

    The modules run in eval mode, so BatchNorm uses its running statistics and Dropout is off;
    their training flags are restored afterwards.
    """
    x = torch.zeros((1,) + shape, dtype=_dtype_of(named))
    step_inputs, outputs = [], []
    modes = [m.training for _, m in named]
    try:
        for _, m in named:
            m.eval()
        with torch.no_grad():
            for name, module in named:
                _check_module(name, module, x)
                step_inputs.append(tuple(x.shape[1:]))
                try:
                    x = module(x)
                except (RuntimeError, ValueError) as exc:  # ValueError: a BatchNorm of the wrong dimension
                    raise UnsupportedModelError(f"module '{name}' ({type(module).__name__}) fails on the input "
                                                f"shape {step_inputs[-1]}: {exc}") from None
                outputs.append(tuple(x.shape[1:]))
    finally:
        for (_, m), mode in zip(named, modes):
            m.train(mode)
    return step_inputs, outputs


def _check_first_layer_order(named, first: int) -> None:
    """No BatchNorm before the first layer, and no InputSelect after it."""
    for name, m in named[:first]:
        if isinstance(m, BN_TYPES):
            raise UnsupportedModelError(f"module '{name}' ({type(m).__name__}) comes before the first layer; "
                                        "a BatchNorm must follow the conv/linear layer it normalises")
    for name, m in named[first:]:
        if isinstance(m, InputSelect):  # between layers it would renumber the units the next layer reads
            raise UnsupportedModelError(f"module '{name}' (InputSelect) comes after the first layer; it selects "
                                        "the network's inputs, before the first layer")


def _layer_info(named, step: int, end: int, out_shape: tuple[int, ...],
                producer: LayerInfo | None) -> LayerInfo:
    """The layer at ``step`` with the steps up to ``end`` that follow it, read by the next layer.

    ``producer`` is the layer before it (None for the first): a linear layer after it reads
    groups of its inputs, one group per unit of the producer (a flattened channel's pixels).
    """
    bns = [i for i in range(step + 1, end) if isinstance(named[i][1], BN_TYPES)]
    if len(bns) > 1:
        raise UnsupportedModelError(f"modules {', '.join(repr(named[i][0]) for i in bns)} are two BatchNorms "
                                    f"after layer '{named[step][0]}'; at most one is supported")
    bn = bns[0] if bns else None
    module = named[step][1]
    units = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
    if bn is not None and named[bn][1].num_features != units:
        raise UnsupportedModelError(f"module '{named[bn][0]}' normalises {named[bn][1].num_features} features "
                                    f"but layer '{named[step][0]}' has {units}")
    if isinstance(module, nn.Conv2d):
        in_groups, group_size = module.in_channels, 1
    elif producer is None:
        in_groups, group_size = module.in_features, 1
    else:
        in_groups = producer.units
        if module.in_features % in_groups:
            raise UnsupportedModelError(f"layer '{named[step][0]}' has {module.in_features} inputs, not a "
                                        f"multiple of the {in_groups} units of the layer before it")
        group_size = module.in_features // in_groups
    return LayerInfo(step=step, bn=bn, end=end, switch_after=bn if bn is not None else step,
                     units=units, in_groups=in_groups, group_size=group_size, out_shape=out_shape)


def _dtype_of(named) -> torch.dtype:
    for _, m in named:
        for p in m.parameters():
            return p.dtype
    return torch.float32
