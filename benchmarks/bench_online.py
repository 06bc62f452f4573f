"""The online loop's speed, in one process: asynchronous labeling against no labeling, and our
SAC loop against CleanRL's ``sac_continuous_action.py`` at its defaults.

    python benchmarks/bench_online.py                       # both parts, Meta-World drawer-open-v3
    python benchmarks/bench_online.py --part labeling --updates 1500 --answer-s 2
    python benchmarks/bench_online.py --part cleanrl --updates 2000 --threads 2

**labeling** (issue: "with a labeler that takes 2 s per answer the learner's updates/s stays
within 10 % of a run without labeling"). PEBBLE with the VLM labeler against the test VLM server
on 127.0.0.1 made slow (each of the two RL-VLM-F requests of an answer waits ``answer_s / 2``),
one-step segments of rendered frames, a round of ``--queries`` queries submitted at the first
update, labelled in the background thread while the learner acts and updates. The reference is
the same run whose first round is never due (no labeling, the same frames rendered). Both time
the same ``--updates`` updates, during which the round is in flight (the rate while it is, and
overall, are printed).

**cleanrl**: env steps/s and updates/s of ``embodied.fit`` over :class:`embodied.online.OnlineSampler`
with SAC, against a loop written here the way CleanRL's ``sac_continuous_action.py`` runs at its
defaults (one env, a numpy replay buffer, a critic update every step, two actor and
temperature updates every second step, q_lr 1e-3, policy_lr 3e-4, batch 256, 256x256 MLPs,
tau 0.005). CleanRL's script itself needs stable-baselines3 and its own gymnasium pin and runs
only as ``__main__``, so its loop is rewritten here rather than imported; the networks and
update order follow it. Ours runs with CleanRL's batch and learning rates but updates the actor
every step (Haarnoja et al.), so it does 1.5x the actor updates per env step.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from torch import nn
from torch.nn import functional as F

from embodied.fit import fit
from embodied.loggers import Logger
from embodied.online import FeedbackSettings, OnlineConfig, OnlineSampler, make_vector_env
from embodied.tasks import make_env
from policies.sac import SACConfig, SACLearner
from reward_models.bradley_terry import RewardModelConfig
from reward_models.online import FeedbackWorker


def task_config(task: str):
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=["+task=metaworld", f"task.env.task={task}"]).task


def run_fit(sampler: OnlineSampler, learner: SACLearner, updates: int, batch: int) -> float:
    """Seconds for ``updates`` updates through embodied.fit (no-op logger, one checkpoint)."""
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        fit(learner, sampler, steps=updates, batch_size=batch, checkpoints=folder, generator=torch.Generator().manual_seed(0),
            make_logger=lambda step: Logger(), log_every=100, checkpoint_every=10**9, progress=False)
        return time.perf_counter() - start


# -- part 1: asynchronous labeling ----------------------------------------------------------------

def labeling(args, task) -> None:
    from reward_models.vlm import VLMPreferenceLabeler

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test VLM server lives in tests/
    from tests.vlm_server import FakeVLM

    results = {}
    with FakeVLM() as server:
        server.mode, server.slow_s = "slow", args.answer_s / 2  # two requests (analysis, label) per answer
        for name, labeled in (("no labeling", False), ("labeling in flight", True)):
            labeler = VLMPreferenceLabeler(base_url=server.url, model="test-vlm", task=str(task.description),
                                           concurrency=4, requests_per_minute=0, timeout_s=60, max_retries=1,
                                           progress=False)
            settings = FeedbackSettings(unsupervised_steps=0 if labeled else 10**9, interval=10**9, queries=args.queries,
                                        max_feedback=args.queries, segment_length=1, pool_episodes=4, asynchronous=True)
            learning_starts = 600  # one finished Meta-World episode (500 steps) in the pool before the first update
            config = OnlineConfig(env_steps=learning_starts + args.updates + 1, learning_starts=learning_starts,
                                  reward="pebble", feedback=settings, frame_size=64)
            with tempfile.TemporaryDirectory() as folder:
                worker = FeedbackWorker(labeler, RewardModelConfig(ensemble_size=3), folder, asynchronous=True)
                envs = make_vector_env(task, 1, frame_size=64)
                torch.manual_seed(0)
                learner = SACLearner(SACConfig(), 39, 4)
                sampler = OnlineSampler(envs, learner, config, seed=0, feedback=worker)
                g = torch.Generator().manual_seed(0)
                learner.update(sampler.sample(args.batch, g))  # warm-up; the labeled run submits its round here
                start, in_flight = time.perf_counter(), None
                for i in range(args.updates):
                    learner.update(sampler.sample(args.batch, g))
                    if labeled and in_flight is None and not worker.pending:
                        in_flight = (i + 1, time.perf_counter() - start)
                elapsed = time.perf_counter() - start
                pending_at_end = worker.pending
                worker.close()
                envs.close()
            results[name] = (args.updates / elapsed, in_flight, pending_at_end, sampler.rounds_submitted)
    base = results["no labeling"][0]
    flight = results["labeling in flight"][1]
    print(f"Meta-World {args.task}, SAC 2x256, batch {args.batch}, {args.updates} updates a run, VLM labeler "
          f"{args.answer_s:.1f} s per answer, {args.queries} queries (concurrency 4), torch threads {torch.get_num_threads()}")
    for name, (rate, in_flight, pending, rounds) in results.items():
        extra = ""
        if name != "no labeling":
            done = f"round answered and fitted after {in_flight[0]} updates ({in_flight[1]:.1f} s)" if in_flight else \
                f"round still in flight at the end ({pending} pending)"
            extra = f"  [{rounds} round, {done}]"
        print(f"  {name:20s}: {rate:8.1f} updates/s  ratio {rate / base:5.3f}{extra}")
    if flight:
        rate = flight[0] / flight[1]
        print(f"  while in flight     : {rate:8.1f} updates/s  ratio {rate / base:5.3f}  (the first {flight[0]} updates)")


# -- part 2: against CleanRL's loop ---------------------------------------------------------------

class CleanRLActor(nn.Module):
    """CleanRL's SAC actor: 256-256 MLP, mean and log-std heads, log-std squashed into [-5, 2]."""

    def __init__(self, obs: int, act: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(obs, 256), nn.Linear(256, 256)
        self.mean, self.logstd = nn.Linear(256, act), nn.Linear(256, act)

    def get_action(self, x):
        x = F.relu(self.fc2(F.relu(self.fc1(x))))
        mean, log_std = self.mean(x), torch.tanh(self.logstd(x))
        log_std = -5 + 0.5 * 7 * (log_std + 1)
        normal = torch.distributions.Normal(mean, log_std.exp())
        u = normal.rsample()
        y = torch.tanh(u)
        log_prob = (normal.log_prob(u) - torch.log(1 - y.pow(2) + 1e-6)).sum(1, keepdim=True)
        return y, log_prob, torch.tanh(mean)


class CleanRLQ(nn.Module):
    def __init__(self, obs: int, act: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs + act, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1))

    def forward(self, x, a):
        return self.net(torch.cat([x, a], 1))


def cleanrl_loop(task, env_steps: int, learning_starts: int, batch: int) -> tuple[float, int]:
    """CleanRL's sac_continuous_action main loop at its defaults; returns (seconds after
    learning_starts, updates of the critics done)."""
    env = make_env(task)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    torch.manual_seed(0)
    actor, qf1, qf2 = CleanRLActor(obs_dim, act_dim), CleanRLQ(obs_dim, act_dim), CleanRLQ(obs_dim, act_dim)
    qf1_t, qf2_t = CleanRLQ(obs_dim, act_dim), CleanRLQ(obs_dim, act_dim)
    qf1_t.load_state_dict(qf1.state_dict())
    qf2_t.load_state_dict(qf2.state_dict())
    q_opt = torch.optim.Adam(list(qf1.parameters()) + list(qf2.parameters()), lr=1e-3)
    a_opt = torch.optim.Adam(actor.parameters(), lr=3e-4)
    log_alpha = torch.zeros(1, requires_grad=True)
    alpha_opt = torch.optim.Adam([log_alpha], lr=1e-3)
    target_entropy = -float(act_dim)
    buf = {k: np.zeros((env_steps, d), np.float32) for k, d in (("o", obs_dim), ("a", act_dim), ("r", 1), ("n", obs_dim), ("d", 1))}
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    updates, start = 0, None
    for step in range(env_steps):
        if step < learning_starts:
            action = rng.uniform(-1, 1, act_dim).astype(np.float32)
        else:
            with torch.no_grad():
                action = actor.get_action(torch.as_tensor(obs[None], dtype=torch.float32))[0][0].numpy()
        nxt, reward, term, trunc, _ = env.step(action)
        for k, v in (("o", obs), ("a", action), ("r", [reward]), ("n", nxt), ("d", [float(term)])):
            buf[k][step] = v
        obs = env.reset()[0] if term or trunc else nxt
        if step >= learning_starts:
            if start is None:
                start = time.perf_counter()
            idx = rng.integers(0, step + 1, batch)
            o, a, r, n, d = (torch.as_tensor(buf[k][idx]) for k in ("o", "a", "r", "n", "d"))
            alpha = log_alpha.exp().item()
            with torch.no_grad():
                na, nlp, _ = actor.get_action(n)
                target = r.flatten() + (1 - d.flatten()) * 0.99 * (torch.min(qf1_t(n, na), qf2_t(n, na)) - alpha * nlp).view(-1)
            loss = F.mse_loss(qf1(o, a).view(-1), target) + F.mse_loss(qf2(o, a).view(-1), target)
            q_opt.zero_grad()
            loss.backward()
            q_opt.step()
            updates += 1
            if step % 2 == 0:  # policy_frequency 2, compensated by 2 updates
                for _ in range(2):
                    pi, lp, _ = actor.get_action(o)
                    actor_loss = (alpha * lp - torch.min(qf1(o, pi), qf2(o, pi))).mean()
                    a_opt.zero_grad()
                    actor_loss.backward()
                    a_opt.step()
                    with torch.no_grad():
                        _, lp, _ = actor.get_action(o)
                    alpha_loss = (-log_alpha.exp() * (lp + target_entropy)).mean()
                    alpha_opt.zero_grad()
                    alpha_loss.backward()
                    alpha_opt.step()
                    alpha = log_alpha.exp().item()
            with torch.no_grad():
                for p, tp in zip(list(qf1.parameters()) + list(qf2.parameters()),
                                 list(qf1_t.parameters()) + list(qf2_t.parameters())):
                    tp.data.copy_(0.005 * p.data + 0.995 * tp.data)
    env.close()
    return time.perf_counter() - start, updates


def against_cleanrl(args, task) -> None:
    learning_starts = 1000
    cleanrl_s, cleanrl_updates = cleanrl_loop(task, learning_starts + args.updates, learning_starts, args.batch)
    config = OnlineConfig(env_steps=learning_starts + args.updates, learning_starts=learning_starts, buffer_capacity=10**6)
    envs = make_vector_env(task, 1)
    torch.manual_seed(0)
    learner = SACLearner(SACConfig(critic_learning_rate=1e-3, temperature_learning_rate=1e-3), 39, 4)
    sampler = OnlineSampler(envs, learner, config, seed=0)
    # time from the first update on (the random-action warm-up excluded, as for CleanRL)
    learner.update(sampler.sample(args.batch, torch.Generator().manual_seed(0)))
    ours_s = run_fit(sampler, learner, config.total_updates, args.batch) * (config.total_updates - 1) / config.total_updates
    envs.close()
    ours = args.updates / ours_s
    theirs = cleanrl_updates / cleanrl_s
    print(f"Meta-World {args.task}, one env, batch {args.batch}, {args.updates} env steps and updates after "
          f"{learning_starts} random steps, torch threads {torch.get_num_threads()}")
    print(f"  CleanRL-style loop  : {theirs:8.1f} env steps/s = updates/s")
    print(f"  embodied.fit + SAC  : {ours:8.1f} env steps/s = updates/s   ratio {ours / theirs:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["labeling", "cleanrl", "both"], default="both")
    parser.add_argument("--task", default="drawer-open-v3")
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--answer-s", type=float, default=2.0, help="seconds the labeler takes per answer")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    task = task_config(args.task)
    if args.part in ("labeling", "both"):
        labeling(args, task)
    if args.part in ("cleanrl", "both"):
        against_cleanrl(args, task)


if __name__ == "__main__":
    main()
