"""The force on the person in the dressing task: kinematic gripper (v0) against the compliant,
impedance-controlled gripper (v1), over the physics timestep, with the step rate, in one process.

    python benchmarks/bench_dressing_force.py [--episodes 30]

For snag episodes (the sleeve's rim catches on the hand, ``SnagPolicy``) it prints the peak force
(N: median, 90th percentile, max over episodes), the largest rise of the force in one 0.1 s control
step (99th percentile and max over steps with more than 5 N), how many episodes exceed the 20 N
limit and, of those, the lowest force read the step before (what a safety layer stopping at
``limit - margin`` sees in time: >= 15 N means a 5 N margin stops every one), and for expert
episodes the success rate and the peak force. ``substeps``: physics steps per control step
(timestep ``0.1 / substeps`` s); a force that is a physical quantity agrees across them.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from envs.dressing import DressingEnv, DressingExpert, SnagPolicy

LIMIT = 20.0


def episodes(env: DressingEnv, policy, n: int) -> tuple[list[np.ndarray], int, int]:
    """Forces after each step (N, with 0 before the first) of ``n`` episodes, successes, steps."""
    out, successes, steps = [], 0, 0
    for seed in range(n):
        observation, info = env.reset(seed=seed)
        policy.reset(seed)
        forces, done = [0.0], False
        while not done:
            observation, _, terminated, truncated, info = env.step(policy.act(observation))
            forces.append(info["force"])
            steps += 1
            done = terminated or truncated or steps > 10**6
        out.append(np.array(forces))
        successes += bool(info["success"])
    return out, successes, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=30)
    args = parser.parse_args()
    settings = [("v0 kinematic", None, 3), ("v0 kinematic", None, 10), ("v1 compliant 300 N/m", 300.0, 5),
                ("v1 compliant 300 N/m", 300.0, 10), ("v1 compliant 300 N/m", 300.0, 20)]
    print(f"{args.episodes} snag and {args.episodes} expert episodes per row; limit {LIMIT} N")
    print("| gripper | substeps | snag peak N (median / p90 / max) | rise per step N (p99 / max) | snags over the limit "
          "| lowest force the step before | expert success | expert peak N | steps/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, stiffness, substeps in settings:
        env = DressingEnv(substeps=substeps, gripper_stiffness=stiffness)
        start = time.perf_counter()
        snags, _, snag_steps = episodes(env, SnagPolicy(env.action_space), args.episodes)
        experts, successes, expert_steps = episodes(env, DressingExpert(env.action_space), args.episodes)
        rate = (snag_steps + expert_steps) / (time.perf_counter() - start)
        env.close()
        peaks = np.array([f.max() for f in snags])
        rises = np.concatenate([np.diff(f)[f[1:] > 5.0] for f in snags] + [np.zeros(1)])
        before = [f[np.flatnonzero(f > LIMIT)[0] - 1] for f in snags if (f > LIMIT).any()]
        print(f"| {name} | {substeps} | {np.median(peaks):.1f} / {np.quantile(peaks, 0.9):.1f} / {peaks.max():.1f} | "
              f"{np.quantile(rises, 0.99):.1f} / {rises.max():.1f} | {len(before)} / {args.episodes} | "
              f"{min(before) if before else float('nan'):.1f} | {successes} / {args.episodes} | "
              f"{max(f.max() for f in experts):.1f} | {rate:.0f} |", flush=True)


if __name__ == "__main__":
    main()
