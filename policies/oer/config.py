"""Configuration of OER's dual behaviour cloning (DBC) learner on top of IQL."""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.iql.config import IQLConfig
from policies.networks import check_hidden_dims


@dataclass
class OERConfig(IQLConfig):
    """IQL's hyperparameters (the Q-learning part, trained on the current task only) plus the
    continual policy mu of dual behaviour cloning (the policy that acts)."""

    policy_hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden widths of the continual policy mu. Default [256, 256]."""
    policy_learning_rate: float = 3e-4
    """Adam learning rate of mu. Default 3e-4."""
    distill_weight: float = 1.0
    """Weight of cloning the Q-learning policy's action on the current task's states. Default 1."""
    replay_weight: float = 1.0
    """lambda: weight of cloning the replayed actions of past tasks. Default 1."""

    name: str = field(default="oer", init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.policy_hidden_dims = check_hidden_dims(self.policy_hidden_dims)
        if self.policy_learning_rate <= 0 or self.distill_weight < 0 or self.replay_weight < 0:
            raise ValueError(f"policy_learning_rate={self.policy_learning_rate} (> 0), distill_weight="
                             f"{self.distill_weight} and replay_weight={self.replay_weight} (>= 0) expected")
