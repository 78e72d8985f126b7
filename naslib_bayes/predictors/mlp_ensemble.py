"""An ensemble of small fully connected networks, BANANAS' predictor (White et al., AAAI 2021).

Each member is an MLP trained on the same data from its own random initialisation and its own
mini-batch order; the spread of the members' predictions is the ensemble's uncertainty. The
members are trained *together* as one batched network (weights of shape (members, in, out)
multiplied with ``torch.baddbmm``), which costs about as much as training a single member on
CPU, yet every member keeps its own parameters, gradients and Adam state.

Defaults follow the paper's meta neural network: 5 members of 10 layers of width 20, Adam with
learning rate 0.01, mean absolute error on standardised targets, 200 epochs, batches of 32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from naslib_bayes.threads import torch_threads


@dataclass
class MLPEnsembleConfig:
    num_members: int = 5
    num_layers: int = 10
    width: int = 20
    epochs: int = 200
    batch_size: int = 32
    lr: float = 0.01


class MLPEnsemble:
    """Batched ensemble of MLP regressors.

    Args:
        config: architecture and training settings.
        generator: the caller's seeded ``torch.Generator`` (initialisation and batch order).
    """

    def __init__(self, config: MLPEnsembleConfig | None = None, generator: torch.Generator | None = None):
        self.config = config or MLPEnsembleConfig()
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.flat: torch.Tensor | None = None
        self._shapes: list[tuple[int, ...]] = []
        self._sizes: list[int] = []
        self._y_mean = 0.0
        self._y_std = 1.0

    # ---- parameters ------------------------------------------------------------------------
    def _init_parameters(self, in_dim: int) -> None:
        """Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) as ``nn.Linear`` does, one draw per member.

        All parameters live in one flat tensor (the layers are views of it), so that an Adam
        step is a handful of tensor operations instead of a few per layer.
        """
        cfg = self.config
        dims = [in_dim] + [cfg.width] * (cfg.num_layers - 1) + [1]
        shapes = []
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            shapes += [(cfg.num_members, fan_in, fan_out), (cfg.num_members, 1, fan_out)]
        sizes = [math.prod(shape) for shape in shapes]
        bounds = torch.cat([torch.full((size,), 1.0 / math.sqrt(shape[1] if i % 2 == 0 else dims[i // 2]))
                            for i, (shape, size) in enumerate(zip(shapes, sizes))])
        self.flat = ((torch.rand(sum(sizes), generator=self.generator) * 2 - 1) * bounds).requires_grad_()
        self._shapes, self._sizes = shapes, sizes

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` of shape (members, n, in) -> predictions (members, n) in standardised units."""
        # Views are rebuilt per call so that every backward pass has a fresh graph to the leaf.
        views = [chunk.view(shape) for chunk, shape in zip(self.flat.split(self._sizes), self._shapes)]
        h = x
        last = len(views) // 2 - 1
        for i, (w, b) in enumerate(zip(views[0::2], views[1::2])):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = torch.relu(h)
        return h.squeeze(-1)

    # ---- training and prediction -----------------------------------------------------------
    def fit(self, x: np.ndarray, y: np.ndarray) -> "MLPEnsemble":
        """Train every member on features ``x`` (n, d) and targets ``y`` (n,)."""
        with torch_threads(1):  # tiny networks: one thread is fastest and deterministic
            return self._fit(x, y)

    def _fit(self, x: np.ndarray, y: np.ndarray) -> "MLPEnsemble":
        cfg = self.config
        x_t = torch.as_tensor(np.asarray(x, dtype=np.float32))
        y_np = np.asarray(y, dtype=np.float64)
        self._y_mean = float(y_np.mean())
        self._y_std = float(y_np.std()) or 1.0
        y_t = torch.as_tensor(((y_np - self._y_mean) / self._y_std).astype(np.float32))
        self._init_parameters(x_t.shape[1])
        optimizer = torch.optim.Adam([self.flat], lr=cfg.lr)
        n = len(x_t)
        batch = min(cfg.batch_size, n)
        for _ in range(cfg.epochs):
            # An independent shuffle per member: members see different mini-batches.
            order = torch.argsort(torch.rand(cfg.num_members, n, generator=self.generator), dim=1)
            for start in range(0, n, batch):
                idx = order[:, start : start + batch]
                loss = (self._forward(x_t[idx]) - y_t[idx]).abs().mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        return self

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Every member's prediction for ``x`` (n, d), shape (members, n), in target units."""
        if self.flat is None:
            raise RuntimeError("MLPEnsemble.predict called before fit")
        x_t = torch.as_tensor(np.asarray(x, dtype=np.float32))
        with torch_threads(1):  # tiny networks: one thread is fastest and deterministic
            out = self._forward(x_t.unsqueeze(0).expand(self.config.num_members, -1, -1))
        return out.double().numpy() * self._y_std + self._y_mean
