"""PointMass task, behaviour policies and headless GL selection."""

from __future__ import annotations

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import envs
from embodied.data import rollout
from envs.pointmass import PointMassEnv, PointMassExpert
from envs.policies import NoisyPolicy, RandomPolicy
from envs.rendering import select_mujoco_gl


def test_same_seed_same_trajectory():
    env = envs.make("embodied/PointMass-v0")
    policy = NoisyPolicy(PointMassExpert(), env.action_space, noise_std=0.5, random_action_prob=0.2)
    a, b = rollout(env, policy, seed=3), rollout(env, policy, seed=3)
    c = rollout(env, policy, seed=4)
    assert np.array_equal(a.observations, b.observations) and np.array_equal(a.actions, b.actions)
    assert not np.array_equal(a.observations, c.observations)


def test_expert_beats_random_and_episodes_have_documented_shapes():
    env = envs.make("embodied/PointMass-v0")
    expert = [rollout(env, PointMassExpert(), seed=s) for s in range(10)]
    random = [rollout(env, RandomPolicy(env.action_space), seed=s) for s in range(10)]
    assert np.mean([e.success for e in expert]) == 1.0
    assert np.mean([e.success for e in random]) <= 0.3
    ep = expert[0]
    assert ep.observations.shape == (101, 6) and ep.observations.dtype == np.float32
    assert ep.actions.shape == (100, 2) and ep.truncations[-1] and not ep.terminations.any()


def test_rendering_gives_rgb_frames():
    env = envs.make("embodied/PointMass-v0", render_mode="rgb_array", width=64, height=48)
    env.reset(seed=0)
    frame = env.render()
    env.close()
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8 and frame.std() > 5


def test_bad_actions_and_settings_raise():
    env = envs.make("embodied/PointMass-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match="action must be 2"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="render_mode"):
        PointMassEnv(render_mode="human")
    with pytest.raises(gym.error.Error, match="embodied/PointMass-v0"):
        envs.make("embodied/Nope-v0")
    with pytest.raises(ValueError, match="noise_std"):
        NoisyPolicy(PointMassExpert(), env.action_space, noise_std=-1)
    with pytest.raises(TypeError, match="bounded Box"):
        RandomPolicy(gym.spaces.Discrete(3))


def test_random_policy_is_reproducible_and_in_bounds():
    space = gym.spaces.Box(-1, 1, (4,), np.float32)
    p, q = RandomPolicy(space), RandomPolicy(space)
    p.reset(5), q.reset(5)
    a = [p.act(None) for _ in range(20)]
    assert all(space.contains(x) for x in a)
    assert np.array_equal(np.stack(a), np.stack([q.act(None) for _ in range(20)]))


def _gl_choice(env_update: dict[str, str]) -> str:
    code = "import envs, os; print(os.environ['MUJOCO_GL'], os.environ.get('PYOPENGL_PLATFORM'))"
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    env.update(env_update)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_gl_backend_keeps_user_choice_else_picks_by_gpu():
    assert _gl_choice({"MUJOCO_GL": "egl"}) == "egl egl"
    expected = "egl" if envs.rendering.nvidia_gpu_visible() else "osmesa"
    assert _gl_choice({}) == f"{expected} {expected}"
    assert _gl_choice({"CUDA_VISIBLE_DEVICES": "-1"}) == "osmesa osmesa"


def test_gl_backend_rejects_unknown_values(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "vulkan")
    with pytest.raises(ValueError, match="MUJOCO_GL='vulkan'"):
        select_mujoco_gl()
