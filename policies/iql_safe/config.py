"""Configuration of cost-constrained IQL (:mod:`policies.iql_safe.model`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.iql.config import IQLConfig


@dataclass
class IQLSafeConfig(IQLConfig):
    """IQL's hyperparameters plus the cost side; the reward side's defaults are IQL's."""

    cost_threshold: float = 0.1
    """epsilon: the discounted expected cost from a state that still counts as feasible, in the
    judges' cost units (indicator costs: roughly the chance of an unsafe step ahead). A state
    is feasible when V_c(s) <= epsilon, an action when Q_c(s, a) <= epsilon. Default 0.1."""
    cost_expectile: float = 0.1
    """tau_c of the expectile regression of V_c on Q_c: below 0.5 it estimates the lowest cost
    the dataset's actions reach from a state (the largest feasible region). Default 0.1."""
    cost_temperature: float = 3.0
    """beta_c of the recovery weights exp(-beta_c A_c) in infeasible states. Default 3."""
    cost_discount: float = 0.99
    """gamma_c of the cost's Bellman backup. Default 0.99."""

    name: str = field(default="iql_safe", init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cost_threshold < 0:
            raise ValueError(f"cost_threshold={self.cost_threshold}; expected >= 0 (cost units)")
        if not 0.0 < self.cost_expectile < 1.0:
            raise ValueError(f"cost_expectile={self.cost_expectile}; expected in (0, 1)")
        if self.cost_temperature < 0 or not 0.0 <= self.cost_discount <= 1.0:
            raise ValueError(f"cost_temperature={self.cost_temperature} (>= 0) and cost_discount={self.cost_discount} "
                             "(in [0, 1]) expected")
