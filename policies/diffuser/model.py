"""Diffusion planners, top to bottom: Diffuser (value-guided), Decision Diffuser (return-
conditioned, classifier-free guidance) and ``select`` (best of N by value), on one temporal U-Net.

Training (every mode), on windows of H steps from the window sampler:

- a trajectory ``tau_0`` is the window's normalised states ``(B, H, D)`` (Decision Diffuser) or
  states and actions ``(B, H, D + A)`` (Diffuser, select);
- DDPM forward process on diffusers' cosine schedule: ``tau_k = sqrt(abar_k) tau_0 +
  sqrt(1 - abar_k) eps``, ``k ~ U{0..K-1}``; the current state is held by inpainting
  (``tau_k[:, 0, :D] = s_0``) as in planning;
- the denoiser predicts the clean trajectory (``prediction=sample``, Diffuser's
  ``predict_epsilon=False``): ``L_diffusion = E || tau_0 - x_theta(tau_k, k[, y]) ||^2``, or the
  noise (``prediction=epsilon``): ``E || eps - eps_theta(tau_k, k[, y]) ||^2`` (Ho et al. 2020,
  Eq. 14); over the steps inside the episode, the first action weighted by ``action_weight``
  (Diffuser), the inpainted state left out. Guidance below is written for eps; a sample
  prediction is the same noise prediction, ``eps = (tau_k - sqrt(abar_k) x_theta) / sqrt(1 - abar_k)``;
- Diffuser and select: a value network ``J_phi(tau_k, k)`` regresses the window's discounted
  return-to-go ``G`` (scaled to [0, 1] by the returns seen so far): ``L_J = (J_phi - G)^2``;
- Decision Diffuser: ``y = G`` scaled to [0, 1], dropped with probability ``condition_dropout``
  (the unconditional model of classifier-free guidance); an inverse-dynamics model
  ``a_t = f(s_t, s_{t+1})`` learns ``L_inv = ||f(s_t, s_{t+1}) - a_t||^2`` (Ajay et al. 2023, Eq. 4);
- an exponential moving average of the denoiser's weights plans.

Planning (``act``): N trajectories from Gaussian noise, denoised in ``sampling_steps`` DDIM (eta
0) or DPM-Solver++ steps with the current state inpainted after every step:

- Diffuser: gradient guidance, Janner et al. 2022, Eq. 3 (``mu + alpha Sigma grad J``) written
  for a deterministic sampler as classifier guidance on the noise prediction (Dhariwal and Nichol
  2021, Eq. 14): ``eps_hat = eps_theta - alpha sqrt(1 - abar_k) grad_tau J_phi(tau_k, k)``; the
  plan with the highest ``J_phi(tau_0, 0)`` is kept;
- Decision Diffuser: ``eps_hat = eps_theta(tau_k, k, 0) + w (eps_theta(tau_k, k, y) -
  eps_theta(tau_k, k, 0))`` (Ajay et al. 2023, Eq. 3) with ``y = target_return``;
  actions from the inverse-dynamics model towards the plan's next state;
- select: no guidance; the plan with the highest ``J_phi(tau_0, 0)`` is kept;
- AlignDiff (Dong et al. 2024): the condition is ``[v * m, m]``, attribute targets ``v in [0, 1]^k``
  and the mask ``m`` of the attributes asked; in training ``v`` is the window's strength under the
  (frozen, pre-fitted) attribute strength model and each attribute is masked with probability
  ``attribute_dropout``; planning uses classifier-free guidance against the zero condition and
  keeps the plan minimising ``sum_i m_i (zeta_i(plan) - v_i)^2``.

The plan is executed for ``replan_every`` steps (receding horizon): Diffuser and select take
the plan's actions, Decision Diffuser ``f(s_t, s_{t+1}^plan)`` from the observed state.
"""

from __future__ import annotations

import copy

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from policies.attributes import AttributeStrengthModel
from policies.base import BatchSpec, Learner, NoiseSource
from policies.diffuser.config import DiffuserConfig
from policies.diffuser.networks import InverseDynamics, TemporalUNet, TrajectoryValue
from policies.networks import ObservationNormalizer


class DiffuserLearner(Learner):
    """A trajectory diffusion model with the three ways to act of :class:`DiffuserConfig`.

    Args:
        config: hyperparameters.
        observation_dim: D.
        action_dim: A (actions in [-1, 1]).

    Batches (``windows`` of ``horizon`` steps, with rewards): ``observation``,
    ``next_observation`` ``(B, H, D)``, ``action (B, H, A)``, ``mask (B, H)`` and
    ``return_to_go (B,)`` float32.
    """

    needs_reward = True

    def __init__(self, config: DiffuserConfig, observation_dim: int, action_dim: int):
        super().__init__()
        self.config = config
        self.observation_dim, self.action_dim = int(observation_dim), int(action_dim)
        self.states_only = config.mode == "decision_diffuser"
        self.aligned = config.mode == "aligndiff"
        self.needs_reward = not self.aligned
        k = int(config.attributes) if self.aligned else 0
        self.condition_dim = 2 * k
        channels = self.observation_dim + (0 if self.states_only else self.action_dim)
        self.normalizer = ObservationNormalizer(observation_dim)
        self.denoiser = TemporalUNet(config.horizon, channels, config.unet_dims, config.embed_dim,
                                     condition_dim=1 if self.states_only else 2 * k)
        self.ema = copy.deepcopy(self.denoiser).requires_grad_(False)
        self.optimizers_ = {"denoiser": torch.optim.Adam(self.denoiser.parameters(), lr=config.learning_rate)}
        if self.states_only:
            self.inverse_dynamics = InverseDynamics(observation_dim, action_dim, config.hidden_dims)
            self.optimizers_["inverse_dynamics"] = torch.optim.Adam(self.inverse_dynamics.parameters(), lr=config.learning_rate)
        elif self.aligned:  # fitted on attribute labels before training (reward_models.attributes), then frozen
            self.attribute_model = AttributeStrengthModel(observation_dim, k, config.attribute_hidden,
                                                          config.attribute_members).requires_grad_(False)
        else:
            self.value = TrajectoryValue(config.horizon, channels, config.unet_dims[:2], config.hidden_dims, config.embed_dim)
            self.optimizers_["value"] = torch.optim.Adam(self.value.parameters(), lr=config.learning_rate)
        # the returns-to-go seen in training (their range scales value targets and return conditions)
        self.register_buffer("return_low", torch.tensor(float("inf")))
        self.register_buffer("return_high", torch.tensor(float("-inf")))
        self.register_buffer("updates", torch.tensor(0, dtype=torch.int64))
        self.scheduler = DDPMScheduler(num_train_timesteps=config.diffusion_steps, beta_schedule="squaredcos_cap_v2",
                                       clip_sample=False, prediction_type="epsilon")
        sampler = DDIMScheduler if config.sampler == "ddim" else DPMSolverMultistepScheduler
        self.sampling_scheduler = sampler.from_config(self.scheduler.config, prediction_type=config.prediction)
        self.register_buffer("alphas_cumprod", self.scheduler.alphas_cumprod.clone().float(), persistent=False)
        self.noise = NoiseSource()  # training noise, checkpointed
        self._plan: torch.Tensor | None = None
        self._plan_step = 0
        self._plan_generator: torch.Generator | None = None
        self._plan_condition: torch.Tensor | None = None

    # -- contract --------------------------------------------------------------------------------
    def batch_spec(self) -> BatchSpec:
        return BatchSpec("windows", reward=self.needs_reward, horizon=self.config.horizon,
                         discount=min(self.config.discount, 0.999999))

    def prepare(self, observations: torch.Tensor, total_steps: int | None = None) -> None:
        if self.config.normalize_observations:
            self.normalizer.fit(observations)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return dict(self.optimizers_)

    def training_state(self) -> dict:
        return {**super().training_state(), "noise": self.noise.state_dict()}

    def load_training_state(self, state: dict) -> None:
        super().load_training_state(state)
        self.noise.load_state_dict(state.get("noise") or {})

    def reset(self) -> None:
        """New episode: drop the plan and restart the planning noise from ``plan_seed``."""
        self._plan, self._plan_step, self._plan_generator, self._plan_condition = None, 0, None, None

    # -- training --------------------------------------------------------------------------------
    def scaled_return(self, returns: torch.Tensor) -> torch.Tensor:
        """Returns-to-go ``(B,)`` scaled by the training range to about [0, 1]."""
        span = (self.return_high - self.return_low).clamp_min(1e-6)
        return (returns - self.return_low) / span

    def trajectories(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """tau_0 ``(B, H, C)``: normalised states (and actions) of a window batch."""
        states = self.normalizer(batch["observation"])
        return states if self.states_only else torch.cat([states, batch["action"]], dim=-1)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """``tau_k = sqrt(abar_k) tau_0 + sqrt(1 - abar_k) eps`` for ``k (B,)`` int64."""
        abar = self.alphas_cumprod[k][:, None, None]
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise

    @torch.no_grad()
    def training_condition(self, observations: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """AlignDiff's condition of training windows ``(B, H, D)``: ``[v * m, m] (B, 2k)`` with
        ``v`` the window's attribute strengths (the attribute model, clipped to [0, 1]) and ``m``
        each attribute kept with probability ``1 - attribute_dropout``, all dropped with
        ``condition_dropout`` (the unconditional model of classifier-free guidance)."""
        config = self.config
        v = self.attribute_model(observations).clamp(0.0, 1.0)
        n, device = len(v), v.device
        m = (torch.rand(v.shape, generator=generator, device=device) >= config.attribute_dropout).float()
        m = m * (torch.rand(n, 1, generator=generator, device=device) >= config.condition_dropout).float()
        return torch.cat([v * m, m], dim=-1)

    def losses(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """All losses on one window batch (see the module docstring)."""
        config, D = self.config, self.observation_dim
        x0 = self.trajectories(batch)
        mask = batch["mask"]
        n, device = len(x0), x0.device
        y = None if self.aligned else self.scaled_return(batch["return_to_go"]).clamp(0.0, 1.0)
        k = torch.randint(0, config.diffusion_steps, (n,), generator=generator, device=device)
        eps = torch.randn(x0.shape, generator=generator, device=device)
        x_k = self.add_noise(x0, eps, k)
        x_k[:, 0, :D] = x0[:, 0, :D]  # the current state, held by inpainting
        if self.states_only:
            keep = (torch.rand(n, 1, generator=generator, device=device) >= config.condition_dropout).float()
            predicted = self.denoiser(x_k, k, y[:, None], keep)
        elif self.aligned:
            predicted = self.denoiser(x_k, k, self.training_condition(batch["observation"], generator))
        else:
            predicted = self.denoiser(x_k, k)
        target = x0 if config.prediction == "sample" else eps
        weights = mask[:, :, None].expand_as(x0).clone()
        weights[:, 0, :D] = 0.0
        if not self.states_only:
            weights[:, 0, D:] *= config.action_weight
        diffusion = (weights * (predicted - target).pow(2)).sum() / (mask.sum() * x0.shape[-1]).clamp_min(1.0)
        out = {"diffusion_loss": diffusion}
        if self.states_only:
            observation, next_observation = self.normalizer(batch["observation"]), self.normalizer(batch["next_observation"])
            error = (self.inverse_dynamics(observation, next_observation) - batch["action"]).pow(2).mean(-1)
            out["inverse_dynamics_loss"] = (mask * error).sum() / mask.sum().clamp_min(1.0)
        elif not self.aligned:  # AlignDiff has no second network: its attribute model is fitted before
            out["value_loss"] = (self.value(x_k.detach(), k) - y).pow(2).mean()
        return out

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One Adam step of the denoiser and of the value (or inverse-dynamics) network, then the
        EMA of the denoiser (decay ``min(ema_decay, (1 + n) / (10 + n))`` after n updates).

        Raises:
            KeyError: a batch without ``return_to_go`` (windows sampled without rewards).
        """
        if not self.aligned:
            if "return_to_go" not in batch:
                raise KeyError("diffusion planners train on windows with return_to_go (a window sampler with rewards)")
            with torch.no_grad():
                self.return_low.copy_(torch.minimum(self.return_low, batch["return_to_go"].min()))
                self.return_high.copy_(torch.maximum(self.return_high, batch["return_to_go"].max()))
        losses = self.losses(batch, self.noise.get(batch["observation"].device))
        for optimizer in self.optimizers().values():
            optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        for optimizer in self.optimizers().values():
            optimizer.step()
        with torch.no_grad():
            self.updates += 1
            n = float(self.updates)
            decay = min(self.config.ema_decay, (1.0 + n) / (10.0 + n))
            torch._foreach_lerp_(list(self.ema.parameters()), list(self.denoiser.parameters()), 1.0 - decay)
        return {key: value.detach() for key, value in losses.items()}

    # -- planning --------------------------------------------------------------------------------
    def _generator(self, device: torch.device) -> torch.Generator:
        if self._plan_generator is None or self._plan_generator.device != device:
            self._plan_generator = torch.Generator(device=device).manual_seed(int(self.config.plan_seed))
        return self._plan_generator

    def plan(self, observation: torch.Tensor, samples: int | None = None, guidance: float | None = None,
             generator: torch.Generator | None = None, keep_all: bool = False,
             condition: torch.Tensor | None = None) -> torch.Tensor:
        """Sample plans from normalised observations ``(B, D)``.

        Args:
            observation: normalised current states ``(B, D)``.
            condition: AlignDiff: ``[targets, mask] (B, 2k)``.
            samples: N plans per state (default ``config.samples``).
            guidance: alpha (Diffuser) or w (Decision Diffuser); default from the config.
            generator: the initial noise's generator (default: the planning generator).
            keep_all: return every plan ``(B, N, H, C)`` instead of the best ``(B, H, C)``.

        Returns:
            Normalised plans; ``plan[..., 0, :D]`` equals ``observation`` exactly (inpainting).
        """
        config, D = self.config, self.observation_dim
        n = int(samples or config.samples)
        device = observation.device
        s0 = observation.repeat_interleave(n, dim=0)
        channels = self.denoiser.channels
        x = torch.randn((len(s0), config.horizon, channels), generator=generator or self._generator(device), device=device)
        x[:, 0, :D] = s0
        scheduler = self.sampling_scheduler
        scheduler.set_timesteps(config.sampling_steps, device=device)
        if self.states_only:
            w = config.guidance_weight if guidance is None else guidance
            y = torch.full((len(x), 1), float(config.target_return), device=device)
        elif self.aligned:
            w = config.guidance_weight if guidance is None else guidance
            y = condition.repeat_interleave(n, dim=0)
        else:
            alpha = (config.guidance_scale if guidance is None else guidance) if config.mode == "diffuser" else 0.0
        for k in scheduler.timesteps:
            steps = k.to(device).long().expand(len(x))
            with torch.no_grad():
                if self.states_only:  # both branches of classifier-free guidance in one batch
                    both = self.ema(torch.cat([x, x]), torch.cat([steps, steps]), torch.cat([y, y]),
                                    torch.cat([torch.ones_like(y), torch.zeros_like(y)]))
                    conditional, unconditional = both.chunk(2)
                    out = unconditional + w * (conditional - unconditional)
                elif self.aligned:  # the unconditional branch asks for no attribute (a zero condition)
                    conditional, unconditional = self.ema(torch.cat([x, x]), torch.cat([steps, steps]),
                                                          torch.cat([y, torch.zeros_like(y)])).chunk(2)
                    out = unconditional + w * (conditional - unconditional)
                else:
                    out = self.ema(x, steps)
            if not (self.states_only or self.aligned) and alpha > 0:
                with torch.enable_grad():
                    guided = x.detach().requires_grad_(True)
                    grad = torch.autograd.grad(self.value(guided, steps).sum(), guided)[0]
                grad[:, 0, :D] = 0.0
                abar = self.alphas_cumprod[k.long()]
                # eps_hat = eps - alpha sqrt(1 - abar) grad; for a sample prediction the same step is
                # x_hat = x_theta + alpha (1 - abar) / sqrt(abar) grad
                out = (out - alpha * (1.0 - abar).sqrt() * grad if config.prediction == "epsilon"
                       else out + alpha * (1.0 - abar) / abar.sqrt().clamp_min(1e-4) * grad)
            with torch.no_grad():
                x = scheduler.step(out, k, x).prev_sample
                x[:, 0, :D] = s0
        plans = x.reshape(len(observation), n, config.horizon, channels)
        if keep_all:
            return plans
        if self.states_only or n == 1:
            return plans[:, 0]
        if self.aligned:  # keep the plan whose attributes best match the asked ones (masked squared error)
            with torch.no_grad():
                states = x[..., :D] * (self.normalizer.std + self.normalizer.eps) + self.normalizer.mean
                k = config.attributes
                error = ((self.attribute_model(states) - y[:, :k]).pow(2) * y[:, k:]).sum(-1).reshape(len(observation), n)
            return plans[torch.arange(len(observation), device=device), error.argmin(dim=1)]
        with torch.no_grad():
            scores = self.value(x, torch.zeros(len(x), dtype=torch.long, device=device)).reshape(len(observation), n)
        return plans[torch.arange(len(observation), device=device), scores.argmax(dim=1)]

    @torch.no_grad()
    def act(self, observation: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Actions ``(B, A) float32`` in [-1, 1] for observations ``(B, D)``: a new plan every
        ``replan_every`` calls (or when the batch size or the condition changes), else the current
        plan's next action (Decision Diffuser: ``f(s_t, s_{t+1}^plan)``). Call :meth:`reset` at
        each episode. AlignDiff takes ``condition = [targets (k), mask (k)] (B, 2k)``; new targets
        mid-episode are planned for at once.

        Raises:
            ValueError: a condition given to the unconditioned modes, or a missing or malformed
                one for AlignDiff.
        """
        self.check_condition(condition, observation.shape[0])
        state = self.normalizer(observation)
        changed = condition is not None and (self._plan_condition is None or not torch.equal(condition, self._plan_condition))
        if self._plan is None or self._plan_step >= self.config.replan_every or len(self._plan) != len(state) or changed:
            self._plan, self._plan_step = self.plan(state, condition=condition), 0
            self._plan_condition = None if condition is None else condition.clone()
        j = self._plan_step
        self._plan_step += 1
        if self.states_only:
            return self.inverse_dynamics(state, self._plan[:, j + 1, :self.observation_dim])
        return self._plan[:, j, self.observation_dim:].clamp(-1.0, 1.0)


__all__ = ["DiffuserLearner"]
