"""Configuration of Soft Actor-Critic (Haarnoja, Zhou, Abbeel and Levine, ICML 2018; Haarnoja et
al., "Soft Actor-Critic Algorithms and Applications", 2018, for the automatic temperature)."""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.networks import check_hidden_dims


@dataclass
class SACConfig:
    """SAC hyperparameters; defaults are the paper's (Applications, Table 1) and CleanRL's
    ``sac_continuous_action.py``."""

    hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden widths of the actor and of both critics. Default [256, 256]."""
    actor_learning_rate: float = 3e-4
    """Adam learning rate of the actor. Default 3e-4."""
    critic_learning_rate: float = 3e-4
    """Adam learning rate of the twin critics. Default 3e-4 (CleanRL: 1e-3)."""
    temperature_learning_rate: float = 3e-4
    """Adam learning rate of log(alpha). Default 3e-4."""
    discount: float = 0.99
    """gamma, per step. Default 0.99."""
    tau: float = 0.005
    """Soft target-update rate of the target critics. Default 0.005."""
    initial_temperature: float = 1.0
    """alpha at the start (or throughout with ``autotune: false``). Default 1."""
    autotune: bool = True
    """Tune alpha so the policy's entropy tracks ``target_entropy`` (Applications, Eq. 18).
    Default True."""
    target_entropy: float | None = None
    """H_bar, in nats; None: -A (minus the action size), the paper's heuristic."""
    log_std_min: float = -5.0
    """Lower bound of the actor's log standard deviation (before tanh). Default -5."""
    log_std_max: float = 2.0
    """Upper bound of the actor's log standard deviation. Default 2."""
    reward_scale: float = 1.0
    """Rewards are ``reward_scale * r`` inside the update. Default 1."""
    normalize_observations: bool = False
    """Standardise observations with statistics from ``prepare`` (offline data). Online runs
    start without data, so the default is False."""

    name: str = field(default="sac", init=False)

    def __post_init__(self) -> None:
        for key in ("actor_learning_rate", "critic_learning_rate", "temperature_learning_rate", "initial_temperature"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key}={getattr(self, key)}; expected > 0")
        if not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"discount={self.discount}; expected in [0, 1]")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau={self.tau}; expected in (0, 1]")
        if self.log_std_min >= self.log_std_max:
            raise ValueError(f"log_std_min={self.log_std_min} must be below log_std_max={self.log_std_max}")
        self.hidden_dims = check_hidden_dims(self.hidden_dims)
