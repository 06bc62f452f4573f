"""Configuration of Implicit Q-Learning (Kostrikov, Nair and Levine, ICLR 2022)."""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.networks import check_hidden_dims

#: Paper presets: expectile tau and inverse temperature beta (FACTS.md, IQL paper appendix).
PRESETS: dict[str, dict[str, float]] = {
    "locomotion": {"expectile": 0.7, "temperature": 3.0},
    "antmaze": {"expectile": 0.9, "temperature": 10.0},
    "kitchen": {"expectile": 0.7, "temperature": 0.5},
}


@dataclass
class IQLConfig:
    """IQL hyperparameters; defaults are the paper's locomotion settings."""

    hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden widths of every MLP (actor, twin Q, V). Default [256, 256]."""
    learning_rate: float = 3e-4
    """Adam learning rate of all networks. Default 3e-4."""
    discount: float = 0.99
    """gamma, per step. Default 0.99."""
    tau: float = 0.005
    """Soft target-update rate of the Q target networks. Default 0.005."""
    expectile: float | None = None
    """tau of the expectile loss L2^tau (paper Eq. 5), in (0, 1). None (default): the preset's,
    else 0.7 (the paper's locomotion setting)."""
    temperature: float | None = None
    """beta, inverse temperature of the advantage weights exp(beta A) (Eq. 7). None (default):
    the preset's, else 3.0 (the paper's locomotion setting)."""
    max_weight: float = 100.0
    """Clip of the advantage weights exp(beta A). Default 100."""
    log_std_min: float = -5.0
    """Lower clamp of the actor's log standard deviation. Default -5."""
    log_std_max: float = 2.0
    """Upper clamp of the actor's log standard deviation. Default 2."""
    actor_cosine_decay: bool = True
    """Cosine decay of the actor's learning rate over the run's steps. Default True."""
    reward_scale: float = 1.0
    """Rewards are ``reward_scale * r + reward_bias`` inside the update. Default 1."""
    reward_bias: float = 0.0
    """See reward_scale. Default 0 (AntMaze preset in the paper: -1)."""
    normalize_observations: bool = True
    """Standardise observations with dataset statistics. Default True."""
    task_heads: int = 0
    """Separate output heads per task for every network (Continual World's multi-head setting):
    the task is the argmax of the observation's last ``task_heads`` entries (a one-hot). 0: one
    head. Default 0."""
    preset: str | None = None
    """``locomotion``, ``antmaze`` or ``kitchen``: sets expectile and temperature, which must then
    be left None (a preset and an explicit value together raise, so neither silently wins)."""
    compile: bool = False
    """Compile the three losses' forward and backward with ``torch.compile`` (inductor). Pays
    a one-off compile (tens of s) for faster steps, mostly on a GPU. Default False."""

    name: str = field(default="iql", init=False)

    def __post_init__(self) -> None:
        """Resolves the preset. Raises ValueError on an unknown preset, on a preset given together
        with an explicit expectile or temperature, and on values out of range."""
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise ValueError(f"preset={self.preset!r}; expected one of {sorted(PRESETS)} or None")
            explicit = {key: getattr(self, key) for key in PRESETS[self.preset] if getattr(self, key) is not None}
            if explicit:
                raise ValueError(f"preset={self.preset!r} sets {PRESETS[self.preset]}, and {explicit} was given too; "
                                 "expected one of them: preset=null with explicit values, or the preset alone")
            for key, value in PRESETS[self.preset].items():
                setattr(self, key, value)
        for key, value in PRESETS["locomotion"].items():  # the paper's default setting
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.task_heads < 0:
            raise ValueError(f"task_heads={self.task_heads}; expected >= 0")
        if not 0.0 < self.expectile < 1.0:
            raise ValueError(f"expectile={self.expectile}; expected in (0, 1)")
        if not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"discount={self.discount}; expected in [0, 1]")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau={self.tau}; expected in (0, 1]")
        if self.temperature < 0 or self.max_weight <= 0 or self.learning_rate <= 0:
            raise ValueError("temperature must be >= 0, max_weight and learning_rate > 0")
        if self.log_std_min >= self.log_std_max:
            raise ValueError(f"log_std_min={self.log_std_min} must be below log_std_max={self.log_std_max}")
        self.hidden_dims = check_hidden_dims(self.hidden_dims)
