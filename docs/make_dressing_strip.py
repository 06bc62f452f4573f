"""Draw docs/dressing_expert.png: start, middle and end of one expert dressing episode.

    python docs/make_dressing_strip.py [--seed 3] [--camera side]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

import envs  # noqa: F401  (picks the OpenGL backend before mujoco loads)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from envs.dressing import DressingExpert  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--camera", default="side")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("dressing_expert.png"))
    args = parser.parse_args()

    env = envs.make("embodied/Dressing-v1", render_mode="rgb_array", width=320, height=240, camera=args.camera)
    policy = DressingExpert(env.action_space)
    observation, info = env.reset(seed=args.seed)
    policy.reset(args.seed)
    frames = [(env.render(), 0, info)]
    done = False
    while not done:
        observation, _, terminated, truncated, info = env.step(policy.act(observation))
        frames.append((env.render(), len(frames), info))
        done = terminated or truncated
    env.close()

    picks = [frames[0], frames[len(frames) // 2], frames[-1]]
    figure, axes = plt.subplots(1, 3, figsize=(9.6, 2.75), dpi=100)
    for axis, (frame, step, info) in zip(axes, picks):
        axis.imshow(frame)
        axis.set_axis_off()
        axis.set_title(f"t = {step / 10:.1f} s   dressed {info['dressed_distance']:.2f} m"
                       f"{'   success' if info['success'] else ''}", fontsize=9)
    figure.tight_layout(pad=0.3)
    figure.savefig(args.out)
    print(f"wrote {args.out} ({len(frames) - 1} steps)")


if __name__ == "__main__":
    main()
