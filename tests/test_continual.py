"""Continual offline RL: the replay budget, model-based experience selection, dual behaviour
cloning, the configs, and a run killed inside a task and between tasks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from embodied import continual
from embodied.checkpoint import latest_checkpoint, load_checkpoint
from policies.data import MixedSampler, TaskReplayBuffer
from policies.oer.config import OERConfig
from policies.oer.mbes import fit_dynamics, mbes_select
from policies.oer.model import OERLearner
from tests.conftest import REPO


def _compose(overrides: list[str]):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="conf", version_base="1.3"):
            return compose(config_name="continual", overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


# -- the buffer -----------------------------------------------------------------------------------

def _items(task: int, n: int) -> dict[str, torch.Tensor]:
    return {"observation": torch.full((n, 3), float(task)), "rank": torch.arange(n, dtype=torch.float32)}


def test_buffer_never_exceeds_its_budget_and_keeps_each_tasks_first_ranked_rows():
    buffer = TaskReplayBuffer(budget=1200)
    for task in range(5):
        kept = buffer.add_task(task, _items(task, 1000))
        assert len(buffer) <= 1200
        share = 1200 // (task + 1)
        assert kept == min(1000, share)
        assert buffer.task_sizes() == {t: min(1000, share) for t in range(task + 1)}
        for t, items in buffer.tasks.items():  # the oldest give up their last-ranked rows
            assert torch.equal(items["rank"], torch.arange(min(1000, share), dtype=torch.float32))
            assert (items["observation"] == t).all()
    batch = buffer.sample(4096, torch.Generator().manual_seed(0))
    counts = torch.bincount(batch["observation"][:, 0].long(), minlength=5)
    assert counts.min() > 600  # uniform over what is held: equal shares, equal draws

    capped = TaskReplayBuffer(budget=2500, per_task=1000)
    for task in range(4):
        capped.add_task(task, _items(task, 3000))
        assert len(capped) <= 2500
    assert capped.task_sizes() == {0: 625, 1: 625, 2: 625, 3: 625}
    assert TaskReplayBuffer(budget=2500, per_task=400).share(3) == 400


def test_buffer_refuses_bad_input_and_restores_from_its_state():
    buffer = TaskReplayBuffer(budget=100)
    buffer.add_task(0, _items(0, 80))
    with pytest.raises(ValueError, match="already in the replay buffer"):
        buffer.add_task(0, _items(0, 10))
    with pytest.raises(ValueError, match="fields"):
        buffer.add_task(1, {"observation": torch.zeros(10, 4), "rank": torch.zeros(10)})
    with pytest.raises(ValueError, match="non-finite"):
        buffer.add_task(1, {"observation": torch.full((10, 3), float("nan")), "rank": torch.zeros(10)})
    with pytest.raises(ValueError, match="empty"):
        TaskReplayBuffer(budget=10).sample(2, torch.Generator())
    with pytest.raises(ValueError, match="budget"):
        TaskReplayBuffer(budget=-1)
    buffer.add_task(1, _items(1, 80))
    copy = TaskReplayBuffer(budget=100)
    copy.load_state_dict(buffer.state_dict())
    assert copy.task_sizes() == {0: 50, 1: 50}
    assert all(torch.equal(copy.tasks[t][k], buffer.tasks[t][k]) for t in (0, 1) for k in ("observation", "rank"))
    with pytest.raises(ValueError, match="budget"):
        TaskReplayBuffer(budget=99).load_state_dict(buffer.state_dict())


class _Current:
    def sample(self, batch_size, generator):
        return {"observation": torch.zeros(batch_size, 3), "rank": torch.full((batch_size,), -1.0)}


def test_mixed_sampler_joins_or_separates_replay():
    buffer = TaskReplayBuffer(budget=100)
    generator = torch.Generator().manual_seed(0)
    assert MixedSampler(_Current(), buffer).sample(8, generator)["rank"].eq(-1).all()  # nothing to replay yet
    buffer.add_task(0, _items(1, 50))
    joint = MixedSampler(_Current(), buffer, "joint", replay_fraction=0.25).sample(8, generator)
    assert joint["observation"].shape == (8, 3) and int((joint["rank"] >= 0).sum()) == 2
    separate = MixedSampler(_Current(), buffer, "separate").sample(8, generator)
    assert separate["rank"].eq(-1).all() and separate["replay_observation"].eq(1).all()
    assert separate["replay_rank"].shape == (8,)


# -- model-based experience selection ---------------------------------------------------------------

def _line_dataset():
    """States 0..9 on a line; at each state a transition with action -1 (listed first) and one with
    +1, next state s + a. A policy that always pushes +1 from state 0 visits 0, 1, 2, ..."""
    obs, act = [], []
    for x in range(10):
        for a in (-1.0, 1.0):
            obs.append([float(x)])
            act.append([a])
    return torch.tensor(obs), torch.tensor(act)


def test_mbes_keeps_the_transitions_the_policy_would_take_in_the_model():
    obs, act = _line_dataset()
    policy = lambda s: torch.ones(len(s), 1)  # noqa: E731
    model = lambda s, a: s + a  # noqa: E731  a perfect model
    start = torch.tensor([0])  # row 0: state 0
    ranking = mbes_select(obs, act, start, policy, model, count=6, rollout_length=6, generator=torch.Generator().manual_seed(0))
    assert obs[ranking, 0].tolist() == [0, 1, 2, 3, 4, 5]  # the policy's path, in rollout order
    assert act[ranking, 0].tolist() == [1.0] * 6  # never the -1 transitions beside them
    # More rows than one rollout: rollouts repeat and keep the next-nearest rows not kept before.
    stats = {}
    longer = mbes_select(obs, act, start, policy, model, count=15, rollout_length=3, generator=torch.Generator().manual_seed(0),
                         stats=stats)
    assert len(set(longer.tolist())) == 15 and obs[longer[:3], 0].tolist() == [0, 1, 2]
    assert stats == {"rollout_selected": 15.0}
    # the second rollout takes the next-nearest rows: further +1 rows along the path (state 3
    # is closer in normalised units than the -1 row at state 0)
    assert obs[longer[:6], 0].tolist() == [0, 1, 2, 3, 4, 5] and act[longer[:6], 0].tolist() == [1.0] * 6
    # A rollout stuck in one place (a policy that does not move) keeps that place's neighbours.
    still = mbes_select(obs, act, torch.tensor([18]), lambda s: torch.zeros(len(s), 1), model, count=4, rollout_length=4,
                        generator=torch.Generator().manual_seed(0))  # row 18: state 9, the end of the line
    assert sorted(obs[still, 0].tolist()) == [8.0, 8.0, 9.0, 9.0]
    with pytest.raises(ValueError, match="count"):
        mbes_select(obs, act, start, policy, model, count=21, rollout_length=3, generator=torch.Generator())


def test_learned_dynamics_follow_the_line_well_enough_to_select_the_same_path():
    obs, act = _line_dataset()
    torch.manual_seed(0)
    obs_many, act_many = obs.repeat(20, 1), act.repeat(20, 1)
    model, report = fit_dynamics(obs_many, act_many, obs_many + act_many, [32, 32], members=3, steps=400, batch_size=64,
                                 learning_rate=3e-3, generator=torch.Generator().manual_seed(0))
    assert report["dynamics_held_out_mse"] < 0.05
    assert torch.allclose(model(torch.tensor([[3.0]]), torch.tensor([[1.0]])), torch.tensor([[4.0]]), atol=0.2)
    ranking = mbes_select(obs, act, torch.tensor([0]), lambda s: torch.ones(len(s), 1), model, count=5, rollout_length=5,
                          generator=torch.Generator().manual_seed(0))
    assert obs[ranking, 0].tolist() == [0, 1, 2, 3, 4] and act[ranking, 0].tolist() == [1.0] * 5


# -- dual behaviour cloning ------------------------------------------------------------------------

def _dbc_batch(n: int = 16, d: int = 5, a: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"observation": torch.randn(n, d, generator=g), "action": torch.rand(n, a, generator=g) * 2 - 1,
            "reward": torch.randn(n, generator=g), "next_observation": torch.randn(n, d, generator=g),
            "terminal": torch.zeros(n), "replay_observation": torch.randn(n, d, generator=g),
            "replay_action": torch.rand(n, a, generator=g) * 2 - 1}


def _grads(module: torch.nn.Module) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_dbc_loss_reaches_only_the_continual_policy_and_iql_never_reaches_it():
    learner = OERLearner(OERConfig(hidden_dims=[16, 16], policy_hidden_dims=[16, 16]), 5, 2)
    batch = _dbc_batch()
    obs = learner.normalizer(batch["observation"])
    learner.dbc_loss(obs, learner.normalizer(batch["replay_observation"]), batch["replay_action"])["policy_loss"].backward()
    assert _grads(learner.policy)
    assert not any(_grads(m) for m in (learner.actor, learner.critic, learner.value, learner.target_critic))
    learner.zero_grad(set_to_none=True)
    losses = learner.losses(obs, batch["action"], batch["reward"], learner.normalizer(batch["next_observation"]), batch["terminal"])
    (losses["value_loss"] + losses["critic_loss"] + losses["actor_loss"]).backward()
    assert not _grads(learner.policy) and _grads(learner.actor) and _grads(learner.critic)


def test_dbc_loss_is_distillation_on_the_new_task_plus_cloning_of_the_replay():
    config = OERConfig(hidden_dims=[16, 16], policy_hidden_dims=[16, 16], distill_weight=0.5, replay_weight=2.0)
    learner = OERLearner(config, 5, 2)
    batch = _dbc_batch()
    obs, replay = batch["observation"], batch["replay_observation"]
    out = learner.dbc_loss(obs, replay, batch["replay_action"])
    with torch.no_grad():
        distill = ((learner.policy(obs) - learner.actor.mean(obs)) ** 2).mean()
        clone = ((learner.policy(replay) - batch["replay_action"]) ** 2).mean()
    assert torch.allclose(out["distill_loss"], distill) and torch.allclose(out["replay_bc_loss"], clone)
    assert torch.allclose(out["policy_loss"], 0.5 * distill + 2.0 * clone)
    no_replay = learner.dbc_loss(obs, None, None)
    assert float(no_replay["replay_bc_loss"]) == 0.0
    # Trained on replayed actions alone, the continual policy clones them; acting uses it.
    learner = OERLearner(OERConfig(hidden_dims=[16, 16], policy_hidden_dims=[32, 32], distill_weight=0.0), 5, 2)
    target = torch.tanh(batch["replay_observation"][:, :2])
    for _ in range(300):
        learner.update({**batch, "replay_action": target})
    assert (learner.act(batch["replay_observation"]) - target).abs().mean() < 0.1


def test_a_new_task_restarts_the_actor_schedule_from_the_configured_learning_rate():
    from policies.iql.config import IQLConfig
    from policies.iql.model import IQLLearner

    learner = IQLLearner(IQLConfig(hidden_dims=[8], learning_rate=1e-3), 5, 2)
    batch = {k: v for k, v in _dbc_batch().items() if not k.startswith("replay_")}
    for task in range(2):
        learner.set_total_steps(10)
        assert learner.actor_optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
        for _ in range(10):
            learner.update(batch)
        assert learner.actor_optimizer.param_groups[0]["lr"] < 1e-9  # decayed to 0 at the task's end
    assert learner.critic_optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


# -- separate heads per task -----------------------------------------------------------------------

def test_task_heads_pick_the_head_of_the_one_hot_and_leave_the_others_alone():
    from policies.networks import TaskHeads

    torch.manual_seed(0)
    net = TaskHeads(input_dim=6, output_dim=2, hidden_dims=[8], heads=3, task_start=3)
    x = torch.randn(5, 6)
    x[:, 3:] = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 1, 0]), 3).float()
    full = net.net(x).view(5, 3, 2)
    assert torch.equal(net(x), full[torch.arange(5), torch.tensor([0, 1, 2, 1, 0])])
    before = net(x).detach()
    with torch.no_grad():  # the last layer's rows of head 2 only
        net.net[-1].weight[4:6] += 1.0
    after = net(x)
    changed = (after - before).abs().sum(1) > 0
    assert changed.tolist() == [False, False, True, False, False]
    with pytest.raises(ValueError, match="heads"):
        TaskHeads(4, 2, [8], heads=3, task_start=2)


def test_heads_encoding_builds_iql_and_dbc_learners_with_a_head_per_task():
    for strategy in ("er", "oer"):
        cfg = _compose([f"strategy={strategy}", "continual.task_encoding=heads"])
        settings, parsed = continual.read_settings(cfg)
        learner = continual.build_learner(cfg, parsed, 39 + 5, 4, torch.device("cpu"), tasks=5)
        assert learner.config.task_heads == 5 and learner.config.expectile == 0.7 and learner.config.temperature == 0.5
        assert learner.actor.mean.heads == 5 and learner.critic.q1.heads == 5 and learner.value.heads == 5
        if strategy == "oer":
            assert learner.policy.heads == 5
        obs = torch.zeros(3, 44)
        obs[:, 39 + 2] = 1.0
        assert learner.act(obs).shape == (3, 4)
    flat = continual.build_learner(_compose(["strategy=er"]), continual.read_settings(_compose(["strategy=er"]))[1],
                                   44, 4, torch.device("cpu"))
    assert flat.config.task_heads == 0 and isinstance(flat.value, torch.nn.Sequential)


# -- configs ---------------------------------------------------------------------------------------

def test_continual_strategies_and_suites_compose_and_validate():
    for strategy in sorted(p.stem for p in (REPO / "conf" / "strategy").glob("*.yaml")):
        settings, parsed = continual.read_settings(_compose([f"strategy={strategy}"]))
        assert parsed.name == strategy and parsed.label
        assert (parsed.selection == "none") == (parsed.budget == 0)
    oer = continual.read_settings(_compose(["strategy=oer"]))[1]
    assert (oer.selection, oer.training) == ("mbes", "dbc")
    assert (continual.read_settings(_compose(["strategy=mbes"]))[1].training,
            continual.read_settings(_compose(["strategy=dbc"]))[1].selection) == ("joint", "random")
    cw10 = _compose(["suite=cw10"])
    assert list(cw10.suite.tasks) == ["hammer-v3", "push-wall-v3", "faucet-close-v3", "push-back-v3", "stick-pull-v3",
                                      "handle-press-side-v3", "push-v3", "shelf-place-v3", "window-close-v3",
                                      "peg-unplug-side-v3"]
    cw5 = _compose(["suite=cw5"])
    assert list(cw5.suite.tasks) == list(cw10.suite.tasks)[:5] and list(cw5.suite.seeds) == [0, 1, 2]
    assert cw5.hydra.sweeper.params.strategy == "oer,er,finetune,multitask,single"
    with pytest.raises(ValueError, match="selection"):
        continual.read_settings(_compose(["strategy.selection=best"]))
    with pytest.raises(ValueError, match="budget=0"):
        continual.read_settings(_compose(["strategy=er", "strategy.budget=0"]))
    with pytest.raises(ValueError, match="task_encoding"):
        continual.read_settings(_compose(["continual.task_encoding=tails"]))


def test_forgetting_forward_transfer_and_intervals():
    matrix = [[0.8, 0.1, 0.0], [0.5, 0.9, 0.2], [0.4, 0.6, 1.0]]
    out = continual.summarize_run(["a", "b", "c"], matrix, {"a": [[1, 0.2], [2, 0.6]], "b": [[1, 0.5]]}, "joint")
    assert out["average_success"] == pytest.approx((0.4 + 0.6 + 1.0) / 3)
    assert out["forgetting_per_task"] == pytest.approx({"a": 0.4, "b": 0.3, "c": 0.0})
    assert out["forgetting"] == pytest.approx(0.7 / 3)
    assert out["auc"] == pytest.approx({"a": 0.4, "b": 0.5})
    single = continual.summarize_run(["a", "b", "c"], [[0.5, None, None], [None, 0.7, None], [None, None, 0.2]], {}, "single")
    assert single["average_success"] == pytest.approx(1.4 / 3) and single["final_success"] == {"a": 0.5, "b": 0.7, "c": 0.2}
    assert np.isnan(single["forgetting"])
    ft, per_task = continual.forward_transfer({"a": 0.4, "b": 0.5, "c": 1.0}, {"a": 0.2, "b": 0.5, "c": 1.0})
    assert per_task == pytest.approx({"a": 0.25, "b": 0.0}) and ft == pytest.approx(0.125)  # c: reference all 1
    low, high = continual.bootstrap_interval([0.1, 0.2, 0.3])
    assert 0.1 <= low < 0.2 < high <= 0.3
    assert np.isnan(continual.bootstrap_interval([0.5])[0])


# -- a run, killed and resumed ---------------------------------------------------------------------

def _small(tmp_path: Path, strategy: str, datasets: Path) -> list[str]:
    return [f"strategy={strategy}", "suite=cw5", "suite.tasks=[reach-v3,drawer-close-v3]", f"dataset.root={datasets}",
            "dataset.episodes=4", "dataset.mixture={expert: 0.5, random: 0.5}", "algo.reward=gt",
            "continual.steps_per_task=40", "continual.eval_episodes=1", "continual.curve_points=2",
            "trainer.batch_size=32", "trainer.log_every=10", "trainer.checkpoint_every=10", f"output_root={tmp_path}",
            "device=cpu", "logger=none",
            *(["strategy.budget=300", "strategy.mbes.steps=20", "strategy.mbes.rollout_length=10"] if strategy == "oer" else [])]


class _Killed(RuntimeError):
    pass


def _final_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(latest_checkpoint(folder / "stage01_drawer-close-v3" / "checkpoints")).weights


@pytest.mark.slow
def test_a_run_killed_inside_a_task_and_between_tasks_resumes_to_the_same_result(tmp_path, monkeypatch):
    datasets = tmp_path / "datasets"
    cfg = _compose(_small(tmp_path, "oer", datasets))
    whole = continual.run_sequence(cfg, tmp_path / "whole")
    assert len(whole["matrix"]) == 2 and whole["buffer"]["per_task_kept"] == {"reach-v3": 300}
    assert whole["buffer"]["transitions"] <= 300 and set(whole["curves"]) == {"reach-v3", "drawer-close-v3"}
    assert [p for p, _ in whole["curves"]["drawer-close-v3"]] == [20, 40]

    # Killed between the tasks (while selecting what to replay), then inside the second task.
    real_rank, real_update = continual.rank_transitions, OERLearner.update
    monkeypatch.setattr(continual, "rank_transitions", lambda *a, **k: (_ for _ in ()).throw(_Killed()))
    with pytest.raises(_Killed):
        continual.run_sequence(cfg, tmp_path / "killed")
    monkeypatch.setattr(continual, "rank_transitions", real_rank)
    calls = {"n": 0}

    def update_then_die(self, batch):
        calls["n"] += 1
        if calls["n"] == 25:  # 25th update of the second task: after its step-20 checkpoint
            raise _Killed()
        return real_update(self, batch)

    monkeypatch.setattr(OERLearner, "update", update_then_die)
    with pytest.raises(_Killed):
        continual.run_sequence(cfg, tmp_path / "killed")
    assert (tmp_path / "killed" / "stage00_reach-v3" / "replay").is_dir()
    monkeypatch.setattr(OERLearner, "update", real_update)
    resumed = continual.run_sequence(cfg, tmp_path / "killed")
    for key in ("matrix", "curves", "average_success", "forgetting", "buffer"):
        assert resumed[key] == whole[key], key
    a, b = _final_weights(tmp_path / "whole"), _final_weights(tmp_path / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert continual.run_sequence(cfg, tmp_path / "killed") == resumed  # finished: returned as it is

    # Other strategies run on the same data and aggregate into one table with every row.
    for strategy in ("finetune", "multitask", "single"):
        continual.run_sequence(_compose(_small(tmp_path, strategy, datasets)), tmp_path / f"{strategy}_seed0")
    (tmp_path / "oer_seed0").symlink_to(tmp_path / "whole")
    summary = continual.aggregate(tmp_path)
    assert {"oer", "finetune", "multitask", "single"} <= set(summary["rows"])
    assert len(json.loads((tmp_path / "multitask_seed0" / "result.json").read_text())["matrix"]) == 1
    assert not np.isnan(summary["rows"]["oer"]["forward_transfer"][0]) or all(
        v == 1.0 for v in json.loads((tmp_path / "single_seed0" / "result.json").read_text())["auc"].values())
    table = (tmp_path / "results.md").read_text()
    assert "OER" in table and "fine-tuning" in table and (tmp_path / "results_heatmap.png").stat().st_size > 0
    assert OmegaConf.select(cfg, "strategy.name") == "oer"


def test_aggregate_command_redoes_tables_and_refuses_a_wrong_argument_count(tmp_path, capsys):
    from embodied.cli import aggregate_command

    calls = []
    assert aggregate_command("continual", lambda folder: calls.append(folder) or {"x": 1}, lambda s: f"table {s['x']}",
                             ["aggregate", str(tmp_path)])
    assert calls == [str(tmp_path)] and "table 1" in capsys.readouterr().out
    assert not aggregate_command("continual", calls.append, str, ["suite=cw5"])
    with pytest.raises(SystemExit) as exit_info:
        aggregate_command("continual", calls.append, str, ["aggregate"])
    assert exit_info.value.code == 2 and "python -m embodied.continual aggregate" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no finished continual run"):
        continual.aggregate(tmp_path)
