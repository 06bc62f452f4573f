"""Episodes and rollouts (the tensors learners sample from are in :mod:`policies.data`).

An episode of T steps holds, in Minari's conventions: ``observations (T+1, D) float32`` (the
last row is the observation after the final action), ``actions (T, A) float32``, ``rewards (T,)
float32`` (the environment's ground-truth reward: learners see it only when asked),
``terminations`` and ``truncations (T,) bool``, selected ``infos`` as ``(T+1,)`` arrays (index 0
from ``reset``, index t from the t-th step), and optionally ``frames (T+1, H, W, 3) uint8``
rendered with each observation.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np

from embodied.io import atomic_write
from envs.policies import Policy


@dataclass
class Episode:
    """One episode; shapes in the module docstring."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    infos: dict[str, np.ndarray] = field(default_factory=dict)
    policy: str = ""
    seed: int = -1
    frames: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def success(self) -> bool:
        """Whether ``info["success"]`` was ever true (Meta-World's convention)."""
        return bool(np.any(self.infos.get("success", False)))


def rollout(
    env: gym.Env,
    policy: Policy,
    seed: int,
    info_keys: Sequence[str] = ("success",),
    policy_name: str = "",
    render: bool = False,
) -> Episode:
    """Run one episode of ``policy`` in ``env`` from ``env.reset(seed=seed)``.

    Args:
        env: a gymnasium env with a flat ``Box`` observation (a ``TimeLimit`` ends the episode).
        policy: anything with ``reset(seed)`` and ``act(observation)``.
        seed: seeds both the env reset and the policy.
        info_keys: ``info`` entries to record (an entry missing from the reset info takes the
            value of the first step).
        policy_name: recorded in the episode.
        render: also record ``env.render()`` frames (``render_mode="rgb_array"`` needed).

    Raises:
        KeyError: an ``info_keys`` entry missing from a step's ``info``.
        ValueError: the env returned a non-finite observation or reward, or no frame.
    """
    observation, reset_info = env.reset(seed=int(seed))
    policy.reset(int(seed))
    observations = [np.asarray(observation, dtype=np.float32)]
    frames = [_frame(env)] if render else None
    actions, rewards, terminations, truncations = [], [], [], []
    infos: dict[str, list] = {k: [] for k in info_keys}
    while True:
        action = np.asarray(policy.act(observations[-1]), dtype=np.float32)
        observation, reward, terminated, truncated, info = env.step(action)
        observation = np.asarray(observation, dtype=np.float32)
        if not np.all(np.isfinite(observation)) or not np.isfinite(reward):
            raise ValueError(f"env returned a non-finite observation or reward at step {len(actions)} (seed {seed})")
        observations.append(observation)
        actions.append(action)
        rewards.append(reward)
        terminations.append(terminated)
        truncations.append(truncated)
        if render:
            frames.append(_frame(env))
        for key in info_keys:
            if key not in info:
                raise KeyError(f"info has no {key!r}; the env reports {sorted(info)}")
            infos[key].append(info[key])
        if terminated or truncated:
            break
    for key, values in infos.items():
        values.insert(0, reset_info.get(key, values[0]))
    return Episode(
        observations=np.stack(observations),
        actions=np.stack(actions),
        rewards=np.asarray(rewards, dtype=np.float32),
        terminations=np.asarray(terminations, dtype=bool),
        truncations=np.asarray(truncations, dtype=bool),
        infos={k: np.asarray(v) for k, v in infos.items()},
        policy=policy_name,
        seed=int(seed),
        frames=np.stack(frames) if render else None,
    )


def _frame(env: gym.Env) -> np.ndarray:
    frame = env.render()
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.dtype != np.uint8:
        raise ValueError(f"env.render() gave {type(frame).__name__}; expected an (H, W, 3) uint8 frame "
                         "(make the env with render_mode='rgb_array')")
    return frame


def mixture_assignment(mixture: Mapping[str, float], episodes: int, seed: int) -> list[str]:
    """Which behaviour policy collects each episode, in proportion to ``mixture``.

    Counts are the largest-remainder rounding of ``weight / sum * episodes``; the order is
    shuffled with ``seed``, so any prefix of the list is a fair sample of the mixture.

    Raises:
        ValueError: empty mixture, a negative weight, or weights summing to 0.
    """
    names = list(mixture)
    weights = np.asarray([float(mixture[n]) for n in names])
    if not names or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"mixture={dict(mixture)}; expected non-negative weights with a positive sum")
    exact = weights / weights.sum() * episodes
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: episodes - counts.sum()]:
        counts[i] += 1
    order = [n for n, c in zip(names, counts) for _ in range(c)]
    np.random.default_rng(seed).shuffle(order)
    return order


def save_episodes(path: str | Path, episodes: Sequence[Episode]) -> Path:
    """Write episodes (frames included) to one ``.npz`` file atomically (temp file + rename).

    Raises:
        ValueError: no episodes.
    """
    if not episodes:
        raise ValueError("no episodes to save")
    path = Path(path)
    arrays: dict[str, np.ndarray] = {"format_version": np.asarray(1)}
    for i, ep in enumerate(episodes):
        p = f"episode_{i:06d}/"
        arrays.update({
            p + "observations": ep.observations, p + "actions": ep.actions, p + "rewards": ep.rewards,
            p + "terminations": ep.terminations, p + "truncations": ep.truncations,
            p + "policy": np.asarray(ep.policy), p + "seed": np.asarray(ep.seed),
        })
        arrays.update({p + "infos/" + k: v for k, v in ep.infos.items()})
        if ep.frames is not None:
            arrays[p + "frames"] = ep.frames
    with atomic_write(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def load_episodes(path: str | Path) -> list[Episode]:
    """Read what :func:`save_episodes` wrote.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not an episode archive or an episode is inconsistent (names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no episode file at {path}")
    try:
        data = np.load(path, allow_pickle=False)
        arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not a readable episode archive: {error}") from error
    if "format_version" not in arrays:
        raise ValueError(f"{path} has no format_version: not written by save_episodes")
    grouped: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        if key.startswith("episode_"):
            name, field_name = key.split("/", 1)
            grouped.setdefault(name, {})[field_name] = value
    episodes = []
    for name in sorted(grouped):
        g = grouped[name]
        ep = Episode(
            observations=g["observations"], actions=g["actions"], rewards=g["rewards"],
            terminations=g["terminations"], truncations=g["truncations"],
            infos={k[len("infos/"):]: v for k, v in g.items() if k.startswith("infos/")},
            policy=str(g["policy"]), seed=int(g["seed"]), frames=g.get("frames"),
        )
        if len(ep.observations) != len(ep.actions) + 1 or len(ep.actions) == 0:
            raise ValueError(
                f"{path} {name}: {len(ep.observations)} observations for {len(ep.actions)} actions; "
                "expected T+1 observations for T >= 1 actions"
            )
        episodes.append(ep)
    return episodes
