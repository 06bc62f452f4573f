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

    attributes: int = 0
    """k > 0: attribute-conditioned BC, the baseline of AlignDiff: pi(a | s, [v * m, m]) with ``v``
    the attribute strengths (a frozen attribute strength model, fitted before training) of the
    window of ``attribute_horizon`` steps the action starts, and ``m`` each attribute kept with
    probability ``1 - attribute_dropout`` (so any subset can be asked). Default 0 (off)."""
    attribute_horizon: int = 16
    """Steps of the window whose attributes condition an action. Default 16 (AlignDiff's planner horizon here)."""
    attribute_dropout: float = 0.3
    """Probability of masking each attribute in training. Default 0.3."""
    attribute_hidden: int = 64
    """Width of the attribute strength model. Default 64."""
    attribute_members: int = 3
    """Ensemble members of the attribute strength model. Default 3."""

    name: str = field(default="bc", init=False)

    def __post_init__(self) -> None:
        self.hidden_dims = check_hidden_dims(self.hidden_dims)
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate}; expected > 0")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay}; expected >= 0")
        if self.attributes < 0 or (self.attributes and self.goal_conditioned):
            raise ValueError(f"attributes={self.attributes}: expected >= 0, and not together with goal_conditioned")
        if self.attribute_horizon < 2 or not 0.0 <= self.attribute_dropout < 1.0:
            raise ValueError(f"attribute_horizon={self.attribute_horizon} (>= 2) and attribute_dropout="
                             f"{self.attribute_dropout} (in [0, 1)) expected")
        if not 0.0 <= self.goal_discount < 1.0:
            raise ValueError(f"goal_discount={self.goal_discount}; expected in [0, 1)")
