"""Networks shared by the learners: MLPs and observation normalisation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def check_hidden_dims(hidden_dims: Sequence[int], owner: str = "hidden_dims") -> list[int]:
    """``hidden_dims`` as a list of ints, for configs' ``__post_init__``.

    Raises:
        ValueError: empty, or an entry that is not a positive integer (names ``owner``).
    """
    dims = list(hidden_dims) if hidden_dims is not None else []
    if not dims or any(isinstance(h, bool) or int(h) != h or h <= 0 for h in dims):
        raise ValueError(f"{owner}={hidden_dims}; expected a non-empty list of positive integers")
    return [int(h) for h in dims]


def mlp(
    input_dim: int,
    output_dim: int,
    hidden_dims: Sequence[int] = (256, 256),
    activation: type[nn.Module] = nn.ReLU,
    output_activation: type[nn.Module] | None = None,
) -> nn.Sequential:
    """A multi-layer perceptron ``(B, input_dim) -> (B, output_dim)``, float32.

    Raises:
        ValueError: a dimension is not a positive integer.
    """
    hidden = check_hidden_dims(hidden_dims) if len(hidden_dims) else []
    dims = [input_dim, *hidden, output_dim]
    if any(int(d) != d or d <= 0 for d in (input_dim, output_dim)):
        raise ValueError(f"MLP dimensions must be positive integers, got {dims}")
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(int(d_in), int(d_out)))
        if i < len(dims) - 2:
            # in place after a Linear (whose backward does not need its output): no extra buffer
            layers.append(nn.ReLU(inplace=True) if activation is nn.ReLU else activation())
    if output_activation is not None:
        layers.append(output_activation())
    return nn.Sequential(*layers)


class TaskHeads(nn.Module):
    """An MLP with a separate output head per task (Continual World's multi-head setting): a shared
    body, ``heads`` linear outputs of ``output_dim`` each, and the head of each row picked by the
    task one-hot inside the input, ``x[:, task_start : task_start + heads]`` (its argmax).

    ``(B, input_dim) -> (B, output_dim)`` float32.

    Raises:
        ValueError: ``heads`` < 1 or the one-hot does not fit inside the input.
    """

    def __init__(self, input_dim: int, output_dim: int, hidden_dims: Sequence[int], heads: int, task_start: int,
                 output_activation: type[nn.Module] | None = None):
        super().__init__()
        if heads < 1 or task_start < 0 or task_start + heads > input_dim:
            raise ValueError(f"task heads: {heads} heads read from input columns [{task_start}, {task_start + heads}) "
                             f"of {input_dim}; expected heads >= 1 inside the input")
        self.net = mlp(input_dim, output_dim * heads, hidden_dims, output_activation=output_activation)
        self.heads, self.output_dim, self.task_start = int(heads), int(output_dim), int(task_start)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        task = x[:, self.task_start: self.task_start + self.heads].argmax(-1)
        y = self.net(x).view(len(x), self.heads, self.output_dim)
        return y[torch.arange(len(x), device=x.device), task]


def head_mlp(input_dim: int, output_dim: int, hidden_dims: Sequence[int], heads: int = 0, task_start: int = 0,
             output_activation: type[nn.Module] | None = None) -> nn.Module:
    """:func:`mlp` when ``heads`` is 0, else :class:`TaskHeads` (a head per task)."""
    if heads:
        return TaskHeads(input_dim, output_dim, hidden_dims, heads, task_start, output_activation)
    return mlp(input_dim, output_dim, hidden_dims, output_activation=output_activation)


class ObservationNormalizer(nn.Module):
    """Standardises observations: ``(o - mean) / (std + eps)``.

    The statistics are buffers, so they travel with the weights in checkpoints.

    Args:
        dim: observation size D.
        eps: added to the standard deviation, in observation units.
    """

    def __init__(self, dim: int, eps: float = 1e-3):
        super().__init__()
        self.eps = float(eps)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, observations: torch.Tensor) -> None:
        """Set the statistics from ``observations (N, D) float32``.

        Raises:
            ValueError: wrong shape, no rows, or non-finite values.
        """
        if observations.ndim != 2 or observations.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"observations must be (N, {self.mean.shape[0]}), got {tuple(observations.shape)}"
            )
        if observations.shape[0] == 0 or not torch.isfinite(observations).all():
            raise ValueError("observations for normalisation must be non-empty and finite")
        self.mean.copy_(observations.mean(0))
        self.std.copy_(observations.std(0, unbiased=False))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return (observations - self.mean) / (self.std + self.eps)
