"""Configuration of behaviour cloning (and its goal-conditioned variant)."""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.networks import check_hidden_dims


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
    goal_conditioned: bool = False
    """Learn pi(a | s, g) with g an observation reached later in the same episode (hindsight
    relabelling: GCSL, Ghosh et al. 2021); ``act`` then takes the goal observation as its
    condition. Default False."""
    goal_discount: float = 0.9
    """gamma of the geometric offset of the hindsight goal (mean 1 / (1 - gamma) steps ahead),
    in [0, 1). Default 0.9."""

    name: str = field(default="bc", init=False)

    def __post_init__(self) -> None:
        self.hidden_dims = check_hidden_dims(self.hidden_dims)
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate}; expected > 0")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay}; expected >= 0")
        if not 0.0 <= self.goal_discount < 1.0:
            raise ValueError(f"goal_discount={self.goal_discount}; expected in [0, 1)")
