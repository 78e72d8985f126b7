"""Layer-wise diagonal Gauss-Newton curvature of the cross-entropy loss w.r.t. switches.

BayesNAS needs, for every switch ``s``, the diagonal entry of the Gauss-Newton matrix
``J^T H_out J`` of the softmax-cross-entropy loss, where ``J`` is the Jacobian of the logits
w.r.t. the switches and ``H_out = diag(p) - p p^T`` the Hessian of the loss w.r.t. the logits.
Forming ``J`` is far too expensive, so the curvature is propagated *layer by layer* in one
backward-like pass (as in Becker & LeCun's diagonal Hessian back-propagation and the
BayesNAS paper): every activation ``a`` gets a diagonal curvature ``G_a`` (same shape as
``a``, per sample), and a layer ``y = f(x)`` with Jacobian ``J_f`` maps

    G_x = diag(J_f^T diag(G_y) J_f) = (J_f o J_f)^T G_y

i.e. the layer's backward map applied with *squared* Jacobian entries (off-diagonal
curvature is dropped). The pass starts from the logits using ``H_out`` *exactly*: when the
logits come from a linear layer ``z = W h + b`` the input curvature is the exact
``diag(W^T H_out W) = p W^2 - (p W)^2``; otherwise ``diag(H_out) = p - p^2``. A switch
multiplication ``y = s * x`` contributes ``H_s += sum over y of x^2 G_y`` (that is
``(y/s)^2 G_y``) and passes ``G_x = s^2 G_y`` on. With one linear layer this is exact.

How the pass sees the network: :func:`gauss_newton_diagonal` runs one forward pass (no
autograd graph) while recording it on a *tape*: calls of modules with a registered rule are
recorded as one step each (Linear, Conv2d, BatchNorm as an affine map at its batch
statistics, ReLU, pooling, ...), tensor functions applied to activations outside such
modules are recorded through a :class:`~torch.overrides.TorchFunctionMode` (sums and
residuals, concatenation, slicing, reshaping, scaling by constants), and switch
multiplications are recorded by :func:`switch_mul`, which the supernet uses to apply its
switches. Any other operation on an activation raises :class:`UnsupportedOperation` naming
the function and the module type it was called in; more module types and functions can be
registered with :func:`register_module_rule` / :func:`register_function_rule`.

Module rules have the signature ``rule(module, x, y, g) -> g_x`` (one input);
function rules ``rule(ctx, args, kwargs, out, g) -> [(input_tensor, g_input), ...]`` where
``ctx.is_tracked(t)`` tells whether an argument is an activation.

Limitations: products of two activations are unsupported (no such op in the NB201 or DARTS
spaces); in-place operations on activations are supported (the overwritten value is kept).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_unflatten


class UnsupportedOperation(TypeError):
    """The curvature pass met an operation on an activation for which it has no rule."""


# --------------------------------------------------------------------------------------
# Switch multiplication (the one place where switches enter a network)
# --------------------------------------------------------------------------------------
_ACTIVE: "_Tape | None" = None


def switch_mul(x: torch.Tensor, switches: torch.Tensor, index: Any = None, dim: int | None = None) -> torch.Tensor:
    """``x`` scaled by a switch: ``x * switches[index]``.

    Args:
        x: the activation to scale (e.g. an op's output).
        switches: the switch parameter (any shape).
        index: selects the switch entry (``None``: the whole tensor). The selection must be a
            scalar when ``dim`` is None, else a vector of length ``x.shape[dim]``.
        dim: for a vector of switches (one per channel, say), the dimension of ``x`` it
            scales.

    While :func:`gauss_newton_diagonal` records a forward pass, the call is recorded as a
    switch step, so the switch's curvature is accumulated in the backward-like pass.
    """
    w = switches if index is None else switches[index]
    if dim is not None:
        shape = [1] * x.dim()
        shape[dim] = -1
        w_b = w.reshape(shape)
    else:
        w_b = w
    tape = _ACTIVE
    if tape is None or tape.suppress or tape.value_of(x) is None:
        return x * w_b
    with tape.suppressed():
        y = x * w_b
    tape.record_switch(x, y, switches, index, dim, w_b.detach())
    return y


# --------------------------------------------------------------------------------------
# Rule tables
# --------------------------------------------------------------------------------------
ModuleRule = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
FunctionRule = Callable[..., list]

_MODULE_RULES: dict[type, ModuleRule] = {}
_FUNCTION_RULES: dict[Any, FunctionRule] = {}
#: Functions whose tensor output does not depend on the activation's value (no curvature).
_CONSTANT_FUNCTIONS: set = set()


def register_module_rule(module_type: type, rule: ModuleRule) -> None:
    """Register (or replace) the curvature rule of a module type.

    ``rule(module, x, y, g)`` returns the curvature of the module's (single) input ``x``
    given the curvature ``g`` of its output ``y``. Subclasses inherit their parent's rule
    unless they register their own.
    """
    _MODULE_RULES[module_type] = rule


def register_function_rule(func: Any, rule: FunctionRule) -> None:
    """Register (or replace) the rule of a tensor function as seen by ``__torch_function__``.

    ``rule(ctx, args, kwargs, out, g)`` returns ``[(argument_tensor, curvature), ...]`` for
    the activation arguments.
    """
    _FUNCTION_RULES[func] = rule


def module_rule_for(module: nn.Module) -> ModuleRule | None:
    for cls in type(module).__mro__:
        rule = _MODULE_RULES.get(cls)
        if rule is not None:
            return rule
    return None


def _unbroadcast(g: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Sum ``g`` over the dimensions along which a tensor of ``shape`` was broadcast."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    extra = g.dim() - len(shape)
    if extra > 0:
        g = g.sum(dim=tuple(range(extra)))
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if dims:
        g = g.sum(dim=dims, keepdim=True)
    return g.reshape(shape)


def _vjp(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``J_fn^T g`` at ``x`` for a linear ``fn`` (used with squared weights)."""
    with torch.enable_grad():
        xi = x.detach().requires_grad_(True)
        (gx,) = torch.autograd.grad(fn(xi), xi, g)
    return gx


# ---- linear maps with weights ---------------------------------------------------------
def _linear_input(x, weight, g):
    return g @ (weight * weight)


def _conv_input(x, weight, g, stride, padding, dilation, groups, conv_fn=None):
    """``(J o J)^T g`` of a convolution: the transposed convolution with squared weights."""
    w2 = weight * weight
    if conv_fn is not None:  # non-zero padding modes: differentiate the module's own forward
        return _vjp(lambda t: conv_fn(t, w2), x, g)
    if isinstance(padding, str):
        return _vjp(lambda t: F.conv2d(t, w2, None, stride, padding, dilation, groups), x, g)
    return torch.nn.grad.conv2d_input(x.shape, w2, g, stride, padding, dilation, groups)


def _conv_module_rule(m: nn.Conv2d, x, y, g):
    if m.padding_mode != "zeros":
        squares = _conv_input(x, m.weight, g, m.stride, m.padding, m.dilation, m.groups,
                              conv_fn=lambda t, w2: m._conv_forward(t, w2, None))
        return squares + _shared_tap_terms(m, x, g)
    return _conv_input(x, m.weight, g, m.stride, m.padding, m.dilation, m.groups)


def _shared_tap_terms(m: nn.Conv2d, x, g):
    """The cross terms of ``(J o J)^T g`` that copying padding (reflect, replicate, circular) adds.

    Such padding can feed one input element to two taps a, b of one window, whose Jacobian entry
    is then ``w_a + w_b``: its square holds ``2 w_a w_b`` besides the squared weights.
    """
    n, c_in, h, w = x.shape
    source = torch.arange(h * w, dtype=torch.float64, device=x.device).reshape(1, 1, h, w)
    source = F.pad(source, m._reversed_padding_repeated_twice, mode=m.padding_mode)
    taps = F.unfold(source, m.kernel_size, dilation=m.dilation, stride=m.stride)[0].long()  # (taps, windows)
    shared = taps[:, None, :] == taps[None, :, :]
    groups, c_out = m.groups, m.out_channels
    weight = m.weight.detach().to(g.dtype).reshape(groups, c_out // groups, c_in // groups, -1)
    gy = g.reshape(n, groups, c_out // groups, -1)
    out = torch.zeros(n, c_in, h * w, dtype=g.dtype, device=g.device)
    for a, b in torch.triu(shared.any(dim=-1), diagonal=1).nonzero().tolist():
        windows = shared[a, b].nonzero().squeeze(1)
        pair = weight[..., a] * weight[..., b]
        terms = torch.einsum("ngol,goi->ngil", gy[..., windows], pair).reshape(n, c_in, -1)
        out.index_add_(2, taps[a, windows], 2 * terms)
    return out.reshape(x.shape)


def _bn_scale(x, running_var, weight, use_batch_stats, eps):
    dims = [d for d in range(x.dim()) if d != 1]
    if use_batch_stats or running_var is None:
        var = x.var(dim=dims, unbiased=False)
    else:
        var = running_var
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shape = [1] * x.dim()
    shape[1] = -1
    return scale.reshape(shape)


def _bn_module_rule(m: nn.modules.batchnorm._BatchNorm, x, y, g):
    use_batch = m.training or not m.track_running_stats or m.running_var is None
    scale = _bn_scale(x, m.running_var, m.weight, use_batch, m.eps)
    return g * scale * scale


def _relu_rule(m, x, y, g):
    return g * (y > 0).to(g.dtype)


def _relu6_rule(m, x, y, g):
    return g * ((y > 0) & (y < 6)).to(g.dtype)


def _leaky_relu_rule(m: nn.LeakyReLU, x, y, g):
    slope = torch.where(x > 0, torch.ones_like(x), torch.full_like(x, m.negative_slope))
    return g * slope * slope


def _identity_rule(m, x, y, g):
    return g.reshape(x.shape)


def _dropout_rule(m, x, y, g):
    if not m.training or m.p == 0:
        return g
    factor = torch.where(x != 0, y / torch.where(x != 0, x, torch.ones_like(x)), torch.zeros_like(x))
    return g * factor * factor


def _avg_pool_divisor(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    ones = torch.ones_like(x[:1, :1])
    if divisor_override:
        return float(divisor_override)
    valid = F.avg_pool2d(ones, kernel_size, stride, padding, ceil_mode, True, 1)
    if not count_include_pad:
        return valid
    fraction = F.avg_pool2d(ones, kernel_size, stride, padding, ceil_mode, True, None)
    return valid / fraction


def _avg_pool_input(x, g, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                    divisor_override=None):
    stride = kernel_size if stride in (None, [], ()) else stride
    divisor = _avg_pool_divisor(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    pool = lambda t: F.avg_pool2d(t, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    return _vjp(pool, x, g / divisor)


def _avg_pool_module_rule(m: nn.AvgPool2d, x, y, g):
    return _avg_pool_input(x, g, m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad,
                           m.divisor_override)


def _adaptive_counts(size_in: int, size_out: int, device) -> torch.Tensor:
    starts = [math.floor(i * size_in / size_out) for i in range(size_out)]
    ends = [math.ceil((i + 1) * size_in / size_out) for i in range(size_out)]
    return torch.tensor([e - s for s, e in zip(starts, ends)], dtype=torch.float64, device=device)


def _adaptive_avg_pool_input(x, g, output_size):
    h, w = x.shape[-2:]
    oh, ow = g.shape[-2:]
    counts = _adaptive_counts(h, oh, x.device)[:, None] * _adaptive_counts(w, ow, x.device)[None, :]
    return _vjp(lambda t: F.adaptive_avg_pool2d(t, output_size), x, g / counts.to(g.dtype))


def _adaptive_avg_pool_module_rule(m: nn.AdaptiveAvgPool2d, x, y, g):
    return _adaptive_avg_pool_input(x, g, m.output_size)


def _max_pool_module_rule(m: nn.MaxPool2d, x, y, g):
    pool = lambda t: F.max_pool2d(t, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
    return _vjp(pool, x, g)


def _linear_module_rule(m: nn.Linear, x, y, g):
    return _linear_input(x, m.weight, g)


for _cls, _rule in (
    (nn.Linear, _linear_module_rule),
    (nn.Conv2d, _conv_module_rule),
    (nn.modules.batchnorm._BatchNorm, _bn_module_rule),
    (nn.ReLU, _relu_rule),
    (nn.ReLU6, _relu6_rule),
    (nn.LeakyReLU, _leaky_relu_rule),
    (nn.Identity, _identity_rule),
    (nn.Flatten, _identity_rule),
    (nn.Dropout, _dropout_rule),
    (nn.AvgPool2d, _avg_pool_module_rule),
    (nn.AdaptiveAvgPool2d, _adaptive_avg_pool_module_rule),
    (nn.MaxPool2d, _max_pool_module_rule),
):
    register_module_rule(_cls, _rule)


# ---- function rules -------------------------------------------------------------------
def _tensor_args(ctx, *values):
    return [v for v in values if isinstance(v, torch.Tensor) and ctx.is_tracked(v)]


def _add_rule(ctx, args, kwargs, out, g):
    a, b = args[0], args[1] if len(args) > 1 else kwargs.get("other")
    alpha = kwargs.get("alpha", args[2] if len(args) > 2 else 1)
    result = []
    if isinstance(a, torch.Tensor):
        result.append((a, _unbroadcast(g, a.shape)))
    if isinstance(b, torch.Tensor):
        result.append((b, _unbroadcast(g * (alpha * alpha), b.shape)))
    return result


def _mul_rule(ctx, args, kwargs, out, g):
    a, b = args[0], args[1] if len(args) > 1 else kwargs.get("other")
    tracked = _tensor_args(ctx, a, b)
    if len(tracked) == 2:
        raise UnsupportedOperation("the product of two activations has no curvature rule")
    x, c = (a, b) if tracked and tracked[0] is a else (b, a)
    c2 = c * c if isinstance(c, torch.Tensor) else float(c) ** 2
    return [(x, _unbroadcast(g * c2, x.shape))]


def _div_rule(ctx, args, kwargs, out, g):
    a, b = args[0], args[1] if len(args) > 1 else kwargs.get("other")
    if isinstance(b, torch.Tensor) and ctx.is_tracked(b):
        raise UnsupportedOperation("division by an activation has no curvature rule")
    b2 = b * b if isinstance(b, torch.Tensor) else float(b) ** 2
    return [(a, _unbroadcast(g / b2, a.shape))]


def _same_rule(ctx, args, kwargs, out, g):
    return [(args[0], g)]


def _reshape_rule(ctx, args, kwargs, out, g):
    return [(args[0], g.reshape(args[0].shape))]


def _expand_rule(ctx, args, kwargs, out, g):
    return [(args[0], _unbroadcast(g, args[0].shape))]


def _permute_rule(ctx, args, kwargs, out, g):
    if "dims" in kwargs:
        dims = kwargs["dims"]
    elif len(args) == 2 and isinstance(args[1], (list, tuple)):
        dims = args[1]
    else:
        dims = args[1:]
    inverse = [0] * len(dims)
    for i, d in enumerate(dims):
        inverse[d % len(dims)] = i
    return [(args[0], g.permute(*inverse))]


def _transpose_rule(ctx, args, kwargs, out, g):
    d0, d1 = args[1], args[2]
    return [(args[0], g.transpose(d0, d1))]


def _getitem_rule(ctx, args, kwargs, out, g):
    x, index = args[0], args[1]
    # J has 0/1 entries, so (J o J)^T g = J^T g; autograd's backward sums an element read
    # several times (repeated advanced indices), which ``gx[index] += g`` would not.
    return [(x, _vjp(lambda t: t[index], x.to(g.dtype), g))]


def _cat_rule(ctx, args, kwargs, out, g):
    tensors = args[0]
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
    sizes = [t.shape[dim] for t in tensors]
    return list(zip(tensors, torch.split(g, sizes, dim=dim)))


def _reduce_dims(x, args, kwargs):
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    keepdim = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
    if dim is None:
        dims = tuple(range(x.dim()))
    else:
        dims = tuple(d % x.dim() for d in ((dim,) if isinstance(dim, int) else dim))
    return dims, keepdim


def _expand_reduced(g, x, dims, keepdim):
    if not keepdim:
        for d in sorted(dims):
            g = g.unsqueeze(d)
    return g.expand(x.shape)


def _sum_rule(ctx, args, kwargs, out, g):
    x = args[0]
    dims, keepdim = _reduce_dims(x, args, kwargs)
    return [(x, _expand_reduced(g, x, dims, keepdim))]


def _mean_rule(ctx, args, kwargs, out, g):
    x = args[0]
    dims, keepdim = _reduce_dims(x, args, kwargs)
    n = math.prod(x.shape[d] for d in dims)
    return [(x, _expand_reduced(g, x, dims, keepdim) / (n * n))]


def _relu_function_rule(ctx, args, kwargs, out, g):
    return [(args[0], g * (out > 0).to(g.dtype))]


def _pad_rule(ctx, args, kwargs, out, g):
    x = args[0]
    pad = kwargs.get("pad", args[1] if len(args) > 1 else None)
    mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
    if mode != "constant":
        raise UnsupportedOperation(f"F.pad with mode {mode!r} has no curvature rule")
    return [(x, _vjp(lambda t: F.pad(t, pad), x, g))]  # 0/1 weights: squaring changes nothing


def _linear_function_rule(ctx, args, kwargs, out, g):
    x, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
    return [(x, _linear_input(x, weight, g))]


def _conv2d_function_rule(ctx, args, kwargs, out, g):
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    defaults = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    bound = {**defaults, **dict(zip(names, args)), **kwargs}
    return [(bound["input"], _conv_input(bound["input"], bound["weight"], g, bound["stride"], bound["padding"],
                                         bound["dilation"], bound["groups"]))]


def _batch_norm_function_rule(ctx, args, kwargs, out, g):
    names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
    defaults = {"weight": None, "bias": None, "training": False, "momentum": 0.1, "eps": 1e-5}
    bound = {**defaults, **dict(zip(names, args)), **kwargs}
    x = bound["input"]
    scale = _bn_scale(x, bound["running_var"], bound["weight"], bound["training"], bound["eps"])
    return [(x, g * scale * scale)]


def _avg_pool_function_rule(ctx, args, kwargs, out, g):
    names = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
    bound = {**dict(zip(names, args)), **kwargs}
    x = bound.pop("input")
    return [(x, _avg_pool_input(x, g, **bound))]


def _adaptive_avg_pool_function_rule(ctx, args, kwargs, out, g):
    x = args[0]
    output_size = kwargs.get("output_size", args[1] if len(args) > 1 else None)
    return [(x, _adaptive_avg_pool_input(x, g, output_size))]


def _max_pool_function_rule(ctx, args, kwargs, out, g):
    x = args[0]
    kw = dict(kwargs)
    kw.pop("return_indices", None)
    pool = lambda t: F.max_pool2d(t, *args[1:], **kw)
    return [(x, _vjp(pool, x, g))]


_T = torch.Tensor
for _funcs, _rule in (
    ((_T.add, _T.add_, _T.__add__, _T.__radd__, _T.__iadd__, torch.add,
      _T.sub, _T.sub_, _T.__sub__, _T.__rsub__, _T.__isub__, torch.sub), _add_rule),
    ((_T.mul, _T.mul_, _T.__mul__, _T.__rmul__, _T.__imul__, torch.mul), _mul_rule),
    ((_T.div, _T.div_, _T.__truediv__, _T.__itruediv__, torch.div), _div_rule),
    ((_T.neg, _T.__neg__, torch.neg, _T.contiguous, _T.clone, torch.clone, _T.to, _T.float, _T.double,
      _T.type_as), _same_rule),
    ((_T.view, _T.reshape, torch.reshape, _T.flatten, torch.flatten, _T.squeeze, torch.squeeze,
      _T.unsqueeze, torch.unsqueeze, _T.view_as, _T.reshape_as), _reshape_rule),
    ((_T.expand, _T.expand_as), _expand_rule),
    ((_T.permute, torch.permute), _permute_rule),
    ((_T.transpose, torch.transpose), _transpose_rule),
    ((_T.__getitem__,), _getitem_rule),
    ((torch.cat, torch.concat), _cat_rule),
    ((_T.sum, torch.sum), _sum_rule),
    ((_T.mean, torch.mean), _mean_rule),
    ((F.relu, torch.relu, _T.relu, _T.relu_, torch.relu_), _relu_function_rule),
    ((F.pad,), _pad_rule),
    ((F.linear, torch._C._nn.linear), _linear_function_rule),
    ((F.conv2d, torch.conv2d), _conv2d_function_rule),
    ((F.batch_norm, torch.batch_norm), _batch_norm_function_rule),
    ((F.avg_pool2d, torch._C._nn.avg_pool2d), _avg_pool_function_rule),
    ((F.adaptive_avg_pool2d, torch._C._nn.adaptive_avg_pool2d), _adaptive_avg_pool_function_rule),
    ((F.max_pool2d, torch.max_pool2d), _max_pool_function_rule),
):
    for _f in _funcs:
        register_function_rule(_f, _rule)

_CONSTANT_FUNCTIONS.update({
    _T.detach, torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like, torch.rand_like,
    torch.randn_like, _T.new_zeros, _T.new_ones, _T.new_empty, _T.new_full, _T.new_tensor,
})


# --------------------------------------------------------------------------------------
# The tape
# --------------------------------------------------------------------------------------
@dataclass
class _Value:
    index: int


@dataclass
class _Record:
    kind: str  # "module" | "function" | "switch"
    output: int
    module: nn.Module | None = None
    module_input: int | None = None
    func: Any = None
    leaves: list = field(default_factory=list)  # function args/kwargs leaves, activations as _Value
    spec: Any = None
    switches: torch.Tensor | None = None
    index: Any = None
    dim: int | None = None
    weight: torch.Tensor | None = None


class _Tape(TorchFunctionMode):
    """Records one forward pass; see the module docstring."""

    def __init__(self, module_names: dict[int, str]):
        super().__init__()
        self.tensors: list[torch.Tensor] = []
        self._ids: dict[int, int] = {}
        self.records: list[_Record] = []
        self.producer: dict[int, int] = {}  # value index -> record index
        self.suppress = 0
        self.stack: list[tuple[str, nn.Module, int | None]] = []
        self.module_names = module_names
        self.bn_saved: dict[int, tuple] = {}  # BatchNorm momentum and counter to restore after the pass

    # ---- values ----
    def track(self, t: torch.Tensor) -> int:
        self.tensors.append(t)
        self._ids[id(t)] = len(self.tensors) - 1
        return len(self.tensors) - 1

    def value_of(self, t) -> int | None:
        if not isinstance(t, torch.Tensor):
            return None
        v = self._ids.get(id(t))
        return v if v is not None and self.tensors[v] is t else None

    def _new_output(self, out: torch.Tensor, record: _Record) -> None:
        v = self.track(out)
        record.output = v
        self.producer[v] = len(self.records)
        self.records.append(record)

    @contextlib.contextmanager
    def suppressed(self):
        self.suppress += 1
        try:
            yield
        finally:
            self.suppress -= 1

    def where(self) -> str:
        for _, module, _ in reversed(self.stack):
            if module is not None:
                name = self.module_names.get(id(module), "?")
                return f"module type {type(module).__name__} ({name or 'the model itself'})"
        return "the model's own code"

    # ---- switch records ----
    def record_switch(self, x, y, switches, index, dim, weight) -> None:
        self._new_output(y, _Record("switch", -1, switches=switches, index=index, dim=dim, weight=weight,
                                    module_input=self.value_of(x)))

    # ---- module hooks ----
    def pre_hook(self, module, args):
        if (isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training and module.track_running_stats
                and id(module) not in self.bn_saved):
            # momentum 0 leaves the running statistics as they are; the counter is put back later
            tracked = module.num_batches_tracked
            self.bn_saved[id(module)] = (module, module.momentum, None if tracked is None else int(tracked))
            module.momentum = 0.0
        if self.suppress:
            self.stack.append(("inner", None, None))
            return
        rule = module_rule_for(module)
        if rule is None:
            self.stack.append(("container", module, None))
            return
        x = args[0] if args else None
        v = self.value_of(x)
        if v is not None and getattr(module, "inplace", False):  # keep the value it overwrites
            saved = x.clone()
            self.tensors[v] = saved
            self._ids[id(saved)] = v
        self.stack.append(("leaf", module, v))
        self.suppress += 1  # the module's own tensor calls are not recorded

    def post_hook(self, module, args, output):
        kind, _, v = self.stack.pop()
        if kind != "leaf":
            return None
        self.suppress -= 1
        if v is None:
            return None  # the module did not see an activation: its output is a constant
        if not isinstance(output, torch.Tensor):
            raise UnsupportedOperation(f"module type {type(module).__name__} returned {type(output).__name__}, "
                                       "not one tensor; the curvature pass cannot follow it")
        self._new_output(output, _Record("module", -1, module=module, module_input=v))
        return None

    # ---- tensor functions ----
    def _any_tracked(self, args, kwargs) -> bool:
        """Cheap shallow scan (arguments and lists in them) before the full pytree flatten."""
        for group in (args, kwargs.values()):
            for a in group:
                if isinstance(a, torch.Tensor):
                    if self.value_of(a) is not None:
                        return True
                elif isinstance(a, (list, tuple)):
                    if any(isinstance(t, torch.Tensor) and self.value_of(t) is not None for t in a):
                        return True
        return False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.suppress or not self._any_tracked(args, kwargs):
            return func(*args, **kwargs)
        leaves, spec = tree_flatten((args, kwargs))
        tracked = [self.value_of(leaf) for leaf in leaves]
        if not any(v is not None for v in tracked):
            return func(*args, **kwargs)
        inplace_target = None
        name = getattr(func, "__name__", "")
        if (name.endswith("_") and not name.endswith("__")) or name.startswith("__i"):
            inplace_target = tracked[0]
            if inplace_target is not None:  # keep the value before it is overwritten
                old = leaves[0]
                saved = old.clone()
                self.tensors[inplace_target] = saved
                self._ids[id(saved)] = inplace_target
                leaves = [saved if i == 0 else leaf for i, leaf in enumerate(leaves)]
        out = func(*args, **kwargs)
        if not isinstance(out, torch.Tensor):
            if isinstance(out, (tuple, list)) and any(isinstance(o, torch.Tensor) and o.is_floating_point() for o in out):
                raise UnsupportedOperation(f"{_func_name(func)} returns several tensors (in {self.where()}); "
                                           "the curvature pass has no rule for it")
            return out
        if not out.is_floating_point() or func in _CONSTANT_FUNCTIONS:
            return out
        if func not in _FUNCTION_RULES:
            raise UnsupportedOperation(
                f"no curvature rule for {_func_name(func)} applied to an activation in {self.where()}; "
                "register one with register_module_rule(<module type>, rule) or register_function_rule"
            )
        stored = [_Value(v) if v is not None else leaf for leaf, v in zip(leaves, tracked)]
        self._new_output(out, _Record("function", -1, func=func, leaves=stored, spec=spec))
        return out


def _func_name(func) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    module = getattr(func, "__module__", None)
    return f"{module}.{name}" if module and not name.startswith(module) else name


class _Ctx:
    def __init__(self, tracked_ids: set[int]):
        self._tracked = tracked_ids

    def is_tracked(self, t) -> bool:
        return isinstance(t, torch.Tensor) and id(t) in self._tracked


# --------------------------------------------------------------------------------------
# The backward-like pass
# --------------------------------------------------------------------------------------
@dataclass
class CurvatureResult:
    """Summed per-sample Gauss-Newton diagonals of the switches seen in one or more passes.

    Attributes:
        sums: ``{parameter: H}``; ``H`` is float64 with the parameter's shape, the sum over
            samples of the per-sample diagonal (entries of unused switches are 0).
        num_samples: number of samples summed.
    """

    sums: dict[nn.Parameter, torch.Tensor] = field(default_factory=dict)
    num_samples: int = 0

    def add(self, other: "CurvatureResult") -> None:
        for param, h in other.sums.items():
            if param in self.sums:
                self.sums[param] = self.sums[param] + h
            else:
                self.sums[param] = h.clone()
        self.num_samples += other.num_samples

    def mean(self) -> dict[nn.Parameter, torch.Tensor]:
        """Curvature of the mean loss per sample (the scale of a mean cross-entropy)."""
        n = max(self.num_samples, 1)
        return {param: h / n for param, h in self.sums.items()}

    def get(self, param: nn.Parameter, reduction: str = "mean") -> torch.Tensor:
        h = self.sums.get(param)
        if h is None:
            h = torch.zeros(param.shape, dtype=torch.float64, device=param.device)
        if reduction == "mean":
            return h / max(self.num_samples, 1)
        if reduction == "sum":
            return h
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")


def gauss_newton_diagonal(model: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor) -> CurvatureResult:
    """Diagonal Gauss-Newton curvature of the softmax-cross-entropy loss w.r.t. every switch.

    Args:
        model: maps ``inputs`` to logits of shape (N, classes); switches must be applied with
            :func:`switch_mul`. If it is an ``nn.Module`` its submodule names appear in errors.
            The model's train/eval mode is used as is (BatchNorm in train mode is treated as
            an affine map at the batch statistics); BatchNorm running statistics are left
            unchanged by the pass.
        inputs: a batch.

    Returns the sums over the batch (see :class:`CurvatureResult`). The loss's labels are not
    needed: the Gauss-Newton matrix of cross-entropy depends only on the predicted
    probabilities.
    """
    global _ACTIVE
    if _ACTIVE is not None:
        raise RuntimeError("gauss_newton_diagonal is not re-entrant")
    names = {id(m): n for n, m in model.named_modules()} if isinstance(model, nn.Module) else {}
    tape = _Tape(names)
    pre = nn.modules.module.register_module_forward_pre_hook(tape.pre_hook)
    post = nn.modules.module.register_module_forward_hook(tape.post_hook)
    try:
        _ACTIVE = tape
        with torch.no_grad(), tape:
            x = inputs.detach()
            tape.track(x)
            logits = model(x)
    finally:
        _ACTIVE = None
        pre.remove()
        post.remove()
        _restore_bn_buffers(tape.bn_saved.values())
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise UnsupportedOperation("the model must return logits of shape (batch, classes)")
    out_v = tape.value_of(logits)
    if out_v is None:
        raise UnsupportedOperation("the model's output does not depend on its input through recorded operations")
    with torch.no_grad():
        return _backward(tape, out_v, logits)


def _backward(tape: _Tape, out_v: int, logits: torch.Tensor) -> CurvatureResult:
    result = CurvatureResult(num_samples=int(logits.shape[0]))
    p = torch.softmax(logits.double(), dim=1).to(logits.dtype)
    curv: dict[int, torch.Tensor] = {}
    start = len(tape.records)
    head = tape.producer.get(out_v)
    if head is not None and _is_linear(tape.records[head]):
        rec = tape.records[head]
        weight, in_v = _linear_parts(tape, rec)
        pw = p @ weight
        curv[in_v] = p @ (weight * weight) - pw * pw  # exact diag(W^T (diag p - p p^T) W)
        start = head
    else:
        curv[out_v] = p - p * p
    for r in range(start - 1, -1, -1):
        rec = tape.records[r]
        g = curv.pop(rec.output, None)
        if g is None:
            continue
        for v, gv in _apply_rule(tape, rec, g, result):
            if v is None:
                continue
            curv[v] = curv[v] + gv if v in curv else gv
    return result


def _is_linear(rec: _Record) -> bool:
    if rec.kind == "module":
        return type(rec.module) is nn.Linear or module_rule_for(rec.module) is _linear_module_rule
    return rec.kind == "function" and _FUNCTION_RULES.get(rec.func) is _linear_function_rule


def _linear_parts(tape: _Tape, rec: _Record):
    if rec.kind == "module":
        return rec.module.weight.detach(), rec.module_input
    args, kwargs = tree_unflatten(rec.leaves, rec.spec)
    weight = args[1] if len(args) > 1 else kwargs["weight"]
    return weight.detach(), args[0].index


def _apply_rule(tape: _Tape, rec: _Record, g: torch.Tensor, result: CurvatureResult):
    if rec.kind == "module":
        x = tape.tensors[rec.module_input]
        y = tape.tensors[rec.output]
        rule = module_rule_for(rec.module)
        return [(rec.module_input, rule(rec.module, x, y, g))]
    if rec.kind == "switch":
        x = tape.tensors[rec.module_input]
        contrib = (x.double() ** 2) * g.double()
        if rec.dim is None:
            h = contrib.sum()
        else:
            dims = [d for d in range(contrib.dim()) if d != rec.dim % contrib.dim()]
            h = contrib.sum(dim=dims)
        acc = result.sums.get(rec.switches)
        if acc is None:
            acc = torch.zeros(rec.switches.shape, dtype=torch.float64, device=rec.switches.device)
            result.sums[rec.switches] = acc
        if rec.index is None:
            acc += h.reshape(acc.shape) if acc.dim() else h
        else:
            acc[rec.index] += h
        w2 = rec.weight * rec.weight
        return [(rec.module_input, _unbroadcast(g * w2, x.shape))]
    # function
    leaves = [tape.tensors[leaf.index] if isinstance(leaf, _Value) else leaf for leaf in rec.leaves]
    index_of = {id(tape.tensors[leaf.index]): leaf.index for leaf in rec.leaves if isinstance(leaf, _Value)}
    args, kwargs = tree_unflatten(leaves, rec.spec)
    out = tape.tensors[rec.output]
    pairs = _FUNCTION_RULES[rec.func](_Ctx(set(index_of)), args, kwargs, out, g)
    return [(index_of.get(id(t)), gt) for t, gt in pairs]


def _restore_bn_buffers(saved) -> None:
    with torch.no_grad():
        for m, momentum, tracked in saved:
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.fill_(tracked)


# --------------------------------------------------------------------------------------
# Over several batches
# --------------------------------------------------------------------------------------
def accumulate(model: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[torch.Tensor]) -> CurvatureResult:
    """Sum :func:`gauss_newton_diagonal` over batches of inputs."""
    total = CurvatureResult()
    for x in batches:
        total.add(gauss_newton_diagonal(model, x))
    return total
