"""Configuration of forward-backward (FB) representations: Touati and Ollivier, "Learning One
Representation to Optimize All Rewards", NeurIPS 2021; Touati, Rapin and Ollivier, "Does
Zero-Shot Reinforcement Learning Exist?", ICLR 2023; Tirinzoni et al., "Zero-Shot Whole-Body
Humanoid Control via Behavioral Foundation Models" (Meta Motivo), ICLR 2025."""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.networks import check_hidden_dims

GOAL_SOURCES = ("future", "next")
ARCHITECTURES = ("embedding", "mlp")


@dataclass
class FBConfig:
    """FB hyperparameters. Defaults are a CPU preset (d = 50, 256-wide networks, batch from the
    trainer); Meta Motivo's released training setting (the GPU preset, ``conf/algo/fb.yaml``) is
    d = 100, F 1024 wide, lr 1e-4, tau 0.01, orthonormality 1, goal ratio 0.5, batch 1024."""

    hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden widths of B and the actor (and of F unless ``forward_hidden_dims``). Default [256, 256]."""
    forward_hidden_dims: list[int] | None = None
    """Hidden widths of each forward network F_i (None: ``hidden_dims``)."""
    z_dim: int = 50
    """d, size of z and of F and B's outputs. Default 50 (Touati et al. 2023)."""
    discount: float = 0.98
    """gamma of the successor measure F^T B approximates. Default 0.98."""
    forward_learning_rate: float = 1e-4
    """Adam learning rate of F. Default 1e-4."""
    backward_learning_rate: float = 1e-4
    """Adam learning rate of B. Default 1e-4."""
    actor_learning_rate: float = 1e-4
    """Adam learning rate of the actor. Default 1e-4."""
    tau: float = 0.01
    """Polyak rate of the target F and B. Default 0.01."""
    orthonormality_weight: float = 1.0
    """Weight of the orthonormality loss on B. Default 1."""
    goal_ratio: float = 0.5
    """Share of training z taken as B(goal) of a dataset state instead of a uniform draw on the
    sphere. Default 0.5."""
    goal_source: str = "future"
    """Where those goals come from: ``future`` (a state of the same episode ``k ~ Geometric(1 -
    gamma)`` steps later, the future-state sampler) or ``next`` (next states of other
    transitions in the batch, as Meta Motivo)."""
    actor_noise: float = 0.2
    """Standard deviation of the actor's Gaussian noise (TD3-style actor). Default 0.2."""
    noise_clip: float = 0.3
    """Clip of that noise. Default 0.3."""
    target_pessimism: float = 0.5
    """p in the FB target T = mean(T_1, T_2) - p |T_1 - T_2|: 0.5 is min(T_1, T_2) (Touati et al.
    2023), 0 the mean (Meta Motivo). Default 0.5."""
    actor_pessimism: float = 0.5
    """Q = mean(Q_1, Q_2) - actor_pessimism |Q_1 - Q_2| / 2 in the actor loss. Default 0.5."""
    normalize_observations: bool = True
    """Standardise observations with dataset statistics. Default True."""
    architecture: str = "embedding"
    """Networks: ``embedding`` (Meta Motivo's: a Linear-LayerNorm-Tanh first layer, F embedding
    (s, a) and (s, z) apart, the actor s and (s, z)) or ``mlp`` (plain ReLU MLPs on the
    concatenated inputs, whose F diverged on the maze: FACTS). Default ``embedding``."""

    name: str = field(default="fb", init=False)

    def __post_init__(self) -> None:
        self.hidden_dims = check_hidden_dims(self.hidden_dims)
        if self.forward_hidden_dims is not None:
            self.forward_hidden_dims = check_hidden_dims(self.forward_hidden_dims, "forward_hidden_dims")
        if self.z_dim < 1:
            raise ValueError(f"z_dim={self.z_dim}; expected >= 1")
        if not 0.0 <= self.discount < 1.0:
            raise ValueError(f"discount={self.discount}; expected in [0, 1)")
        if not 0.0 < self.tau <= 1.0 or not 0.0 <= self.goal_ratio <= 1.0:
            raise ValueError(f"tau={self.tau} (in (0, 1]) and goal_ratio={self.goal_ratio} (in [0, 1]) expected")
        if min(self.forward_learning_rate, self.backward_learning_rate, self.actor_learning_rate) <= 0:
            raise ValueError("learning rates must be > 0")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture={self.architecture!r}; expected one of {ARCHITECTURES}")
        if self.goal_source not in GOAL_SOURCES:
            raise ValueError(f"goal_source={self.goal_source!r}; expected one of {GOAL_SOURCES}")
        if min(self.orthonormality_weight, self.actor_noise, self.noise_clip, self.actor_pessimism, self.target_pessimism) < 0:
            raise ValueError("orthonormality_weight, actor_noise, noise_clip, actor_pessimism and target_pessimism must be >= 0")
