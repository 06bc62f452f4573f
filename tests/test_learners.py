"""Learner tests: IQL's losses touch only their own networks, one contract over every learner,
and IQL improves on its data where behaviour cloning cannot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embodied.data import Episode
from embodied.fit import fit
from embodied.learners import LearnerPolicy, load_learner, save_learner
from embodied.loggers import Logger
from policies import LEARNERS, config_from_dict, make_learner
from policies.bc import BCConfig
from policies.data import EpisodeData, TransitionSampler, make_sampler
from policies.iql import IQLConfig, IQLLearner
from policies.iql.model import expectile_loss

D, A = 5, 2


def _batch(n: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "observation": torch.randn(n, D, generator=g),
        "action": torch.rand(n, A, generator=g) * 2 - 1,
        "reward": torch.randn(n, generator=g),
        "next_observation": torch.randn(n, D, generator=g),
        "terminal": (torch.rand(n, generator=g) < 0.1).float(),
    }


def _small(name: str):
    return config_from_dict(name, {"hidden_dims": [32, 32]})


def test_expectile_loss_matches_the_formula():
    diff = torch.tensor([-2.0, -0.5, 0.0, 1.0, 3.0])
    tau = 0.7
    expected = np.mean([(1 - tau) * 4.0, (1 - tau) * 0.25, 0.0, tau * 1.0, tau * 9.0])
    assert torch.isclose(expectile_loss(diff, tau), torch.tensor(expected, dtype=torch.float32))


def _grad_owners(learner: IQLLearner, loss: torch.Tensor) -> set[str]:
    learner.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return {name.split(".")[0] for name, p in learner.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_each_iql_loss_reaches_only_its_own_network():
    torch.manual_seed(0)
    learner = IQLLearner(IQLConfig(hidden_dims=[32, 32]), D, A)
    b = _batch()
    obs, next_obs = learner.normalizer(b["observation"]), learner.normalizer(b["next_observation"])
    losses = learner.losses(obs, b["action"], b["reward"], next_obs, b["terminal"])
    assert _grad_owners(learner, losses["value_loss"]) == {"value"}
    assert _grad_owners(learner, losses["critic_loss"]) == {"critic"}
    assert _grad_owners(learner, losses["actor_loss"]) == {"actor"}
    assert not losses["advantage"].requires_grad
    assert all(not p.requires_grad for p in learner.target_critic.parameters())


def test_iql_losses_match_the_paper_equations():
    torch.manual_seed(0)
    config = IQLConfig(hidden_dims=[16], expectile=0.8, temperature=2.0, discount=0.9)
    learner = IQLLearner(config, D, A)
    b = _batch(16)
    losses = learner.losses(b["observation"], b["action"], b["reward"], b["next_observation"], b["terminal"])
    with torch.no_grad():
        q_hat = torch.min(*learner.target_critic(b["observation"], b["action"]))
        v = learner.value(b["observation"]).squeeze(-1)
        u = q_hat - v
        value = torch.mean(torch.abs(0.8 - (u < 0).float()) * u**2)  # Eq. 5
        y = b["reward"] + 0.9 * (1 - b["terminal"]) * learner.value(b["next_observation"]).squeeze(-1)
        q1, q2 = learner.critic(b["observation"], b["action"])
        critic = ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()  # Eq. 6
        dist = torch.distributions.Normal(learner.actor.mean(b["observation"]), learner.actor.log_std.exp())
        actor = -(torch.exp(2.0 * u).clamp(max=100) * dist.log_prob(b["action"]).sum(-1)).mean()  # Eq. 7
    assert torch.allclose(losses["value_loss"], value, atol=1e-6)
    assert torch.allclose(losses["critic_loss"], critic, atol=1e-5)
    assert torch.allclose(losses["actor_loss"], actor, atol=1e-5)


def test_targets_follow_the_critics_by_polyak_averaging():
    torch.manual_seed(0)
    learner = IQLLearner(IQLConfig(hidden_dims=[32, 32], tau=0.1), D, A)
    before = [p.clone() for p in learner.target_critic.parameters()]
    learner.update(_batch())
    for old, target, critic in zip(before, learner.target_critic.parameters(), learner.critic.parameters()):
        assert torch.allclose(target, 0.9 * old + 0.1 * critic, atol=1e-6)


def test_iql_refuses_batches_without_rewards_and_bad_configs():
    learner = IQLLearner(IQLConfig(hidden_dims=[8]), D, A)
    batch = _batch()
    del batch["reward"]
    with pytest.raises(KeyError, match="algo.reward=gt"):
        learner.update(batch)
    with pytest.raises(ValueError, match="expectile"):
        IQLConfig(expectile=1.0)
    with pytest.raises(ValueError, match="preset"):
        IQLConfig(preset="atari")
    assert (IQLConfig(preset="antmaze").expectile, IQLConfig(preset="antmaze").temperature) == (0.9, 10.0)


#: Every registered learner, plus the variants that change its batch or its act(): the contract
#: runs over each (a new learner in policies.LEARNERS is picked up automatically).
VARIANTS = {**{name: {} for name in sorted(LEARNERS)}, "bc_goal": {"name": "bc", "goal_conditioned": True},
            "decision_diffuser": {"name": "diffuser", "mode": "decision_diffuser", "horizon": 8, "unet_dims": [8, 16]},
            "diffuser_select": {"name": "diffuser", "mode": "select", "horizon": 8, "unet_dims": [8, 16]},
            "bc_attributes": {"name": "bc", "attributes": 2, "attribute_horizon": 4, "attribute_hidden": 8, "attribute_members": 1},
            "aligndiff": {"name": "diffuser", "mode": "aligndiff", "attributes": 2, "horizon": 8, "unet_dims": [8, 16],
                          "attribute_hidden": 8, "attribute_members": 1}}


def _variant(key: str):
    values = dict(VARIANTS[key])
    return config_from_dict(values.pop("name", key), {"hidden_dims": [32, 32], **values})


def _contract_data() -> EpisodeData:
    rng = np.random.default_rng(0)
    episodes = []
    for e in range(6):
        n = 12 + e
        episodes.append(Episode(observations=rng.normal(size=(n + 1, D)).astype(np.float32),
                                actions=rng.uniform(-1, 1, (n, A)).astype(np.float32),
                                rewards=rng.normal(size=n).astype(np.float32), terminations=np.r_[np.zeros(n - 1, bool), e % 2 == 0],
                                truncations=np.r_[np.zeros(n - 1, bool), e % 2 == 1]))
    return EpisodeData(episodes, include_reward=True)


def _fit(learner, data, folder, steps, evaluate=None, eval_every=0):
    costs = (torch.arange(data.size) % 7 == 0).float()  # the judges' per-step costs, for learners that take them
    sampler = make_sampler(learner.batch_spec(), data, costs=costs)
    return fit(learner, sampler, steps=steps, batch_size=16, checkpoints=folder, generator=torch.Generator().manual_seed(0),
               make_logger=lambda step: Logger(), prepare=lambda: learner.prepare(data.transition_observations(), steps),
               evaluate=evaluate, eval_every=eval_every, log_every=1, checkpoint_every=2, progress=False)


@pytest.mark.parametrize("key", sorted(VARIANTS))
def test_learner_contract_fit_save_load_act_resume(tmp_path, key):
    """Through embodied.fit: train, checkpoint, load from the folder alone, act the same (with a
    condition when the learner takes one), reset, and resume bit-exact after a crash."""
    data = _contract_data()
    torch.manual_seed(0)
    learner = make_learner(_variant(key), D, A)
    spec = learner.batch_spec()
    assert spec.reward == learner.needs_reward
    result = _fit(learner, data, tmp_path / "a", steps=6)
    assert result.step == 6 and result.checkpoint.name == "00000006" and not result.resumed

    loaded, checkpoint = load_learner(tmp_path / "a")
    assert checkpoint.step == 6 and type(loaded) is type(learner) and loaded.condition_dim == learner.condition_dim
    obs = data.transition_observations()[:5]
    # a goal observation, a latent z, ...: any finite (5, C) the learner declares
    condition = torch.randn(5, learner.condition_dim, generator=torch.Generator().manual_seed(1)) if learner.condition_dim else None
    assert torch.equal(loaded.act(obs, condition), learner.eval().act(obs, condition))
    actions = loaded.act(obs, condition)
    assert actions.shape == (5, A) and actions.abs().max() <= 1.0
    explored = loaded.explore(obs, condition)
    assert explored.shape == (5, A) and explored.abs().max() <= 1.0
    loaded.reset()
    policy = LearnerPolicy(loaded, condition=None if condition is None else condition[0].numpy())
    policy.reset(0)
    assert policy.act(obs[0].numpy()).shape == (A,)
    if learner.condition_dim:
        with pytest.raises(ValueError, match="condition"):
            loaded.act(obs)  # a conditioned learner needs its condition
        with pytest.raises(ValueError, match="condition"):
            loaded.act(obs, condition[:, :1])
    else:
        with pytest.raises(ValueError, match="not conditioned"):
            loaded.act(obs, torch.zeros(5, 3))

    # crash after step 3 (a checkpoint at step 2), resume with fresh objects: the same weights as
    # the uninterrupted run above
    def crash(final):
        raise RuntimeError("killed")

    torch.manual_seed(0)
    first = make_learner(_variant(key), D, A)
    with pytest.raises(RuntimeError, match="killed"):
        _fit(first, data, tmp_path / "b", steps=6, evaluate=crash, eval_every=3)
    torch.manual_seed(123)
    second = make_learner(_variant(key), D, A)
    resumed = _fit(second, data, tmp_path / "b", steps=6)
    assert resumed.resumed and resumed.start_step == 2
    for name, value in learner.state_dict().items():
        assert torch.equal(value, second.state_dict()[name]), name


def test_goal_conditioned_bc_trains_on_future_observations():
    data = _contract_data()
    learner = make_learner(_variant("bc_goal"), D, A)
    assert learner.batch_spec().kind == "future" and learner.condition_dim == D
    batch = make_sampler(learner.batch_spec(), data).sample(8, torch.Generator().manual_seed(0))
    del batch["future_observation"]
    with pytest.raises(KeyError, match="future_observation"):
        learner.update(batch)


def _line_episode(policy, x0: float, steps: int = 20, name: str = "") -> Episode:
    """1-D point: x' = clip(x + 0.1 a, -1, 1), reward -|x'| (the goal is x = 0)."""
    xs, actions, rewards = [x0], [], []
    for _ in range(steps):
        a = float(policy(xs[-1]))
        xs.append(float(np.clip(xs[-1] + 0.1 * a, -1, 1)))
        actions.append(a)
        rewards.append(-abs(xs[-1]))
    return Episode(observations=np.asarray(xs, np.float32)[:, None], actions=np.asarray(actions, np.float32)[:, None],
                   rewards=np.asarray(rewards, np.float32), terminations=np.zeros(steps, bool),
                   truncations=np.r_[np.zeros(steps - 1, bool), True], policy=name)


def test_iql_learns_a_tiny_offline_task_from_random_data():
    """From uniformly random behaviour, IQL learns to move towards the goal; BC cannot."""
    rng = np.random.default_rng(0)
    data = [_line_episode(lambda x: rng.uniform(-1, 1), rng.uniform(-1, 1)) for _ in range(100)]
    sampler = TransitionSampler(EpisodeData(data, include_reward=True))
    final = {}
    for config in (IQLConfig(hidden_dims=[64, 64]), BCConfig(hidden_dims=[64, 64])):
        torch.manual_seed(0)
        learner = make_learner(config, 1, 1)
        learner.prepare(sampler.data.transition_observations(), total_steps=800)
        generator = torch.Generator().manual_seed(0)
        for _ in range(800):
            learner.update(sampler.sample(256, generator))
        policy = LearnerPolicy(learner.eval())
        starts = np.linspace(-0.9, 0.9, 10)
        final[config.name] = np.mean([abs(_line_episode(lambda x: policy.act(np.array([x]))[0], x0).observations[-1, 0])
                                       for x0 in starts])
    random_final = np.mean([abs(ep.observations[-1, 0]) for ep in data])
    assert final["iql"] < 0.3 < final["bc"], final
    assert final["iql"] < 0.5 * random_final


@pytest.mark.slow
def test_compiled_iql_computes_the_same_update_as_eager():
    """algo.learner.compile=true: torch.compile'd losses give the eager losses and weights (CPU inductor)."""
    from policies.iql import IQLConfig

    torch.manual_seed(0)
    batch = {"observation": torch.randn(64, 5), "action": torch.rand(64, 2) * 2 - 1, "reward": torch.randn(64),
             "next_observation": torch.randn(64, 5), "terminal": torch.zeros(64)}
    eager = make_learner(IQLConfig(hidden_dims=[32, 32]), 5, 2)
    compiled = make_learner(IQLConfig(hidden_dims=[32, 32], compile=True), 5, 2)
    compiled.load_state_dict(eager.state_dict())
    for learner in (eager, compiled):
        learner.prepare(batch["observation"], total_steps=10)
    for _ in range(2):
        expected, got = eager.update(batch), compiled.update(batch)
        for key in expected:
            assert torch.allclose(expected[key], got[key], rtol=1e-4, atol=1e-5), key
    assert eager.state_dict().keys() == compiled.state_dict().keys()
    for name, value in eager.state_dict().items():
        assert torch.allclose(value, compiled.state_dict()[name], rtol=1e-4, atol=1e-5), name


def test_evaluation_passes_the_condition_of_a_conditioned_learner(compose_config, tmp_path):
    """make_policy (evaluate, deploy, benchmark) hands a goal to a goal-conditioned learner's act
    on every step of a PointMass episode, and refuses a missing or misplaced condition."""
    import envs
    from embodied.data import rollout
    from embodied.tasks import make_policy

    task = compose_config(["+task=pointmass"]).task
    env = envs.make("embodied/PointMass-v0")
    learner = make_learner(config_from_dict("bc", {"hidden_dims": [16], "goal_conditioned": True}), 6, 2)
    save_learner(tmp_path, 1, learner, 6, 2)
    goal = [0.1, -0.1, 0.0, 0.0, 0.1, -0.1]
    policy, source = make_policy(task, checkpoint=str(tmp_path), device="cpu", condition=goal)
    episode = rollout(env, policy, seed=0)
    expected = learner.eval().act(torch.as_tensor(episode.observations[:-1]), torch.tensor([goal] * len(episode)))
    assert source.startswith("checkpoint") and np.allclose(episode.actions, expected.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="condition"):
        make_policy(task, checkpoint=str(tmp_path), device="cpu")
    with pytest.raises(ValueError, match="takes none"):
        make_policy(task, policy="expert", condition=goal)


def test_fit_saves_and_restores_a_replay_buffer_sampler(tmp_path):
    """A loop that trains from a replay buffer (online, continual) resumes with the buffer's
    contents from the checkpoint: the same weights as an uninterrupted run."""
    from policies.data import ReplayBuffer

    data = _contract_data()
    items = data.gather(torch.arange(data.size), ("observation", "action"))

    def run(folder, crash_at=None, fill=True):
        torch.manual_seed(0)
        learner = make_learner(_variant("bc"), D, A)
        buffer = ReplayBuffer(capacity=50, selection="reservoir")
        if fill:
            buffer.add(items, torch.Generator().manual_seed(1))

        def evaluate(final):
            raise RuntimeError("killed")

        fit(learner, buffer, steps=6, batch_size=8, checkpoints=folder, generator=torch.Generator().manual_seed(0),
            make_logger=lambda step: Logger(), prepare=lambda: learner.prepare(items["observation"], 6),
            evaluate=evaluate if crash_at else None, eval_every=crash_at or 0, checkpoint_every=2, progress=False)
        return learner, buffer

    reference, _ = run(tmp_path / "a")
    with pytest.raises(RuntimeError, match="killed"):
        run(tmp_path / "b", crash_at=3)
    resumed, buffer = run(tmp_path / "b", fill=False)  # an empty buffer: everything comes from the checkpoint
    assert len(buffer) == 50 and buffer.seen == data.size
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_the_final_evaluation_is_logged_once_whenever_the_job_is_killed(tmp_path):
    """Killed after the final evaluation was logged but before the last checkpoint, or after the
    last checkpoint: the rerun ends with one final-evaluation row and the same metrics."""
    import json

    from embodied.loggers import JsonlLogger

    data = _contract_data()
    calls = []

    class DiesAfterFinalRow(JsonlLogger):
        def log(self, metrics, step):
            values = super().log(metrics, step)
            if step == 6 and any(k.startswith("eval/") for k in metrics):
                raise KeyboardInterrupt("killed")
            return values

    def run(folder, logger_class):
        learner = make_learner(_variant("bc"), D, A)

        def evaluate(final):
            calls.append(final)
            return {"success_rate": 0.5}

        return fit(learner, make_sampler(learner.batch_spec(), data), steps=6, batch_size=8, checkpoints=folder / "checkpoints",
                   generator=torch.Generator().manual_seed(0), evaluate=evaluate, checkpoint_every=4, progress=False,
                   make_logger=lambda step: logger_class(folder / "metrics.jsonl", step),
                   prepare=lambda: learner.prepare(data.transition_observations(), 6))

    def final_rows(folder):
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        return [r for r in rows if "eval/success_rate" in r]

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "a", DiesAfterFinalRow)  # killed before the last checkpoint: resumes from step 4
    assert run(tmp_path / "a", JsonlLogger).final_metrics == {"success_rate": 0.5}
    assert [r["step"] for r in final_rows(tmp_path / "a")] == [6]
    done = run(tmp_path / "b", JsonlLogger)
    calls.clear()
    again = run(tmp_path / "b", JsonlLogger)  # killed after the last checkpoint: nothing to do
    assert calls == [] and again.final_metrics == done.final_metrics and again.resumed
    assert [r["step"] for r in final_rows(tmp_path / "b")] == [6]


def _cost_batch(n: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    batch = _batch(n, seed)
    batch["cost"] = (torch.rand(n, generator=torch.Generator().manual_seed(seed + 1)) < 0.3).float()
    return batch


def test_each_iql_safe_loss_reaches_only_its_own_network():
    from policies.iql_safe import IQLSafeConfig, IQLSafeLearner

    torch.manual_seed(0)
    learner = IQLSafeLearner(IQLSafeConfig(hidden_dims=[32, 32]), D, A)
    b = _cost_batch()
    obs, next_obs = learner.normalizer(b["observation"]), learner.normalizer(b["next_observation"])
    losses = learner.losses(obs, b["action"], b["reward"], next_obs, b["terminal"], b["cost"])
    assert _grad_owners(learner, losses["cost_critic_loss"]) == {"cost_critic"}
    assert _grad_owners(learner, losses["cost_value_loss"]) == {"cost_value"}
    assert _grad_owners(learner, losses["value_loss"]) == {"value"}
    assert _grad_owners(learner, losses["critic_loss"]) == {"critic"}
    assert _grad_owners(learner, losses["actor_loss"]) == {"actor"}
    assert all(not p.requires_grad for p in learner.target_cost_critic.parameters())
    with pytest.raises(KeyError, match="judges=\\[force\\]"):
        learner.update(_batch())


def test_iql_safe_losses_match_the_equations():
    from policies.iql_safe import IQLSafeConfig, IQLSafeLearner

    torch.manual_seed(0)
    config = IQLSafeConfig(hidden_dims=[16], cost_threshold=0.05, cost_expectile=0.2, cost_temperature=2.0,
                           cost_discount=0.9, temperature=1.5, max_weight=50.0)
    learner = IQLSafeLearner(config, D, A)
    b = _cost_batch()
    s, a, r, c, s2, d = b["observation"], b["action"], b["reward"], b["cost"], b["next_observation"], b["terminal"]
    losses = learner.losses(s, a, r, s2, d, c)
    with torch.no_grad():
        qc_hat = torch.max(*learner.target_cost_critic(s, a))
        vc = learner.cost_value(s).squeeze(-1)
        u = qc_hat - vc
        cost_value = torch.mean(torch.abs(0.2 - (u < 0).float()) * u ** 2)
        y = c + 0.9 * (1 - d) * learner.cost_value(s2).squeeze(-1)
        qc1, qc2 = learner.cost_critic(s, a)
        cost_critic = ((qc1 - y) ** 2).mean() + ((qc2 - y) ** 2).mean()
        adv = torch.min(*learner.target_critic(s, a)) - learner.value(s).squeeze(-1)
        w = torch.where(vc <= 0.05, (qc_hat <= 0.05).float() * torch.clamp(torch.exp(1.5 * adv), max=50.0),
                        torch.clamp(torch.exp(-2.0 * (qc_hat - vc)), max=50.0))
        actor = -(w * learner.actor.distribution(s).log_prob(a).sum(-1)).mean()
    assert torch.allclose(losses["cost_value_loss"], cost_value)
    assert torch.allclose(losses["cost_critic_loss"], cost_critic)
    assert torch.allclose(losses["actor_loss"], actor)
    assert losses["feasible"] == (vc <= 0.05).float().mean()
    with pytest.raises(ValueError, match="cost_expectile"):
        IQLSafeConfig(cost_expectile=0.0)


def test_iql_safe_keeps_to_the_feasible_actions_where_iql_takes_the_costly_best():
    """A one-step task: reward r = a, cost 1 when a > 0.3. IQL goes for the costly high
    actions; the cost-constrained learner stays below 0.3 and still prefers the higher of the
    free actions (the cost critic smooths the step at 0.3, so it stops short of it)."""
    from policies.iql_safe import IQLSafeConfig

    rng = np.random.default_rng(0)
    episodes, costs = [], []
    for _ in range(2000):
        x, a = rng.uniform(-1, 1), rng.uniform(-1, 1)
        episodes.append(Episode(np.array([[x], [x]], np.float32), np.array([[a]], np.float32), np.array([a], np.float32),
                                np.array([True]), np.array([False])))
        costs.append(float(a > 0.3))
    data = EpisodeData(episodes, include_reward=True)
    chosen = {}
    for config in (IQLConfig(hidden_dims=[64, 64], temperature=10.0),
                   IQLSafeConfig(hidden_dims=[64, 64], temperature=10.0)):
        torch.manual_seed(0)
        learner = make_learner(config, 1, 1)
        sampler = make_sampler(learner.batch_spec(), data, costs=torch.tensor(costs))
        learner.prepare(data.transition_observations(), total_steps=1500)
        generator = torch.Generator().manual_seed(0)
        for _ in range(1500):
            learner.update(sampler.sample(256, generator))
        chosen[config.name] = learner.eval().act(torch.linspace(-1, 1, 11)[:, None]).squeeze(-1)
    assert (chosen["iql"] > 0.6).all(), chosen
    # no cost anywhere, and better than imitating the feasible actions (their mean is -0.35)
    assert (chosen["iql_safe"] < 0.3).all() and chosen["iql_safe"].mean() > -0.25, chosen
