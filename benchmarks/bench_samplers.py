"""Sampler speed and memory, against d3rlpy's sampling of the same data, in one process.

    python benchmarks/bench_samplers.py [--batches 2000] [--transitions 1000000]
    PYTHONPATH=.d3rlpy python benchmarks/bench_samplers.py     # with the d3rlpy comparison

Speed: batches/s at batch 256 of our transition and window (H = 32, Diffuser's horizon) samplers
against d3rlpy 2.8.1's ``sample_transition_batch`` and ``sample_trajectory_batch`` on 100,000
transitions of Meta-World's sizes (obs 39, action 4, episodes of 500). Install d3rlpy beside the
environment as ``benchmarks/bench_iql.py`` says; without it only our numbers are printed.

Memory: the peak resident memory that building :class:`policies.data.EpisodeData` adds for a
``--transitions`` dataset, against the bytes of its arrays (observations T+1 per episode,
actions, rewards, flags), and against the previous transition store's construction (six
concatenated copies and a float64 copy for the finiteness check), both in this process. Peak RSS
is reset between the two with ``/proc/self/clear_refs`` (Linux).
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import numpy as np
import torch

from embodied.data import Episode
from policies.data import EpisodeData, TransitionSampler, WindowSampler

OBS, ACT, LENGTH = 39, 4, 500


def make_episodes(transitions: int, seed: int = 0) -> list[Episode]:
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(transitions // LENGTH):
        episodes.append(Episode(
            observations=rng.standard_normal((LENGTH + 1, OBS), dtype=np.float32),
            actions=rng.uniform(-1, 1, (LENGTH, ACT)).astype(np.float32),
            rewards=rng.standard_normal(LENGTH, dtype=np.float32),
            terminations=np.zeros(LENGTH, bool), truncations=np.r_[np.zeros(LENGTH - 1, bool), True]))
    return episodes


def rate(sample, batches: int) -> float:
    for _ in range(20):
        sample()
    start = time.perf_counter()
    for _ in range(batches):
        sample()
    return batches / (time.perf_counter() - start)


def bench_speed(batches: int, batch: int, horizon: int) -> None:
    episodes = make_episodes(100_000)
    data = EpisodeData(episodes, include_reward=True)
    g = torch.Generator().manual_seed(0)
    transitions, windows = TransitionSampler(data), WindowSampler(data, horizon)
    ours_t = rate(lambda: transitions.sample(batch, g), batches)
    ours_w = rate(lambda: windows.sample(batch, g), max(1, batches // 4))
    print(f"embodied transitions (B={batch}):       {ours_t:9.0f} batches/s")
    print(f"embodied windows (B={batch}, H={horizon}):  {ours_w:9.0f} batches/s")
    try:
        import d3rlpy
    except ImportError:
        print("d3rlpy not installed: no comparison (see this file's docstring)")
        return
    dataset = d3rlpy.dataset.MDPDataset(
        observations=np.concatenate([ep.observations[:-1] for ep in episodes]),
        actions=np.concatenate([ep.actions for ep in episodes]),
        rewards=np.concatenate([ep.rewards for ep in episodes]),
        terminals=np.zeros(100_000, np.float32),
        timeouts=np.concatenate([ep.truncations for ep in episodes]).astype(np.float32))
    theirs_t = rate(lambda: dataset.sample_transition_batch(batch), max(1, batches // 10))
    theirs_w = rate(lambda: dataset.sample_trajectory_batch(batch, horizon), max(1, batches // 40))
    print(f"d3rlpy transitions (B={batch}):         {theirs_t:9.0f} batches/s   ratio {ours_t / theirs_t:.1f}x")
    print(f"d3rlpy trajectories (B={batch}, H={horizon}):{theirs_w:9.0f} batches/s   ratio {ours_w / theirs_w:.1f}x")


def _peak_rss_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _previous_store(episodes: list[Episode]) -> dict[str, torch.Tensor]:
    """The transition store before this change: six concatenations, a float64 copy per field for
    the finiteness check, observations stored twice (observation and next_observation)."""
    cat = np.concatenate
    data = {"observation": cat([ep.observations[:-1] for ep in episodes]), "action": cat([ep.actions for ep in episodes]),
            "reward": cat([ep.rewards for ep in episodes]), "next_observation": cat([ep.observations[1:] for ep in episodes]),
            "terminal": cat([ep.terminations for ep in episodes]), "timeout": cat([ep.truncations for ep in episodes])}
    for value in data.values():
        assert np.all(np.isfinite(value.astype(np.float64)))
    return {k: torch.as_tensor(v, dtype=torch.float32) for k, v in data.items()}


def bench_memory(transitions: int) -> None:
    episodes = make_episodes(transitions)
    arrays = sum(ep.observations.nbytes + ep.actions.nbytes + ep.rewards.nbytes + 2 * ep.terminations.size * 4
                 for ep in episodes)
    results = {}
    for name, build in (("EpisodeData", lambda: EpisodeData(episodes, include_reward=True)),
                        ("previous store", lambda: _previous_store(episodes))):
        gc.collect()
        _peak_rss_reset()
        before = _rss_kb("VmRSS")
        built = build()
        peak = (_rss_kb("VmHWM") - before) * 1024
        held = (_rss_kb("VmRSS") - before) * 1024
        results[name] = peak
        print(f"{name:15s} {transitions:,} transitions: peak +{peak / 2**20:7.0f} MiB, held +{held / 2**20:7.0f} MiB, "
              f"arrays {arrays / 2**20:.0f} MiB float32: peak {peak / arrays:.2f}x the arrays")
        del built
    print(f"EpisodeData peak / previous store peak: {results['EpisodeData'] / results['previous store']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--horizon", type=int, default=32)
    parser.add_argument("--transitions", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_speed(args.batches, args.batch, args.horizon)
    bench_memory(args.transitions)


if __name__ == "__main__":
    main()
