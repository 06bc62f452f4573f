"""Soft Actor-Critic: the equations, which loss reaches which network, and temperature tuning."""

from __future__ import annotations

import math

import pytest
import torch

from policies.sac import SACConfig, SACLearner


def _batch(n: int = 64, d: int = 5, a: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"observation": torch.randn(n, d, generator=g), "action": torch.rand(n, a, generator=g) * 2 - 1,
            "reward": torch.randn(n, generator=g), "next_observation": torch.randn(n, d, generator=g),
            "terminal": (torch.rand(n, generator=g) < 0.2).float()}


def _grads(params) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_each_sac_loss_reaches_only_its_own_network():
    learner = SACLearner(SACConfig(hidden_dims=[16, 16]), 5, 2)
    b = _batch()
    owners = {"critic_loss": learner.critic.parameters, "actor_loss": learner.actor.parameters,
              "temperature_loss": lambda: [learner.log_alpha]}
    for name, own in owners.items():
        learner.zero_grad(set_to_none=True)
        learner.losses(b["observation"], b["action"], b["reward"], b["next_observation"], b["terminal"])[name].backward()
        assert _grads(own()), name
        others = [p for key, params in owners.items() if key != name for p in params()]
        assert not _grads(others) and not _grads(learner.target_critic.parameters()), name


def test_sac_losses_match_the_paper_equations():
    config = SACConfig(hidden_dims=[16, 16], initial_temperature=0.3, discount=0.9, reward_scale=2.0)
    learner = SACLearner(config, 5, 2)
    with torch.no_grad():  # targets that differ from the critics, so using the wrong one fails
        for p in learner.target_critic.parameters():
            p.add_(0.1 * torch.randn_like(p))
    b = _batch()
    obs, act, rew, nxt, term = (b[k] for k in ("observation", "action", "reward", "next_observation", "terminal"))
    generator_state = learner.noise.get(obs.device).get_state()
    out = learner.losses(obs, act, rew, nxt, term)
    # the same noise, drawn in the same order: a' for s', then a~ for s
    g = torch.Generator().set_state(generator_state)
    alpha = 0.3
    with torch.no_grad():
        def sample(o):
            mean, log_std = learner.actor(o)
            eps = torch.randn(mean.shape, generator=g)
            u = mean + log_std.exp() * eps
            normal = torch.distributions.Normal(mean, log_std.exp())
            # change of variables through tanh: log pi(a) = log N(u) - sum log(1 - tanh(u)^2)
            return torch.tanh(u), (normal.log_prob(u) - torch.log(1 - torch.tanh(u) ** 2)).sum(-1)

        a2, logp2 = sample(nxt)
        y = 2.0 * rew + 0.9 * (1 - term) * (torch.min(*learner.target_critic(nxt, a2)) - alpha * logp2)
        q1, q2 = learner.critic(obs, act)
        a_new, logp = sample(obs)
        actor = (alpha * logp - torch.min(*learner.critic(obs, a_new))).mean()
        temperature = -(alpha * (logp + -2.0)).mean()  # H_bar = -A
    assert torch.allclose(out["critic_loss"], ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean(), rtol=1e-4, atol=1e-5)
    assert torch.allclose(out["actor_loss"], actor, rtol=1e-4, atol=1e-5)
    assert torch.allclose(out["temperature_loss"], temperature, rtol=1e-4, atol=1e-5)
    assert torch.allclose(out["entropy"], -logp.mean(), rtol=1e-4, atol=1e-5)


def test_temperature_tuning_drives_the_entropy_to_its_target():
    """A one-step task (every transition terminal) with reward -|a - a*|^2: the critic learns it,
    the actor narrows around a*, and alpha settles where the policy's entropy is H_bar."""
    torch.manual_seed(0)
    d, a = 3, 2
    results = {}
    for target in (-1.0, -3.0):
        learner = SACLearner(SACConfig(hidden_dims=[32, 32], target_entropy=target, actor_learning_rate=1e-3,
                                       critic_learning_rate=1e-3, temperature_learning_rate=3e-3), d, a)
        g = torch.Generator().manual_seed(1)
        best = torch.tensor([0.5, -0.3])
        for _ in range(2500):
            obs = torch.randn(128, d, generator=g)
            action = torch.rand(128, a, generator=g) * 2 - 1
            reward = -((action - best) ** 2).sum(-1) * 10
            losses = learner.update({"observation": obs, "action": action, "reward": reward,
                                     "next_observation": obs, "terminal": torch.ones(128)})
        entropies = []
        for _ in range(20):
            with torch.no_grad():
                _, logp = learner.actor.sample(torch.randn(256, d, generator=g), g)
            entropies.append(-logp.mean())
        results[target] = (float(torch.stack(entropies).mean()), learner.temperature)
        assert (learner.act(torch.randn(64, d, generator=g)) - best).abs().mean() < 0.1
        assert math.isfinite(float(losses["critic_loss"]))
    print(results)
    for target, (entropy, _) in results.items():
        assert entropy == pytest.approx(target, abs=0.35), results
    # a lower entropy target takes a lower temperature
    assert results[-3.0][1] < results[-1.0][1]


def test_fixed_temperature_is_not_tuned_and_bad_configs_are_refused():
    learner = SACLearner(SACConfig(hidden_dims=[8], autotune=False, initial_temperature=0.2), 4, 2)
    for _ in range(5):
        out = learner.update(_batch(d=4))
    assert learner.temperature == pytest.approx(0.2) and float(out["temperature_loss"]) == 0.0
    with pytest.raises(KeyError, match="reward"):
        learner.update({k: v for k, v in _batch(d=4).items() if k != "reward"})
    with pytest.raises(ValueError, match="initial_temperature"):
        SACConfig(initial_temperature=0.0)
    with pytest.raises(ValueError, match="log_std_min"):
        SACConfig(log_std_min=2.0, log_std_max=-2.0)
