"""Diffusion planners: Diffuser, Decision Diffuser and best-of-N selection by value."""

from policies.diffuser.config import DiffuserConfig
from policies.diffuser.model import DiffuserLearner

__all__ = ["DiffuserConfig", "DiffuserLearner"]
