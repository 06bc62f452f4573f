"""Soft Actor-Critic (Haarnoja et al. 2018): twin critics, a tanh-squashed Gaussian actor and
automatic temperature tuning."""

from policies.sac.config import SACConfig
from policies.sac.model import SACLearner, SquashedGaussianActor

__all__ = ["SACConfig", "SACLearner", "SquashedGaussianActor"]
