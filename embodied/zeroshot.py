"""Zero-shot behaviour from a prompt: ``python -m embodied.zeroshot +task=pointmaze prompt=goal``.

A forward-backward model (:mod:`policies.fb`, ``algo=fb``) is trained once on the task's
reward-free exploratory dataset (``dataset.recipe=explore``: noisy and random behaviour with some
expert episodes; no reward is read), or loaded from ``zeroshot.checkpoint``. A prompt then
gives the latent z the policy acts towards, without further training:

- ``goal``: each evaluation episode's own goal: ``z = B(g)`` with ``g`` the observation in which
  the episode's goal is reached (the task's ``goal_observation`` function);
- ``reward``: ``z = project(E[r(s') B(s')])`` over ``zeroshot.reward_states`` dataset
  transitions, with the true reward (``zeroshot.reward=gt``) or one learned from ``labeler``
  preferences (``zeroshot.reward=learned``: the main job's label and reward stages);
- ``demo``: ``z = project(mean_t B(s_t))`` over expert demonstrations rolled out from held-out
  seeds (``zeroshot.demo_seed``), or with ``zeroshot.window`` one z per step, the mean of B over
  the next ``window`` demo states (tracking);
- ``video`` (RLZero, Sikchi et al. 2024): each frame of a prompt video (a file, an image folder,
  held-out expert demonstrations rendered at another size: ``zeroshot.video=demo``, or frames
  imagined from a text prompt by a local diffusers pipeline: ``zeroshot.video=text``) is
  projected onto the dataset observation with the nearest frame in an image embedding (pixels,
  or CLIP with local weights; the dataset's embeddings cached), then imitated like a demo;
- ``random``: a z drawn on the sphere (the baseline a prompt must beat).

Goal prompts also run the goal-conditioned BC baseline trained on the same data (``algo=gcbc``:
hindsight goals from the same future-state sampler), acting towards the same goals.

The run folder holds the FB checkpoint (``checkpoints/``), ``z.json``, ``metrics.json``,
``report.md`` and videos, like the main job; deploy a prompt with ``condition=[...]`` from
``z.json``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import hydra
import numpy as np
import torch
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from embodied.checkpoint import latest_checkpoint
from embodied.cli import require_task, run_folder
from embodied.config import validate_config
from embodied.data import rollout
from embodied.fit import fit
from embodied.io import write_json_atomic, write_text_atomic
from embodied.learners import LearnerPolicy, load_learner
from embodied.loggers import build_logger
from embodied.paths import RunPaths
from embodied.pipeline import dataset_stage, evaluate_stage, record_videos, reward_function
from embodied.runtime import resolve_device, seed_everything
from embodied.tasks import make_env, make_policies
from policies import make_learner
from policies.bc import BCConfig, BCLearner
from policies.data import EpisodeData, make_sampler
from policies.fb import FBLearner
from reward_models.functions import relabel
from reward_models.projection import CLIPEmbedder, FrameIndex, PixelEmbedder, imagine_video, read_video

PROMPTS = ("goal", "reward", "demo", "video", "random")


@dataclass
class ZeroShotConfig:
    """Settings of ``python -m embodied.zeroshot`` (``zeroshot`` in ``conf/zeroshot.yaml``)."""

    prompt: str = "goal"
    """``goal``, ``reward``, ``demo`` or ``random`` (module docstring)."""
    checkpoint: Optional[str] = None
    """A trained FB (checkpoint, checkpoints or run folder); None: train one in this run."""
    reward: str = "gt"
    """Reward prompts: ``gt`` (the true reward) or ``learned`` (from ``labeler`` preferences)."""
    reward_states: int = 5000
    """Dataset transitions whose rewards give z. Default 5,000 (the FB papers' inference set)."""
    demo_episodes: int = 1
    """Expert demonstrations of demo prompts. Default 1."""
    demo_seed: int = 2_000_000
    """Seed of the first demonstration (held out: the dataset and evaluation use other seeds);
    a demo prompt is evaluated from the same starts."""
    window: Optional[int] = None
    """Demo and video prompts: one z per step from the next ``window`` states (None: one z)."""
    video: Optional[str] = None
    """Video prompts (RLZero): a video file or a folder of images; ``demo``: held-out expert
    demonstrations rendered at ``video_size`` (their true states give the projection's error);
    ``text``: frames imagined from ``video_text`` by the diffusers pipeline in ``video_pipeline``."""
    video_text: Optional[str] = None
    """``video=text``: the prompt, e.g. "a robot arm pulls a sleeve up a person's arm"."""
    video_pipeline: Optional[str] = None
    """``video=text``: a local folder with a text-to-video (or text-to-image) diffusers pipeline."""
    video_frames: int = 16
    """``video=text``: frames of a text-to-video pipeline. Default 16."""
    video_steps: int = 25
    """``video=text``: denoising steps. Default 25."""
    video_text_size: Optional[int] = None
    """``video=text``: height and width of the imagined frames (px); None: the pipeline's default."""
    video_size: int = 128
    """Side (px) of the frames rendered for ``video=demo``. Default 128."""
    video_camera: Any = None
    """Camera of the frames rendered for ``video=demo`` (the env's ``camera`` argument: a dict of
    free-camera fields on the maze, a camera name on Meta-World); None: the dataset's camera."""
    embedder: str = "pixels"
    """Image embedding of the projection: ``pixels`` (no weights) or ``clip`` (the root ``clip``)."""
    pixel_size: int = 32
    """Side of the pixel embedder's downsampled frames. Default 32."""
    bc_steps: int = 2000
    """Demo and video prompts: the baseline, a BC trained for this many updates on each prompt's
    own (state, action) pairs: the demonstration's (demo) or the dataset transitions its frames
    were projected onto (video), evaluated from the same starts. 0: no baseline. Default 2,000."""

    def __post_init__(self) -> None:
        if self.prompt not in PROMPTS:
            raise ValueError(f"zeroshot.prompt={self.prompt!r}; expected one of {PROMPTS}")
        if self.reward not in ("gt", "learned"):
            raise ValueError(f"zeroshot.reward={self.reward!r}; expected gt or learned")
        if self.reward_states < 1 or self.demo_episodes < 1 or (self.window is not None and self.window < 1):
            raise ValueError("zeroshot.reward_states, demo_episodes and window must be >= 1")
        if self.bc_steps < 0:
            raise ValueError(f"zeroshot.bc_steps={self.bc_steps}; expected >= 0 (0: no BC baseline)")
        if self.embedder not in ("pixels", "clip"):
            raise ValueError(f"zeroshot.embedder={self.embedder!r}; expected pixels or clip")
        if self.prompt == "video" and not self.video:
            raise ValueError("prompt=video needs zeroshot.video=<video file | image folder | demo | text>")
        if self.video == "text" and not (self.video_text and self.video_pipeline):
            raise ValueError("zeroshot.video=text needs zeroshot.video_text=<prompt> and zeroshot.video_pipeline=<a local "
                             "folder with a text-to-video or text-to-image diffusers pipeline>")
        if self.video_frames < 1 or self.video_steps < 1:
            raise ValueError("zeroshot.video_frames and video_steps must be >= 1")


class GoalPromptPolicy:
    """Acts towards each observation's own goal: ``z = B(goal_observation(o))`` at every step
    (the goal is part of the observation, so a new episode's goal is picked up at once); for a
    goal-conditioned BC the condition is the goal observation itself (``learner.goal_condition``).

    Args:
        learner: the FB learner, or a goal-conditioned BC.
        goal_observation: ``observation (D,) -> goal observation (D,)``.
        device: torch device.
    """

    def __init__(self, learner: FBLearner | BCLearner, goal_observation, device: torch.device | str = "cpu"):
        self.learner, self.goal_observation, self.device = learner, goal_observation, torch.device(device)

    def reset(self, seed: int | None = None) -> None:
        self.learner.reset()

    def act(self, observation: np.ndarray) -> np.ndarray:
        obs = torch.as_tensor(np.asarray(observation, np.float32), device=self.device)[None]
        goal = torch.as_tensor(np.asarray(self.goal_observation(observation), np.float32), device=self.device)[None]
        return self.learner.act(obs, self.learner.goal_condition(goal))[0].cpu().numpy().astype(np.float32)


class TrackingPolicy:
    """Acts towards ``z_t`` at step t of an episode (``zs (T, d)``; the last one after T)."""

    def __init__(self, learner: FBLearner, zs: torch.Tensor, device: torch.device | str = "cpu"):
        self.learner, self.zs, self.device, self.t = learner, zs.to(device), torch.device(device), 0

    def reset(self, seed: int | None = None) -> None:
        self.t = 0
        self.learner.reset()

    def act(self, observation: np.ndarray) -> np.ndarray:
        obs = torch.as_tensor(np.asarray(observation, np.float32), device=self.device)[None]
        z = self.zs[min(self.t, len(self.zs) - 1)][None]
        self.t += 1
        return self.learner.act(obs, z)[0].cpu().numpy().astype(np.float32)


class PerEpisodePolicy:
    """One prompt per evaluation episode: the episode reset with seed ``s`` is acted by
    ``policies[s]`` (demonstration i, rolled out from seed ``demo_seed + i``, prompts the episode
    from the same start).

    Raises:
        KeyError: (at ``reset``) a seed no prompt was given for.
    """

    def __init__(self, policies: dict[int, Any]):
        self.policies, self.current = dict(policies), None

    def reset(self, seed: int | None = None) -> None:
        if seed not in self.policies:
            raise KeyError(f"no prompt for the episode of seed {seed}; prompts were given for seeds {sorted(self.policies)}")
        self.current = self.policies[seed]
        self.current.reset(seed)

    def act(self, observation: np.ndarray) -> np.ndarray:
        return self.current.act(observation)


def fit_bc(observations: np.ndarray, actions: np.ndarray, steps: int, seed: int, device: torch.device,
           hidden_dims: tuple[int, ...] = (256, 256), batch_size: int = 256) -> BCLearner:
    """A BC (``policies.bc``, MSE) fitted on ``(N, D)`` observations and ``(N, A)`` actions for
    ``steps`` updates of minibatches of ``batch_size`` drawn with replacement.

    Raises:
        ValueError: no pairs, mismatched lengths or non-finite values.
    """
    if len(observations) == 0 or len(observations) != len(actions) or not (
            np.isfinite(observations).all() and np.isfinite(actions).all()):
        raise ValueError(f"BC needs finite (state, action) pairs of equal count, got {len(observations)} states "
                         f"and {len(actions)} actions")
    obs = torch.as_tensor(observations, dtype=torch.float32, device=device)
    act = torch.as_tensor(actions, dtype=torch.float32, device=device)
    learner = BCLearner(BCConfig(hidden_dims=list(hidden_dims)), obs.shape[1], act.shape[1]).to(device)
    learner.prepare(obs)
    generator = torch.Generator(device=device).manual_seed(seed)
    for _ in range(steps):
        rows = torch.randint(len(obs), (min(batch_size, len(obs)),), generator=generator, device=device)
        learner.update({"observation": obs[rows], "action": act[rows]})
    return learner.eval()


def read_zeroshot(cfg: DictConfig) -> ZeroShotConfig:
    values = OmegaConf.to_container(cfg.zeroshot, resolve=True)
    known = {f.name for f in dataclasses.fields(ZeroShotConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"zeroshot.{unknown[0]} is not a setting (zeroshot has {', '.join(sorted(known))})")
    return ZeroShotConfig(**values)


def check_model(learner, prompt: str, source: str) -> None:
    """Refuse a model the prompt cannot use: every prompt takes a forward-backward model; a goal
    prompt also takes a goal-conditioned BC (``algo=gcbc``, the baseline of goal prompts).

    Raises:
        ValueError: naming the model, the prompt and what is expected.
    """
    if isinstance(learner, FBLearner):
        return
    if prompt == "goal" and isinstance(learner, BCLearner) and learner.config.goal_conditioned:
        return
    raise ValueError(f"{source} is a {type(learner).__name__}: prompt={prompt} needs a forward-backward model (algo=fb)"
                     + (" or a goal-conditioned BC (algo=gcbc)" if prompt == "goal" else ""))


def train_fb(cfg: DictConfig, paths: RunPaths, device: torch.device, generator: torch.Generator,
             keep_frames: bool = False) -> tuple[FBLearner | BCLearner, list]:
    """Train (or resume) the FB model (or, for goal prompts, the goal-conditioned BC baseline) on
    the task's dataset into ``paths.checkpoints``; returns it and the dataset's episodes (with
    their frames when ``keep_frames``).

    Raises:
        ValueError: ``algo`` is a model the prompt cannot use (:func:`check_model`).
    """
    dataset = dataset_stage(cfg, keep_frames=keep_frames)
    episodes = dataset.episodes
    learner = make_learner(instantiate(cfg.algo.learner), episodes[0].observations.shape[1], episodes[0].actions.shape[1],
                           device=str(device))
    check_model(learner, read_zeroshot(cfg).prompt, f"algo={cfg.algo.name}")
    data = EpisodeData(episodes, device)
    steps = int(cfg.trainer.steps)
    backends = list(dict.fromkeys(["jsonl", *(OmegaConf.select(cfg, "logger.backends", default=None) or [])]))
    fit(learner, make_sampler(learner.batch_spec(), data), steps=steps, batch_size=int(cfg.trainer.batch_size),
        checkpoints=paths.checkpoints, generator=generator,
        make_logger=lambda step: build_logger(paths.root, backends=backends, resume_step=step),
        prepare=lambda: learner.prepare(data.transition_observations(), steps), log_every=int(cfg.trainer.log_every),
        checkpoint_every=int(cfg.trainer.checkpoint_every), keep_checkpoints=int(cfg.trainer.keep_checkpoints),
        progress=bool(cfg.trainer.progress), extra={"job": "zeroshot", "task": str(cfg.task.name)})
    return learner.eval(), episodes


def prompt_z(cfg: DictConfig, settings: ZeroShotConfig, learner: FBLearner, episodes: list, paths: RunPaths,
             device: torch.device) -> tuple[Any, dict[str, Any], Any]:
    """The policy a prompt gives, what the report says about it (z, its source), and for demo
    and video prompts with ``zeroshot.bc_steps`` the BC baseline on the prompt's own (state,
    action) pairs (else None). With several demonstrations (``demo_episodes``; ``video=demo``)
    each prompts the evaluation episode of its own seed (:class:`PerEpisodePolicy`).

    Raises:
        ValueError: a goal prompt on a task without ``goal_observation``; a reward prompt on a
            dataset without rewards.
    """
    info: dict[str, Any] = {"prompt": settings.prompt}
    if settings.prompt == "goal":
        name = OmegaConf.select(cfg, "task.goal_observation", default=None)
        if not name:
            raise ValueError(f"task {cfg.task.name!r} has no goal_observation (observation -> the observation in which "
                             "its goal is reached); goal prompts need one (see conf/task/pointmaze.yaml)")
        return GoalPromptPolicy(learner, get_method(str(name)), device), info, None
    if settings.prompt == "random":
        z = learner.sample_z(1, torch.Generator(device=device).manual_seed(int(cfg.seed)), device)[0]
        return LearnerPolicy(learner, device, z.cpu().numpy()), {**info, "z": z.tolist()}, None
    if settings.prompt == "reward":
        reward_cfg = OmegaConf.merge(cfg, {"algo": {"reward": settings.reward}})
        reward, report = reward_function(reward_cfg, episodes, paths.root, device)
        rewards = relabel(reward, episodes, device)
        data = EpisodeData(episodes, device)
        rows = torch.randperm(data.size, generator=torch.Generator().manual_seed(int(cfg.seed)))[: settings.reward_states]
        next_obs = data.gather(rows.to(device), ("next_observation",))["next_observation"]
        z = learner.reward_z(next_obs, rewards[rows.to(device)])
        return LearnerPolicy(learner, device, z.cpu().numpy()), {**info, "reward": settings.reward, "z": z.tolist(),
                                                                 "states": int(len(rows)), **report}, None
    if settings.prompt == "video":
        prompts, video_info = project_video(cfg, settings, episodes, imagined_path=paths.videos / "imagined.png",
                                            device=device)
        info.update(video_info)
    else:  # demo: expert demonstrations from held-out seeds, each prompting the episode from its start
        demos = expert_demos(cfg, settings)
        prompts = [(d.observations[1:], d.observations[:-1], d.actions) for d in demos]
        info.update(demo_episodes=len(demos), demo_success=float(np.mean([d.success for d in demos])))
    per_seed = settings.prompt == "demo" or settings.video == "demo"
    policies, baselines, zs = {}, {}, {}
    for i, (states, bc_observations, bc_actions) in enumerate(prompts):
        key = settings.demo_seed + i if per_seed else None
        states = torch.as_tensor(np.asarray(states), dtype=torch.float32, device=device)
        if settings.window is not None:
            policies[key] = TrackingPolicy(learner, learner.imitation_z(states, settings.window), device)
        else:
            z = learner.imitation_z(states)
            policies[key], zs[key] = LearnerPolicy(learner, device, z.cpu().numpy()), z.tolist()
        if settings.bc_steps:
            baselines[key] = LearnerPolicy(fit_bc(bc_observations, bc_actions, settings.bc_steps, int(cfg.seed) + i, device),
                                           device)
    if settings.window is not None:
        info["window"] = settings.window
    else:
        info["z"] = next(iter(zs.values()))
        if len(zs) > 1:
            info["z_by_seed"] = {str(k): v for k, v in zs.items()}
    policy = PerEpisodePolicy(policies) if per_seed else policies[None]
    baseline = (PerEpisodePolicy(baselines) if per_seed else baselines[None]) if baselines else None
    return policy, info, baseline


def expert_demos(cfg: DictConfig, settings: ZeroShotConfig, render_size: int | None = None,
                 camera: Any = None) -> list:
    """``settings.demo_episodes`` expert episodes from the held-out seeds ``demo_seed + i``
    (rendered at ``render_size`` px when given, from ``camera`` when given: the env's
    ``camera`` argument, e.g. a free-camera dict on the maze or a camera name on Meta-World)."""
    render = {"render_mode": "rgb_array", "width": render_size, "height": render_size} if render_size else {}
    if camera is not None:
        render["camera"] = OmegaConf.to_container(camera, resolve=True) if isinstance(camera, DictConfig) else camera
    env = make_env(cfg.task, **render)
    try:
        expert = make_policies(cfg.task, env.action_space, names=["expert"])["expert"]
        return [rollout(env, expert, settings.demo_seed + i, list(cfg.task.info_keys), render=bool(render_size))
                for i in range(settings.demo_episodes)]
    finally:
        env.close()


def project_video(cfg: DictConfig, settings: ZeroShotConfig, episodes: list, imagined_path: Path | None = None,
                  device: torch.device | str = "cpu") -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], dict[str, Any]]:
    """RLZero's projection: each prompt frame replaced by the dataset observation whose frame is
    nearest in the image embedding (:class:`reward_models.projection.FrameIndex`, the dataset's
    embeddings cached under ``output_root/cache``).

    Returns:
        One entry per prompt video (per demonstration for ``video=demo``, else the one file):
        the projected states ``(T, D)``, and the (state, action) pairs of the dataset
        transitions they were projected onto ``(T', D), (T', A)`` (frames projected onto an
        episode's last observation, which has no action, are left out), for the BC baseline;
        and a report: frames, mean cosine similarity, and for ``video=demo`` the projection's
        error in state space (mean L2 distance to the true states, overall and per demo).
        ``video=text`` imagines the frames on ``device`` and writes them side by side to
        ``imagined_path`` (png).

    Raises:
        ValueError: the dataset has no frames.
    """
    if not episodes or getattr(episodes[0], "frames", None) is None:
        raise ValueError("video prompts project frames onto the dataset's frames; collect the dataset with frames "
                         "(dataset.frames=true dataset.recipe=explore-frames)")
    if settings.video == "demo":
        demos = expert_demos(cfg, settings, settings.video_size, settings.video_camera)
        videos, true_states = [d.frames[1:] for d in demos], [d.observations[1:] for d in demos]
    elif settings.video == "text":
        videos, true_states = [imagine_video(settings.video_pipeline, settings.video_text, settings.video_frames,
                                             settings.video_steps, settings.video_text_size, int(cfg.seed), device)], None
    else:
        videos, true_states = [read_video(settings.video)], None
    embedder = PixelEmbedder(settings.pixel_size) if settings.embedder == "pixels" else CLIPEmbedder(
        OmegaConf.to_container(cfg.clip, resolve=True))
    dataset_frames = np.concatenate([ep.frames for ep in episodes])
    observations = np.concatenate([ep.observations for ep in episodes])
    action_dim = episodes[0].actions.shape[1]
    actions = np.concatenate([np.concatenate([ep.actions, np.full((1, action_dim), np.nan, np.float32)]) for ep in episodes])
    dataset_name = str(OmegaConf.select(cfg, "dataset.id", default=None) or f"{cfg.task.name}-{cfg.dataset.recipe}").replace("/", "_")
    cache = Path(str(cfg.output_root)) / "cache" / f"{dataset_name}-{settings.embedder}.npz"
    index = FrameIndex(dataset_frames, embedder, cache)
    prompts, similarities, errors = [], [], []
    for i, frames in enumerate(videos):
        rows, similarity = index.project(frames)
        has_action = ~np.isnan(actions[rows]).any(axis=1)
        prompts.append((observations[rows], observations[rows][has_action], actions[rows][has_action]))
        similarities.append(similarity)
        if true_states is not None:
            errors.append(float(np.linalg.norm(observations[rows] - true_states[i], axis=1).mean()))
    if settings.video == "text" and imagined_path is not None:  # what was imagined, to look at
        import imageio.v3 as iio

        imagined_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = imagined_path.with_suffix(".tmp.png")
        iio.imwrite(tmp, np.concatenate(list(videos[0]), axis=1))
        tmp.replace(imagined_path)
    report: dict[str, Any] = {"video": str(settings.video), "frames": int(sum(len(v) for v in videos)),
                              "embedder": settings.embedder, "similarity_mean": float(np.concatenate(similarities).mean()),
                              "embeddings_cached": index.cached}
    if settings.video == "text":
        report.update(video_text=settings.video_text, video_pipeline=str(settings.video_pipeline))
    if settings.video == "demo":
        report.update(video_size=settings.video_size, video_camera=OmegaConf.to_container(settings.video_camera)
                      if isinstance(settings.video_camera, DictConfig) else settings.video_camera,
                      projection_error=float(np.mean(errors)), projection_error_per_demo=errors)
    return prompts, report


def zeroshot(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train or load FB, turn the prompt into a policy, evaluate it; writes ``z.json``,
    ``metrics.json``, ``report.md`` and videos into ``run_dir``.

    Raises:
        ValueError: a bad ``zeroshot`` setting or an unusable prompt (see :func:`prompt_z`).
    """
    validate_config(cfg, sections=("algo", "dataset", "trainer", "eval"))
    settings = read_zeroshot(cfg)
    paths = RunPaths(Path(run_dir))
    paths.root.mkdir(parents=True, exist_ok=True)
    generator = seed_everything(int(cfg.seed))
    device = resolve_device(cfg.device)
    if settings.checkpoint:
        learner, checkpoint = load_learner(settings.checkpoint, device)
        check_model(learner, settings.prompt, f"zeroshot.checkpoint={settings.checkpoint}")
        episodes = dataset_stage(cfg, keep_frames=settings.prompt == "video").episodes \
            if settings.prompt in ("reward", "video") else []
        source = str(checkpoint.path)
    else:
        learner, episodes = train_fb(cfg, paths, device, generator, keep_frames=settings.prompt == "video")
        source = str(latest_checkpoint(paths.checkpoints))
    policy, info, baseline = prompt_z(cfg, settings, learner, episodes, paths, device)
    if settings.prompt == "demo" or settings.video == "demo":  # from the demonstrations' own starts
        evaluation = OmegaConf.merge(cfg, {"eval": {"seed": settings.demo_seed, "episodes": settings.demo_episodes}})
    else:
        evaluation = cfg
    metrics = evaluate_stage(evaluation, policy)
    baseline_metrics = evaluate_stage(evaluation, baseline, desc="evaluate BC") if baseline is not None else None
    videos = record_videos(evaluation, policy, paths.videos)
    write_json_atomic(paths.root / "z.json", info)
    report = {"task": str(cfg.task.name), "prompt": settings.prompt, "model": type(learner).__name__,
              "checkpoint": source, "eval": metrics,
              "prompt_info": {k: v for k, v in info.items() if k not in ("z", "z_by_seed")}, "seed": int(cfg.seed)}
    if baseline_metrics is not None:
        report["baseline_bc"] = {"steps": settings.bc_steps, "eval": baseline_metrics}
    write_json_atomic(paths.metrics, report)
    lines = [f"# Zero-shot: {cfg.task.name}, prompt {settings.prompt}", "", f"Model ({type(learner).__name__}): {source}", ""]
    if baseline_metrics is None:
        lines += ["| metric | value |", "|---|---|", *[f"| {k} | {v:.3f} |" for k, v in metrics.items()], ""]
    else:
        lines += [f"| metric | prompt | BC on the prompt's pairs ({settings.bc_steps} updates) |", "|---|---|---|",
                  *[f"| {k} | {v:.3f} | {baseline_metrics.get(k, math.nan):.3f} |" for k, v in metrics.items()], ""]
    lines += [f"- {k}: {v}" for k, v in report["prompt_info"].items()]
    lines += [f"- video: [{v.name}]({v.relative_to(paths.root)})" for v in videos]
    write_text_atomic(paths.report, "\n".join(lines) + "\n")
    return report


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="zeroshot")
def _main(cfg: DictConfig) -> None:
    with run_folder("zeroshot", cfg) as folder:
        report = zeroshot(cfg, folder)
        success = report["eval"].get("success_rate", math.nan)
        print(f"[zeroshot] {report['task']} | prompt {report['prompt']}: success {success:.2f}")
        print(f"report: {folder / 'report.md'}")


def main() -> None:
    """Console entry point; exits 2 when no task is selected."""
    require_task("zeroshot")
    _main()


if __name__ == "__main__":
    main()


__all__ = ["GoalPromptPolicy", "PerEpisodePolicy", "check_model", "fit_bc", "TrackingPolicy", "ZeroShotConfig", "prompt_z", "train_fb", "zeroshot"]
