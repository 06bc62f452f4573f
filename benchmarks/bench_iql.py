"""IQL updates per second through ``embodied.fit``, against d3rlpy's IQL update and against the
matmul bound of the same layer shapes, all in one process.

    python benchmarks/bench_iql.py [--updates 1000] [--batch 256] [--threads 1]
    PYTHONPATH=.d3rlpy python benchmarks/bench_iql.py      # with the d3rlpy comparison

Data: 100,000 random transitions with obs (39,) and action (4,) (Meta-World's sizes), episodes of
500 steps. Both learners use 2x256 MLPs, Adam 3e-4, expectile 0.7, beta 3.

- **ours**: :func:`embodied.fit.fit` with the transition sampler, the no-op logger and one
  checkpoint at the end: the loop the main job runs.
- **d3rlpy**: ``IQL.update(dataset.sample_transition_batch(B))``; d3rlpy is optional and pins
  gymnasium 1.0, so it is not a dependency; to compare, install it beside the environment:

      pip install --no-deps --target .d3rlpy d3rlpy==2.8.1 gym==0.26.2 gym-notices structlog \\
          dataclasses-json marshmallow typing-inspect mypy_extensions colorama scikit-learn \\
          threadpoolctl joblib narwhals

- **matmul bound**: the time of only the matrix products one IQL update needs at these shapes
  (forward of the target critics, V(s'), V(s), both critics and the actor; backward of V, the
  critics and the actor, weight gradients everywhere and input gradients below the first
  layer), each timed as ``torch.mm`` here. "% of the bound" is that time over a measured update.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from embodied.data import Episode
from embodied.fit import fit
from embodied.loggers import Logger
from policies.data import EpisodeData, TransitionSampler
from policies.iql import IQLConfig, IQLLearner

OBS, ACT, N, LENGTH, HIDDEN = 39, 4, 100_000, 500, 256


def make_data(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "observations": rng.normal(size=(N, OBS)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(N, ACT)).astype(np.float32),
        "rewards": rng.normal(size=N).astype(np.float32),
        "terminals": np.zeros(N, dtype=np.float32),
        "timeouts": (np.arange(N) % LENGTH == LENGTH - 1).astype(np.float32),
    }


def bench_ours(data: dict[str, np.ndarray], updates: int, batch: int) -> float:
    episodes = []
    for start in range(0, N, LENGTH):
        sl = slice(start, start + LENGTH)
        obs = data["observations"][sl]
        episodes.append(Episode(observations=np.concatenate([obs, obs[-1:]]), actions=data["actions"][sl],
                                rewards=data["rewards"][sl], terminations=np.zeros(LENGTH, bool),
                                truncations=data["timeouts"][sl].astype(bool)))
    episode_data = EpisodeData(episodes, include_reward=True)
    sampler = TransitionSampler(episode_data)

    def run(steps: int) -> float:
        learner = IQLLearner(IQLConfig(), OBS, ACT)
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            fit(learner, sampler, steps=steps, batch_size=batch, checkpoints=folder, generator=torch.Generator().manual_seed(0),
                make_logger=lambda step: Logger(), prepare=lambda: learner.prepare(episode_data.transition_observations(), steps),
                log_every=100, checkpoint_every=steps, progress=False)
            return time.perf_counter() - start

    run(20)  # warm-up
    return updates / run(updates)


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


def iql_products(batch: int) -> list[tuple[int, int, int]]:
    """The ``(m, k, n)`` products ``(m, k) @ (k, n)`` of one IQL update (see the module docstring)."""
    q, v, pi = [OBS + ACT, HIDDEN, HIDDEN, 1], [OBS, HIDDEN, HIDDEN, 1], [OBS, HIDDEN, HIDDEN, ACT]
    products: list[tuple[int, int, int]] = []

    def forward(dims: list[int]) -> None:
        products.extend((batch, i, o) for i, o in zip(dims[:-1], dims[1:]))

    def backward(dims: list[int]) -> None:
        for layer, (i, o) in enumerate(zip(dims[:-1], dims[1:])):
            products.append((o, batch, i))  # weight gradient: dY^T X
            if layer > 0:
                products.append((batch, o, i))  # input gradient: dY W

    for dims in (q, q, v):  # target critics and V(s') without gradient
        forward(dims)
    for dims in (v, q, q, pi):  # V(s), both critics, the actor: forward and backward
        forward(dims)
        backward(dims)
    return products


def matmul_bound(batch: int, repeats: int = 200) -> float:
    """Seconds of the products of one update, each timed with ``torch.mm``."""
    total = 0.0
    for m, k, n in iql_products(batch):
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(10):
            torch.mm(a, b)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        total += (time.perf_counter() - start) / repeats
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, obs {OBS}, action {ACT}")
    data = make_data()
    ours = bench_ours(data, args.updates, args.batch)
    bound = matmul_bound(args.batch)
    print(f"embodied IQL through fit: {ours:.1f} updates/s")
    print(f"matmul bound: {1 / bound:.1f} updates/s ({len(iql_products(args.batch))} products); "
          f"embodied reaches {100 * bound * ours:.0f} % of it")
    theirs = bench_d3rlpy(data, args.updates, args.batch)
    if theirs is None:
        print("d3rlpy not installed: no comparison (see this file's docstring)")
    else:
        print(f"d3rlpy IQL:   {theirs:.1f} updates/s ({100 * bound * theirs:.0f} % of the bound)")
        print(f"ratio embodied / d3rlpy: {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
