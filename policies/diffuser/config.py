"""Configuration of the diffusion planners: Janner et al., "Planning with Diffusion for Flexible
Behavior Synthesis" (Diffuser), ICML 2022; Ajay et al., "Is Conditional Generative Modeling All
You Need for Decision-Making?" (Decision Diffuser), ICLR 2023."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from policies.networks import check_hidden_dims

MODES = ("diffuser", "decision_diffuser", "select", "aligndiff")
SAMPLERS = ("ddim", "dpm")
PREDICTIONS = ("sample", "epsilon")


@dataclass
class DiffuserConfig:
    """A trajectory diffusion model and how it acts (``mode``):

    - ``diffuser``: state-action trajectories; N plans sampled with gradient guidance from a
      value network on noisy trajectories; the highest-valued plan is kept (Janner et al. 2022);
    - ``decision_diffuser``: state trajectories sampled with classifier-free guidance on the
      return; actions from an inverse-dynamics model (Ajay et al. 2023);
    - ``select``: state-action trajectories; N plans sampled without guidance; the one the value
      network ranks first is kept;
    - ``aligndiff``: state-action trajectories conditioned on attribute targets with a mask
      (classifier-free guidance); the plan whose attributes (the attribute strength model's)
      best match the asked ones is kept (Dong et al. 2024). Needs no reward.

    Defaults are the CPU preset (horizon 16, U-Net 32/64/128, 5 DDIM steps, 8 plans, a new
    plan every step); the GPU preset at the papers' scale is in ``conf/algo/diffuser.yaml``.
    """

    mode: str = "diffuser"
    """``diffuser``, ``decision_diffuser`` or ``select`` (above)."""
    horizon: int = 16
    """H, steps per planned trajectory (divisible by 2^(levels - 1) of ``unet_dims``). Default 16;
    Diffuser's locomotion setting is 32, Decision Diffuser's 100 (GPU preset)."""
    unet_dims: list[int] = field(default_factory=lambda: [32, 64, 128])
    """Channels per level of the temporal U-Net. Default [32, 64, 128] (Diffuser: 32 x (1, 2, 4, 8))."""
    embed_dim: int = 32
    """Size of the diffusion-step (and condition) embedding. Default 32."""
    hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden widths of the MLPs: the value head and the inverse-dynamics model. Default [256, 256]."""
    diffusion_steps: int = 100
    """K, steps of the DDPM training schedule (cosine, "squaredcos_cap_v2"). Default 100."""
    sampling_steps: int = 5
    """Denoising steps when planning (DDIM or DPM-Solver over the K-step schedule). Default 5 (10
    until 2026-12-01; on dressing 5 steps did as well as 10 for every planner, docs/RESULTS.md)."""
    sampler: str = "ddim"
    """``ddim`` (Song et al. 2021, eta 0) or ``dpm`` (DPM-Solver++ multistep, Lu et al. 2022). Default ddim."""
    prediction: str = "sample"
    """What the denoiser predicts: ``sample``, the clean trajectory tau_0 (Diffuser's
    ``predict_epsilon=False``), or ``epsilon``, the noise (Ho et al. 2020; Decision Diffuser's
    setting, with its x0 clipped to [-1, 1]). Default sample: on dressing at the CPU preset an
    epsilon model's plans leave the data (a planned next state 23 normalised units from the
    current one against 0.3 in the data) and Decision Diffuser never dressed; docs/RESULTS.md."""
    learning_rate: float = 2e-4
    """Adam learning rate of every network. Default 2e-4 (Diffuser)."""
    ema_decay: float = 0.995
    """Decay of the exponential moving average of the denoiser's weights, used to plan. Default 0.995."""
    discount: float = 0.99
    """gamma of the returns-to-go the value network regresses and Decision Diffuser conditions on. Default 0.99."""
    guidance_scale: float = 0.1
    """Diffuser: alpha, the step along the value gradient (0: unguided). Default 0.1 (Diffuser)."""
    condition_dropout: float = 0.25
    """Decision Diffuser: probability of dropping the return condition in training. Default 0.25."""
    guidance_weight: float = 1.2
    """Decision Diffuser: w of classifier-free guidance, ``eps_uncond + w (eps_cond - eps_uncond)``
    (0: unconditional). Default 1.2 (Ajay et al.)."""
    target_return: float = 0.9
    """Decision Diffuser: the return the plan is conditioned on, as a fraction of the dataset's
    range of returns-to-go (0: the lowest, 1: the highest). Default 0.9."""
    samples: int = 8
    """N, plans sampled per decision (diffuser and select keep the best by value; Decision
    Diffuser uses the first). Default 8 (Diffuser: 64 on the GPU)."""
    replan_every: int = 1
    """Actions of a plan executed before planning again. Default 1, the papers' receding horizon:
    on dressing at the CPU preset only the plan's first action is good (it carries the loss's
    ``action_weight``); AlignDiff succeeded in 0 of 20 episodes executing 4 and 8 of 10 executing 1."""
    action_weight: float = 10.0
    """Weight of the first action's error in the diffusion loss (Diffuser's ``action_weight``). Default 10."""
    attributes: int = 0
    """AlignDiff: k, the number of attributes (the task's ``attributes``); the condition of
    ``act`` is ``[targets (k), mask (k)]``: strengths in [0, 1] and 1 for each attribute asked."""
    attribute_dropout: float = 0.3
    """AlignDiff: probability of masking each attribute in training (so any subset can be
    asked); the whole condition is also dropped with ``condition_dropout``. Default 0.3."""
    attribute_hidden: int = 64
    """AlignDiff: width of the attribute strength model's networks. Default 64."""
    attribute_members: int = 3
    """AlignDiff: ensemble members of the attribute strength model. Default 3."""
    normalize_observations: bool = True
    """Standardise observations with dataset statistics. Default True."""
    plan_seed: int = 0
    """Seed of the planning noise, reset with each episode, so evaluation is reproducible. Default 0."""

    name: str = field(default="diffuser", init=False)

    legacy_defaults: ClassVar[dict] = {"prediction": "epsilon"}
    """Values of fields that checkpoints written before the field existed were trained with
    (:func:`policies.config_from_dict` fills them in): epsilon prediction before 2026-11-30."""

    def __post_init__(self) -> None:
        self.hidden_dims = check_hidden_dims(self.hidden_dims)
        self.unet_dims = check_hidden_dims(self.unet_dims, "unet_dims")
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}; expected one of {MODES}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction={self.prediction!r}; expected one of {PREDICTIONS}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler={self.sampler!r}; expected one of {SAMPLERS}")
        if self.horizon < 2 or self.horizon % (2 ** (len(self.unet_dims) - 1)):
            raise ValueError(f"horizon={self.horizon}: expected >= 2 and divisible by 2^(levels - 1) = "
                             f"{2 ** (len(self.unet_dims) - 1)} for unet_dims {self.unet_dims}")
        if not 1 <= self.sampling_steps <= self.diffusion_steps:
            raise ValueError(f"sampling_steps={self.sampling_steps}; expected in [1, diffusion_steps={self.diffusion_steps}]")
        if not 1 <= self.replan_every <= self.horizon - 1:
            raise ValueError(f"replan_every={self.replan_every}; expected in [1, horizon - 1 = {self.horizon - 1}]")
        if self.samples < 1 or self.embed_dim < 4 or self.embed_dim % 2:
            raise ValueError(f"samples={self.samples} (>= 1) and an even embed_dim={self.embed_dim} (>= 4) expected")
        if not 0.0 <= self.ema_decay < 1.0 or not 0.0 <= self.discount <= 1.0 or not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError("ema_decay in [0, 1), discount in [0, 1] and condition_dropout in [0, 1) expected")
        if self.mode == "aligndiff" and self.attributes < 1:
            raise ValueError("mode=aligndiff needs attributes >= 1 (the task's attributes)")
        if not 0.0 <= self.attribute_dropout < 1.0 or self.attribute_hidden < 1 or self.attribute_members < 1:
            raise ValueError("attribute_dropout in [0, 1), attribute_hidden >= 1 and attribute_members >= 1 expected")
        if self.learning_rate <= 0 or min(self.guidance_scale, self.guidance_weight, self.action_weight) < 0:
            raise ValueError("learning_rate > 0 and guidance_scale, guidance_weight, action_weight >= 0 expected")
