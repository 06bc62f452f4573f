"""Implicit Q-Learning (Kostrikov et al., ICLR 2022)."""

from policies.iql.config import PRESETS, IQLConfig
from policies.iql.model import IQLLearner

__all__ = ["PRESETS", "IQLConfig", "IQLLearner"]
