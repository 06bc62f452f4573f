"""The diagnosis of a trained IQL run: per-transition quantities against the paper's equations,
and on a task with expert and random behaviour, the expert carrying the actor's weight."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embodied.diagnosis import diagnose, diagnosis_lines, expectile_balance, transition_diagnostics
from policies import make_learner
from policies.data import EpisodeData, TransitionSampler
from policies.iql import IQLConfig, IQLLearner
from tests.test_learners import _line_episode


def test_transition_diagnostics_follow_iql_equations():
    torch.manual_seed(0)
    config = IQLConfig(hidden_dims=[16], expectile=0.8, temperature=2.0, discount=0.9, max_weight=3.0,
                       reward_scale=2.0, reward_bias=-0.5)
    learner = IQLLearner(config, 3, 2)
    learner.normalizer.mean.fill_(0.5)
    learner.normalizer.std.fill_(2.0)
    g = torch.Generator().manual_seed(1)
    obs, next_obs = torch.randn(32, 3, generator=g), torch.randn(32, 3, generator=g)
    action, reward = torch.rand(32, 2, generator=g) * 2 - 1, torch.randn(32, generator=g)
    terminal = (torch.rand(32, generator=g) < 0.2).float()
    out = learner.transition_diagnostics(obs, action, reward, next_obs, terminal)
    with torch.no_grad():
        s, s2 = (obs - 0.5) / (2.0 + learner.normalizer.eps), (next_obs - 0.5) / (2.0 + learner.normalizer.eps)
        u = torch.min(*learner.target_critic(s, action)) - learner.value(s).squeeze(-1)
        y = 2.0 * reward - 0.5 + 0.9 * (1 - terminal) * learner.value(s2).squeeze(-1)  # Eq. 6 target
        td = torch.min(*learner.critic(s, action)) - y
        log_prob = learner.actor.distribution(s).log_prob(action).sum(-1)
    assert torch.allclose(out["advantage"], u, atol=1e-6)
    assert torch.allclose(out["weight"], torch.exp(2.0 * u).clamp(max=3.0), atol=1e-6)  # Eq. 7, capped
    assert torch.allclose(out["target"], y, atol=1e-6) and torch.allclose(out["td_error"], td, atol=1e-6)
    assert torch.allclose(out["log_prob"], log_prob, atol=1e-5)


def test_the_diagnosis_shows_the_expert_carrying_the_weight_after_training():
    rng = np.random.default_rng(0)
    expert = [_line_episode(lambda x: -np.sign(x), rng.uniform(-1, 1), name="expert") for _ in range(20)]
    random = [_line_episode(lambda x: rng.uniform(-1, 1), rng.uniform(-1, 1), name="random") for _ in range(60)]
    episodes = expert + random
    data = EpisodeData(episodes, include_reward=True)
    torch.manual_seed(0)
    learner = make_learner(IQLConfig(hidden_dims=[64, 64]), 1, 1)
    learner.prepare(data.transition_observations(), total_steps=800)
    sampler, generator = TransitionSampler(data), torch.Generator().manual_seed(0)
    for _ in range(800):
        learner.update(sampler.sample(256, generator))
    diagnosis = diagnose(learner, data, data.rewards, episodes)
    rows = diagnosis["by_behaviour"]
    assert set(rows) == {"expert", "random"}
    assert rows["expert"]["transition_share"] == pytest.approx(0.25)
    assert rows["expert"]["weight_share"] + rows["random"]["weight_share"] == pytest.approx(1.0)
    assert rows["expert"]["weight_share"] > rows["expert"]["transition_share"] + 0.03, rows  # filtered towards the expert
    assert rows["expert"]["advantage_mean"] > rows["random"]["advantage_mean"]
    values = transition_diagnostics(learner, data, data.rewards)
    w = values["weight"]
    assert diagnosis["effective_sample_share"] == pytest.approx(w.sum() ** 2 / (len(w) * (w ** 2).sum()))
    assert diagnosis["negative_residual_share"] == pytest.approx(float((values["advantage"] < 0).mean()))
    assert diagnosis["expectile_balance"] == pytest.approx(expectile_balance(values["advantage"], 0.7))
    assert "| expert | 0.250 |" in "\n".join(diagnosis_lines(diagnosis))
    with pytest.raises(ValueError, match="one per transition"):
        diagnose(learner, data, data.rewards[:-1], episodes)


def test_the_expectile_balance_is_zero_at_the_expectile_and_not_at_the_quantile():
    """Eq. 5's minimiser m of E|tau - 1(q < m)| (q - m)^2 balances tau E[(q-m)+] = (1-tau) E[(q-m)-];
    on a skewed sample its share of negative residuals is far from 1 - tau."""
    q = np.random.default_rng(0).exponential(1.0, 20000)
    tau = 0.7
    lo, hi = float(q.min()), float(q.max())
    for _ in range(100):  # bisection on the loss's derivative, increasing in m
        m = (lo + hi) / 2
        slope = np.sum(np.where(q < m, 1 - tau, tau) * (m - q))
        lo, hi = (m, hi) if slope < 0 else (lo, m)
    assert expectile_balance(q - m, tau) == pytest.approx(0.0, abs=1e-9)
    assert abs(float((q - m < 0).mean()) - (1 - tau)) > 0.2  # the quantile rule does not hold here
    quantile = float(np.quantile(q, 1 - tau))
    assert expectile_balance(q - quantile, tau) > 0.1   # V at the 0.3-quantile sits below the expectile
    assert expectile_balance(q - q.max(), tau) == pytest.approx(-1.0)
    assert expectile_balance(np.zeros(4), tau) == 0.0
