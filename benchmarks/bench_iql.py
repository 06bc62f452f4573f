"""IQL updates per second on this machine, ours against d3rlpy's, same data, same process.

    python benchmarks/bench_iql.py [--updates 300] [--batch 256]

Data: 100,000 random transitions with obs (39,) and action (4,) (Meta-World's sizes). Both use
2x256 MLPs, Adam 3e-4, expectile 0.7, beta 3. d3rlpy is optional and pins gymnasium 1.0, so it
is not in the project's dependencies; to compare, install it beside the environment:

    pip install --no-deps --target .d3rlpy d3rlpy==2.8.1 gym==0.26.2 gym-notices structlog \\
        dataclasses-json marshmallow typing-inspect mypy_extensions colorama scikit-learn \\
        threadpoolctl joblib narwhals
    PYTHONPATH=.d3rlpy python benchmarks/bench_iql.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from embodied.data import Episode, TransitionStore
from policies.iql import IQLConfig, IQLLearner

OBS, ACT, N = 39, 4, 100_000


def make_data(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "observations": rng.normal(size=(N, OBS)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(N, ACT)).astype(np.float32),
        "rewards": rng.normal(size=N).astype(np.float32),
        "terminals": np.zeros(N, dtype=np.float32),
        "timeouts": (np.arange(N) % 500 == 499).astype(np.float32),
    }


def bench_ours(data: dict[str, np.ndarray], updates: int, batch: int) -> float:
    episodes = []
    for start in range(0, N, 500):
        sl = slice(start, start + 500)
        obs = data["observations"][sl]
        episodes.append(Episode(observations=np.concatenate([obs, obs[-1:]]), actions=data["actions"][sl],
                                rewards=data["rewards"][sl], terminations=np.zeros(500, bool),
                                truncations=data["timeouts"][sl].astype(bool)))
    store = TransitionStore(episodes, include_reward=True)
    learner = IQLLearner(IQLConfig(), OBS, ACT)
    learner.prepare(store.tensors["observation"], total_steps=updates + 20)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):  # warm-up
        learner.update(store.sample(batch, generator))
    start = time.perf_counter()
    for _ in range(updates):
        learner.update(store.sample(batch, generator))
    return updates / (time.perf_counter() - start)


def bench_d3rlpy(data: dict[str, np.ndarray], updates: int, batch: int) -> float | None:
    try:
        import d3rlpy
    except ImportError:
        return None
    dataset = d3rlpy.dataset.MDPDataset(
        observations=data["observations"], actions=data["actions"], rewards=data["rewards"],
        terminals=data["terminals"], timeouts=data["timeouts"],
    )
    iql = d3rlpy.algos.IQLConfig(batch_size=batch, expectile=0.7, weight_temp=3.0).create(device="cpu:0")
    iql.build_with_dataset(dataset)
    for _ in range(20):
        iql.update(dataset.sample_transition_batch(batch))
    start = time.perf_counter()
    for _ in range(updates):
        iql.update(dataset.sample_transition_batch(batch))
    return updates / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, obs {OBS}, action {ACT}")
    data = make_data()
    ours = bench_ours(data, args.updates, args.batch)
    print(f"embodied IQL: {ours:.1f} updates/s")
    theirs = bench_d3rlpy(data, args.updates, args.batch)
    if theirs is None:
        print("d3rlpy not installed: no comparison (see this file's docstring)")
    else:
        print(f"d3rlpy IQL:   {theirs:.1f} updates/s")
        print(f"ratio embodied / d3rlpy: {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
