"""Behaviour cloning."""

from policies.bc.config import BCConfig
from policies.bc.model import BCLearner

__all__ = ["BCConfig", "BCLearner"]
