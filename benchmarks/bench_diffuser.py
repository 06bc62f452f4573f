"""Plan latency of the diffusion planners on this CPU, against diffusers' ``ValueGuidedRLPipeline``
with networks of the same size, in one process.

    python benchmarks/bench_diffuser.py                    # each planner at its preset (conf/algo/<algo>.yaml)
    python benchmarks/bench_diffuser.py --threads 2 --repeats 20
    python benchmarks/bench_diffuser.py --sampling-steps 5        # fewer denoising steps (AlignDiff samples in 5)

Issue: "plan latency per control step on this CPU with the default preset (batch 1, DDIM steps
as configured): target <= 50 ms; against diffusers' ValueGuidedRLPipeline with a network of the
same size in the same run (ratio)".

Both plan from one state (batch 1) of the dressing task's size (D = 26, A = 3) with untrained
weights (latency does not depend on training):

- **ours**: :class:`policies.diffuser.DiffuserLearner` with Diffuser's preset (horizon 16,
  U-Net 32/64/128, ``samples`` plans, ``sampling_steps`` DDIM steps, value guidance with one
  gradient per step, best plan by value, a new plan every ``replan_every`` steps). Timed per
  plan, and per control step over an episode of ``--steps`` ``act`` calls (plans amortised
  over the steps that execute them); Decision Diffuser (classifier-free guidance: both branches
  in one batch), select and AlignDiff (classifier-free guidance on attribute targets, the best of
  N plans by the attribute model) are timed the same way, each at its own preset;
- **diffusers**: ``ValueGuidedRLPipeline`` with ``UNet1DModel`` networks of the same widths
  (32/64/128, 1.0 M parameters for the denoiser, as ours), a DDPM scheduler over the same 100
  training steps set to the same number of denoising steps, the same number of plans and
  horizon, its default two guide steps, and its progress bar off (replaced by a plain loop). It
  replans at every control step (it returns one action), so its latency per control step is
  its plan time. Its normalisation reads ``env.get_dataset()`` (a D4RL method): a stand-in env
  object returns random arrays of the right shapes.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def _time(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in ms over ``repeats`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times))


class _DatasetEnv:
    """What ``ValueGuidedRLPipeline`` reads from its env: ``get_dataset()`` (for normalisation)
    and the two spaces' shapes."""

    def __init__(self, observation_dim: int, action_dim: int):
        import gymnasium as gym

        rng = np.random.default_rng(0)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (observation_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
        self.dataset = {"observations": rng.normal(size=(1000, observation_dim)).astype(np.float32),
                        "actions": rng.uniform(-1, 1, (1000, action_dim)).astype(np.float32)}

    def get_dataset(self) -> dict[str, np.ndarray]:
        return self.dataset


def diffusers_pipeline(observation_dim: int, action_dim: int, horizon: int, widths: tuple[int, ...], steps: int,
                       diffusion_steps: int):
    """``ValueGuidedRLPipeline`` with a denoiser and a value function of ``widths`` channels."""
    from diffusers import DDPMScheduler, UNet1DModel
    from diffusers.experimental import ValueGuidedRLPipeline
    from diffusers.experimental.rl import value_guided_sampling

    value_guided_sampling.tqdm.tqdm = lambda iterable, *args, **kwargs: iterable  # its per-plan progress bar, off

    channels = observation_dim + action_dim
    common = dict(sample_size=horizon, in_channels=channels, out_channels=channels, extra_in_channels=0,
                  use_timestep_embedding=True, time_embedding_type="positional", flip_sin_to_cos=False, freq_shift=1,
                  down_block_types=("DownResnetBlock1D",) * len(widths), block_out_channels=widths, act_fn="mish",
                  norm_num_groups=8, layers_per_block=1)
    unet = UNet1DModel(**common, up_block_types=("UpResnetBlock1D",) * (len(widths) - 1), mid_block_type="MidResTemporalBlock1D",
                       out_block_type="OutConv1DBlock", downsample_each_block=False)
    value = UNet1DModel(**common, up_block_types=(), mid_block_type="ValueFunctionMidBlock1D", out_block_type="ValueFunction",
                        downsample_each_block=True)
    scheduler = DDPMScheduler(num_train_timesteps=diffusion_steps, beta_schedule="squaredcos_cap_v2")
    scheduler.set_timesteps(steps)
    pipeline = ValueGuidedRLPipeline(value_function=value.eval(), unet=unet.eval(), scheduler=scheduler,
                                     env=_DatasetEnv(observation_dim, action_dim))
    return pipeline, sum(p.numel() for p in unet.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--observation-dim", type=int, default=26, help="D (default: the dressing task's 26)")
    parser.add_argument("--action-dim", type=int, default=3, help="A (default: the dressing task's 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=20, help="timed plans per planner (median)")
    parser.add_argument("--steps", type=int, default=48, help="act() calls of the per-control-step timing")
    parser.add_argument("--sampling-steps", type=int, default=None, help="override the preset's sampling_steps")
    parser.add_argument("--samples", type=int, default=None, help="override the preset's samples (plans per decision)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from omegaconf import OmegaConf

    from policies.diffuser import DiffuserConfig, DiffuserLearner

    def load_preset(algo: str) -> dict:
        path = os.path.join(os.path.dirname(__file__), "..", "conf", "algo", f"{algo}.yaml")
        preset = {k: v for k, v in OmegaConf.to_container(OmegaConf.load(path).learner).items() if not k.startswith("_")}
        if args.sampling_steps is not None:
            preset["sampling_steps"] = args.sampling_steps
        if args.samples is not None and preset["mode"] != "decision_diffuser":
            preset["samples"] = args.samples
        return preset

    D, A = args.observation_dim, args.action_dim
    state = torch.randn(1, D)
    preset = load_preset("diffuser")
    print(f"threads {args.threads}; D {D}, A {A}; each planner at its own preset (conf/algo/<algo>.yaml)"
          + (f", {args.sampling_steps} sampling steps" if args.sampling_steps else "")
          + (f", {args.samples} plans" if args.samples else ""))
    rows = []
    for algo in ("diffuser", "decision_diffuser", "diffuser_select", "aligndiff"):
        settings = load_preset(algo)
        learner = DiffuserLearner(DiffuserConfig(**settings), D, A).eval()
        learner.prepare(torch.randn(1000, D))
        k = settings.get("attributes", 0)
        condition = torch.cat([torch.full((1, k), 0.5), torch.ones(1, k)], dim=-1) if settings["mode"] == "aligndiff" else None
        plan_ms = _time(lambda: learner.plan(learner.normalizer(state), condition=condition), args.repeats)

        def episode():
            learner.reset()
            for _ in range(args.steps):
                learner.act(state, condition)

        step_ms = _time(episode, max(3, args.repeats // 5)) / args.steps
        rows.append((f"{settings['mode']} ({settings['samples']} plans, {settings['sampling_steps']} steps)", plan_ms, step_ms))
        if algo == "diffuser":
            ours_plan, ours_step = plan_ms, step_ms
            parameters = sum(p.numel() for p in learner.denoiser.parameters())

    pipeline, their_parameters = diffusers_pipeline(D, A, preset["horizon"], tuple(preset["unet_dims"]), preset["sampling_steps"],
                                                    preset["diffusion_steps"])
    observation = np.random.default_rng(1).normal(size=D).astype(np.float32)
    theirs = _time(lambda: pipeline(observation, batch_size=preset["samples"], planning_horizon=preset["horizon"]),
                   args.repeats)
    print(f"denoiser parameters: ours {parameters / 1e6:.2f} M, diffusers UNet1DModel {their_parameters / 1e6:.2f} M")
    print(f"{'planner':<52} {'plan (ms)':>10} {'per control step (ms)':>22}")
    for mode, plan_ms, step_ms in rows:
        print(f"{'ours, ' + mode:<52} {plan_ms:>10.1f} {step_ms:>22.1f}")
    label = f"diffusers ValueGuidedRLPipeline ({preset['samples']} plans, {preset['sampling_steps']} steps)"
    print(f"{label:<52} {theirs:>10.1f} {theirs:>22.1f}")
    print(f"ratio diffusers / ours (Diffuser, guided): per plan {theirs / ours_plan:.2f}x, "
          f"per control step {theirs / ours_step:.2f}x; target per control step <= 50 ms: "
          f"{'met' if ours_step <= 50 else 'not met'} ({ours_step:.1f} ms)")


if __name__ == "__main__":
    main()
