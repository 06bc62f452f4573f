"""Configuration of behaviour cloning."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BCConfig:
    """Behaviour cloning (deterministic MLP policy, mean-squared error to dataset actions)."""

    hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden layer widths of the policy MLP. Default [256, 256]."""
    learning_rate: float = 3e-4
    """Adam learning rate. Default 3e-4."""
    weight_decay: float = 0.0
    """Adam (L2) weight decay. Default 0."""
    normalize_observations: bool = True
    """Standardise observations with dataset statistics. Default True."""

    name: str = field(default="bc", init=False)

    def __post_init__(self) -> None:
        if not self.hidden_dims or any(int(h) != h or h <= 0 for h in self.hidden_dims):
            raise ValueError(f"hidden_dims={self.hidden_dims}; expected positive integers")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate}; expected > 0")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay}; expected >= 0")
        self.hidden_dims = [int(h) for h in self.hidden_dims]
