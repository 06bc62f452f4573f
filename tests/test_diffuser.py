"""Diffusion planners: inpainting holds the current state, zero guidance is the unguided sample,
the value gradient moves plans uphill, classifier-free guidance mixes the two branches as Eq. 3
says, returns-to-go are the discounted sums, and a tiny planner solves a 1-D task."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from embodied.data import Episode
from policies.data import EpisodeData, WindowSampler, make_sampler, returns_to_go
from policies.diffuser import DiffuserConfig, DiffuserLearner
from policies.diffuser.networks import TemporalUNet

D, A = 3, 2


def _learner(mode: str = "diffuser", **overrides) -> DiffuserLearner:
    torch.manual_seed(0)
    values = {"mode": mode, "horizon": 8, "unet_dims": [8, 16], "hidden_dims": [16], "diffusion_steps": 20,
              "sampling_steps": 5, "samples": 3, **overrides}
    return DiffuserLearner(DiffuserConfig(**values), D, A).eval()


def _generator(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("mode,sampler", [("diffuser", "ddim"), ("decision_diffuser", "ddim"), ("select", "dpm")])
def test_inpainting_holds_the_current_state_exactly(mode, sampler):
    learner = _learner(mode, sampler=sampler)
    state = torch.randn(4, D, generator=_generator(2)) * 3.0
    plans = learner.plan(state, keep_all=True)
    assert plans.shape == (4, 3, 8, D if mode == "decision_diffuser" else D + A)
    assert torch.equal(plans[:, :, 0, :D], state[:, None].expand(4, 3, D))
    assert not torch.equal(plans[:, :, 1, :D], plans[:, :, 0, :D])  # the rest is sampled


def _manual_ddim(learner: DiffuserLearner, state: torch.Tensor, n: int, eps_of) -> torch.Tensor:
    """A reference DDIM loop written from diffusers' scheduler alone, with inpainting."""
    scheduler = DDIMScheduler.from_config(learner.scheduler.config, prediction_type=learner.config.prediction)
    scheduler.set_timesteps(learner.config.sampling_steps)
    s0 = state.repeat_interleave(n, 0)
    x = torch.randn((len(s0), learner.config.horizon, learner.denoiser.channels), generator=_generator(5))
    x[:, 0, :D] = s0
    for k in scheduler.timesteps:
        with torch.no_grad():
            x = scheduler.step(eps_of(x, k.long().expand(len(x))), k, x).prev_sample
        x[:, 0, :D] = s0
    return x.reshape(len(state), n, *x.shape[1:])


def test_guidance_weight_zero_equals_the_unconditional_sample():
    state = torch.randn(2, D, generator=_generator(3))
    diffuser = _learner("diffuser")
    unguided = _manual_ddim(diffuser, state, 3, lambda x, k: diffuser.ema(x, k))
    assert torch.allclose(diffuser.plan(state, guidance=0.0, generator=_generator(5), keep_all=True), unguided, atol=1e-6)
    guided = diffuser.plan(state, guidance=1.0, generator=_generator(5), keep_all=True)
    assert not torch.allclose(guided, unguided, atol=1e-4)

    dd = _learner("decision_diffuser")
    y = torch.full((6, 1), dd.config.target_return)
    unconditional = _manual_ddim(dd, state, 3, lambda x, k: dd.ema(x, k, y, torch.zeros_like(y)))
    conditional = _manual_ddim(dd, state, 3, lambda x, k: dd.ema(x, k, y, torch.ones_like(y)))
    # both branches run in one batch there: float differences of ~1e-5 after 5 steps
    assert torch.allclose(dd.plan(state, guidance=0.0, generator=_generator(5), keep_all=True), unconditional, atol=1e-4)
    assert torch.allclose(dd.plan(state, guidance=1.0, generator=_generator(5), keep_all=True), conditional, atol=1e-4)


def test_the_value_gradient_moves_plans_uphill_and_the_best_plan_is_kept():
    # on eps: an untrained x0 model's last step returns its own output and drops the guidance
    learner = _learner("diffuser", samples=16, prediction="epsilon")
    with torch.no_grad():  # a value that prefers a large first action channel over the plan
        for p in learner.value.parameters():
            p.zero_()
    learner.value.forward = lambda x, k: x[:, :, D].mean(-1)  # J(tau) = mean_t a_t[0]
    state = torch.zeros(2, D)
    unguided = learner.plan(state, guidance=0.0, generator=_generator(7), keep_all=True)
    guided = learner.plan(state, guidance=2.0, generator=_generator(7), keep_all=True)
    assert guided[..., D].mean() > unguided[..., D].mean() + 0.1
    best = learner.plan(state, guidance=0.0, generator=_generator(7))
    scores = unguided[..., D].mean(-1)
    assert torch.equal(best, unguided[torch.arange(2), scores.argmax(1)])


def test_guidance_on_a_clean_trajectory_prediction_is_eq3_on_the_noise_it_implies():
    """prediction=sample: each guided step equals DDIM on eps = (tau_k - sqrt(abar) x_theta) /
    sqrt(1 - abar), moved by Eq. 3 (eps - alpha sqrt(1 - abar) grad J)."""
    learner = _learner("diffuser", samples=4)
    assert learner.config.prediction == "sample"
    value = lambda x, k: (x[:, :, D] - 0.3 * x[:, :, 0]).mean(-1)  # noqa: E731
    learner.value.forward = value
    abar = learner.alphas_cumprod
    alpha = 0.5

    def guided_eps(x, k):
        a = abar[k][:, None, None]
        eps = (x - a.sqrt() * learner.ema(x, k)) / (1.0 - a).sqrt()
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            grad = torch.autograd.grad(value(xg, k).sum(), xg)[0]
        grad[:, 0, :D] = 0.0
        return eps - alpha * (1.0 - a).sqrt() * grad

    state = torch.randn(2, D, generator=_generator(3))
    eps_learner = _learner("diffuser", samples=4, prediction="epsilon")  # a DDIM on eps
    reference = _manual_ddim(eps_learner, state, 4, guided_eps)
    planned = learner.plan(state, guidance=alpha, generator=_generator(5), keep_all=True)
    assert torch.allclose(planned, reference, atol=1e-4)
    assert not torch.allclose(learner.plan(state, guidance=0.0, generator=_generator(5), keep_all=True), reference, atol=1e-3)


@pytest.mark.parametrize("prediction", ["sample", "epsilon"])
def test_the_diffusion_loss_is_zero_for_the_true_clean_trajectory_or_noise(prediction):
    learner = _learner("diffuser", prediction=prediction).train()
    n, H = 6, learner.config.horizon
    batch = {"observation": torch.randn(n, H, D), "next_observation": torch.randn(n, H, D),
             "action": torch.rand(n, H, A) * 2 - 1, "mask": torch.ones(n, H), "return_to_go": torch.randn(n)}
    x0 = learner.trajectories(batch)

    def oracle(x_k, k, *condition):  # the target the loss asks for, from the noisy input
        a = learner.alphas_cumprod[k][:, None, None]
        return x0 if prediction == "sample" else (x_k - a.sqrt() * x0) / (1.0 - a).sqrt()

    learner.denoiser.forward = oracle
    assert float(learner.losses(batch, _generator())["diffusion_loss"]) < 1e-8
    learner.denoiser.forward = lambda x_k, k, *c: x_k  # neither target
    assert float(learner.losses(batch, _generator())["diffusion_loss"]) > 0.01


def test_checkpoints_from_before_the_prediction_setting_load_as_noise_predictors():
    from policies import config_from_dict, config_to_dict
    values = config_to_dict(DiffuserConfig())
    assert config_from_dict("diffuser", values).prediction == "sample"
    del values["prediction"]  # a checkpoint written before the field existed
    assert config_from_dict("diffuser", values).prediction == "epsilon"
    with pytest.raises(ValueError, match="prediction"):
        DiffuserConfig(prediction="v")


def test_returns_to_go_are_discounted_sums_to_the_episode_end():
    episodes = [Episode(observations=np.zeros((n + 1, D), np.float32), actions=np.zeros((n, A), np.float32),
                        rewards=np.arange(1, n + 1, dtype=np.float32), terminations=np.r_[np.zeros(n - 1, bool), True],
                        truncations=np.zeros(n, bool)) for n in (3, 2)]
    data = EpisodeData(episodes, include_reward=True)
    g = returns_to_go(data.rewards, data, 0.5)
    # episode 1: rewards 1, 2, 3 -> 1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3; episode 2: 1, 2 -> 2, 2
    assert torch.allclose(g, torch.tensor([2.75, 3.5, 3.0, 2.0, 2.0]))
    sampler = make_sampler(_learner().batch_spec(), data)
    assert isinstance(sampler, WindowSampler)
    batch = sampler.sample(16, _generator())
    start = data.offsets[batch["episode"]] + batch["time"]
    assert torch.allclose(batch["return_to_go"], returns_to_go(data.rewards, data, 0.99)[start])
    with pytest.raises(ValueError, match="need rewards"):
        WindowSampler(EpisodeData(episodes), 4, discount=0.9)


def test_each_loss_reaches_only_its_own_network():
    for mode, second in (("diffuser", "value"), ("decision_diffuser", "inverse_dynamics")):
        learner = _learner(mode).train()
        n, H = 8, learner.config.horizon
        batch = {"observation": torch.randn(n, H, D), "next_observation": torch.randn(n, H, D),
                 "action": torch.rand(n, H, A) * 2 - 1, "mask": torch.ones(n, H), "return_to_go": torch.randn(n)}
        learner.update(batch)  # sets the return range
        losses = learner.losses(batch, _generator())
        for name, owner in (("diffusion_loss", "denoiser"), (f"{second}_loss", second)):
            learner.zero_grad(set_to_none=True)
            losses[name].backward(retain_graph=True)
            owners = {k.split(".")[0] for k, p in learner.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
            assert owners == {owner}, (name, owners)
        assert all(not p.requires_grad for p in learner.ema.parameters())


def test_bad_settings_are_refused_with_what_is_expected():
    with pytest.raises(ValueError, match="divisible"):
        DiffuserConfig(horizon=10, unet_dims=[8, 16, 32])
    with pytest.raises(ValueError, match="mode"):
        DiffuserConfig(mode="trajectory_transformer")
    with pytest.raises(ValueError, match="sampling_steps"):
        DiffuserConfig(diffusion_steps=10, sampling_steps=20)
    with pytest.raises(ValueError, match="replan_every"):
        DiffuserConfig(horizon=8, unet_dims=[8, 16], replan_every=8)
    with pytest.raises(ValueError, match="divisible"):
        TemporalUNet(6, 3, (8, 16, 32))
    with pytest.raises(KeyError, match="return_to_go"):
        _learner().update({"observation": torch.zeros(2, 8, D)})


def _line_episodes(n_episodes: int, rng: np.random.Generator) -> list[Episode]:
    """A 1-D point: x' = x + 0.1 a, reward -|x'|; a quarter of the episodes head for 0, the rest wander."""
    episodes = []
    for e in range(n_episodes):
        x = rng.uniform(-1.0, 1.0)
        xs, actions = [x], []
        for _ in range(20):
            a = np.clip(-4.0 * x + rng.normal(0, 0.3), -1, 1) if e % 4 == 0 else rng.uniform(-1, 1)
            x = x + 0.1 * a
            xs.append(x)
            actions.append([a])
        obs = np.asarray(xs, np.float32)[:, None]
        episodes.append(Episode(observations=obs, actions=np.asarray(actions, np.float32),
                                rewards=-np.abs(obs[1:, 0]), terminations=np.zeros(20, bool),
                                truncations=np.r_[np.zeros(19, bool), True]))
    return episodes


def _final_distances(learner: DiffuserLearner) -> float:
    finals = []
    for start in np.linspace(-0.9, 0.9, 8):
        learner.reset()
        x = float(start)
        for _ in range(20):
            x += 0.1 * float(learner.act(torch.tensor([[x]], dtype=torch.float32))[0, 0])
        finals.append(abs(x))
    return float(np.mean(finals))


@pytest.mark.parametrize("mode", ["select", "decision_diffuser"])
def test_a_tiny_planner_solves_a_one_dimensional_task(mode):
    """Select: the best of 8 plans by value brings every start near 0, one unranked plan does
    not; Decision Diffuser: plans asked for the highest return do, plans asked for the lowest
    do not (a planner that ignores its value or its condition fails)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data = EpisodeData(_line_episodes(60, rng), include_reward=True)
    config = DiffuserConfig(mode=mode, horizon=8, unet_dims=[16, 32], hidden_dims=[64], diffusion_steps=20, sampling_steps=5,
                            samples=8 if mode == "select" else 1, replan_every=2, learning_rate=1e-3, target_return=1.0,
                            guidance_weight=3.0, action_weight=1.0)
    learner = DiffuserLearner(config, 1, 1)
    learner.prepare(data.transition_observations())
    sampler = make_sampler(learner.batch_spec(), data)
    generator = _generator(0)
    for _ in range(400):
        learner.update(sampler.sample(64, generator))
    learner.eval()
    good = _final_distances(learner)
    if mode == "select":
        learner.config.samples = 1
    else:
        learner.config.target_return = 0.0
    worse = _final_distances(learner)
    # wandering episodes end at |x| ~ 0.5 on average (measured with x0 prediction: select 0.04 against 0.35)
    assert good < 0.15 and worse > 2.0 * good, (good, worse)


def test_aligndiff_guides_towards_the_asked_attributes_and_replans_when_they_change():
    learner = _learner("aligndiff", attributes=2, attribute_hidden=8, attribute_members=1, samples=6, replan_every=4)
    state = torch.randn(2, D, generator=_generator(3))
    condition = torch.tensor([[0.9, 0.1, 1.0, 0.0], [0.2, 0.7, 1.0, 1.0]])
    y = condition.repeat_interleave(6, 0)
    # w = 0 is the unconditional model: the zero condition (no attribute asked); w = 1 the conditional one
    unconditional = _manual_ddim(learner, state, 6, lambda x, k: learner.ema(x, k, torch.zeros_like(y)))
    conditional = _manual_ddim(learner, state, 6, lambda x, k: learner.ema(x, k, y))
    # (both branches run in one batch: float32 sums in another order, through 5 DDIM steps: up to
    # 1e-5 on an AVX2 CPU, 1.4e-4 on an AVX-512 one; the two models' plans differ by 1.3)
    assert torch.allclose(learner.plan(state, guidance=0.0, generator=_generator(5), keep_all=True, condition=condition),
                          unconditional, atol=1e-3)
    assert torch.allclose(learner.plan(state, guidance=1.0, generator=_generator(5), keep_all=True, condition=condition),
                          conditional, atol=1e-3)
    assert not torch.allclose(unconditional, conditional, atol=1e-2)
    # the plan kept is the one whose predicted attributes are nearest the asked ones, over the mask
    learner.attribute_model.forward = lambda states: torch.stack([states[:, :, 0].mean(1), states[:, :, 1].mean(1)], -1)
    plans = learner.plan(state, generator=_generator(5), keep_all=True, condition=condition)
    best = learner.plan(state, generator=_generator(5), condition=condition)
    for row in range(2):
        s = plans[row, :, :, :D] * (learner.normalizer.std + learner.normalizer.eps) + learner.normalizer.mean
        predicted = torch.stack([s[:, :, 0].mean(1), s[:, :, 1].mean(1)], -1)
        error = ((predicted - condition[row, :2]) ** 2 * condition[row, 2:]).sum(-1)
        assert torch.equal(best[row], plans[row, error.argmin()])
    learner.reset()
    learner.act(state, condition)
    first = learner._plan.clone()
    learner.act(state, condition)  # same targets: the plan is kept
    assert torch.equal(learner._plan, first)
    learner.act(state, condition.flip(0))  # new targets mid-episode: planned for at once
    assert not torch.equal(learner._plan, first) and learner._plan_step == 1
    with pytest.raises(ValueError, match="condition"):
        learner.act(state)


def test_aligndiff_training_conditions_mask_attributes_at_the_configured_rate():
    learner = _learner("aligndiff", attributes=3, attribute_hidden=8, attribute_members=1, attribute_dropout=0.3,
                       condition_dropout=0.25)
    condition = learner.training_condition(torch.randn(4000, 8, D), _generator())
    values, mask = condition[:, :3], condition[:, 3:]
    assert set(mask.unique().tolist()) <= {0.0, 1.0} and torch.all(values[mask == 0] == 0)
    assert abs(float(mask.mean()) - 0.7 * 0.75) < 0.02  # kept: (1 - attribute_dropout)(1 - condition_dropout)
    assert abs(float((mask.sum(1) == 0).float().mean()) - (0.25 + 0.75 * 0.3**3)) < 0.02
    assert values.min() >= 0.0 and values.max() <= 1.0
    with pytest.raises(ValueError, match="attributes"):
        DiffuserConfig(mode="aligndiff")
