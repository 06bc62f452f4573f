"""IQL with a cost critic and a feasibility filter on the actor's weights (cost-constrained)."""

from policies.iql_safe.config import IQLSafeConfig
from policies.iql_safe.model import IQLSafeLearner

__all__ = ["IQLSafeConfig", "IQLSafeLearner"]
