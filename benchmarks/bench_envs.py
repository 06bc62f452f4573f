"""Environment speed on this machine: step and render times, FastRender against the default.

    python benchmarks/bench_envs.py                       # about a minute
    python benchmarks/bench_envs.py --random-episodes 1000  # + the NaN / blow-up stress run

Prints medians (ms) and ratios measured in this one process. Rendering uses whatever MUJOCO_GL
resolves to (OSMesa on a CPU-only machine).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import envs
from envs.dressing import DressingExpert
from envs.policies import RandomPolicy


def step_times(env, policy, episodes: int, seed: int = 0) -> np.ndarray:
    """Wall time of every ``env.step`` (s), policy time excluded."""
    times = []
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed + episode)
        policy.reset(seed + episode)
        done = False
        while not done:
            action = policy.act(observation)
            start = time.perf_counter()
            observation, _, terminated, truncated, _ = env.step(action)
            times.append(time.perf_counter() - start)
            done = terminated or truncated
    return np.asarray(times)


def render_times(env_id: str, frames: int, fast: bool, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame render time (s) over ``frames`` frames along a random walk, and the frame after
    ``reset(seed=0)`` (the same scene for both renderers, for the pixel comparison)."""
    env = envs.make(env_id, render_mode="rgb_array", fast_render=fast, **kwargs)
    env.reset(seed=0)
    env.render()  # context creation is not part of the per-frame cost
    rng = np.random.default_rng(0)
    times = []
    for _ in range(frames):
        env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        start = time.perf_counter()
        env.render()
        times.append(time.perf_counter() - start)
    env.reset(seed=0)
    reference = env.render()
    env.close()
    return np.asarray(times), reference


def report_render(name: str, env_id: str, frames: int, **kwargs) -> None:
    default, image_default = render_times(env_id, frames, fast=False, **kwargs)
    fast, image_fast = render_times(env_id, frames, fast=True, **kwargs)
    diff = np.abs(image_default.astype(np.int16) - image_fast.astype(np.int16))
    print(f"{name}: render default {1e3 * np.median(default):.1f} ms, FastRender {1e3 * np.median(fast):.1f} ms, "
          f"ratio {np.median(default) / np.median(fast):.2f}x; pixel |diff| mean {diff.mean():.1f}/255, "
          f"pixels differing by > 32: {100 * (diff.max(-1) > 32).mean():.1f} %")


def stress(episodes: int) -> None:
    env = envs.make("embodied/Dressing-v1")
    policy = RandomPolicy(env.action_space)
    worst, start = 0.0, time.perf_counter()
    for episode in range(episodes):
        observation, _ = env.reset(seed=100_000 + episode)
        policy.reset(episode)
        done = False
        while not done:
            observation, reward, terminated, truncated, info = env.step(policy.act(observation))
            if not (np.all(np.isfinite(observation)) and np.isfinite(reward)):
                raise SystemExit(f"non-finite value in episode {episode}")
            worst = max(worst, float(np.abs(observation[:24]).max()))
            done = terminated or truncated
    print(f"dressing stress: {episodes} random-action episodes in {time.perf_counter() - start:.0f} s, "
          f"no NaN; largest |position| in observations {worst:.2f} m")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=10, help="dressing episodes per policy for step timing")
    parser.add_argument("--frames", type=int, default=50, help="frames per render measurement")
    parser.add_argument("--random-episodes", type=int, default=0, help="random-action dressing episodes (NaN check)")
    args = parser.parse_args()

    import os

    print(f"MUJOCO_GL={os.environ.get('MUJOCO_GL')}")
    env = envs.make("embodied/Dressing-v1")
    expert = step_times(env, DressingExpert(env.action_space), args.episodes)
    random = step_times(env, RandomPolicy(env.action_space), args.episodes)
    both = np.concatenate([expert, random])
    print(f"dressing env.step (no rendering): median {1e3 * np.median(both):.2f} ms "
          f"(expert {1e3 * np.median(expert):.2f}, random {1e3 * np.median(random):.2f}), "
          f"p90 {1e3 * np.percentile(both, 90):.2f} ms over {len(both)} steps")
    pm = envs.make("embodied/PointMass-v0")
    print(f"pointmass env.step: median {1e3 * np.median(step_times(pm, RandomPolicy(pm.action_space), 5)):.3f} ms")

    report_render("dressing 128x128 (side camera)", "embodied/Dressing-v1", args.frames, width=128, height=128)
    report_render("metaworld drawer-open-v3 224x224 (corner2)", "embodied/MetaWorld-v0", args.frames,
                  task="drawer-open-v3", width=224, height=224)
    mw = envs.make("embodied/MetaWorld-v0", task="drawer-open-v3")
    print(f"metaworld env.step: median {1e3 * np.median(step_times(mw, RandomPolicy(mw.action_space), 1)):.3f} ms")

    if args.random_episodes:
        stress(args.random_episodes)


if __name__ == "__main__":
    main()
