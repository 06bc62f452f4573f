"""CLIP zero-shot rewards (VLM-RM) with a tiny open_clip model the test builds, and CLIP labels."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from torch.nn import functional as F

from embodied.data import Episode
from reward_models.clip import (
    CLIPPreferenceLabeler,
    CLIPReward,
    CLIPWeightsError,
    goal_baseline_reward,
    preprocess_frames,
)
from tests.conftest import TINY


def _hand_reward(s: np.ndarray, g: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """VLM-RM: r = 1 - 0.5 ||(s - g) P||^2, P = alpha d d^T / ||d||^2 + (1 - alpha) I, d = g - b."""
    d = (g - b)[:, None]
    P = alpha * (d @ d.T) / float((d.T @ d)[0, 0]) + (1 - alpha) * np.eye(len(g))
    return np.array([1 - 0.5 * np.sum(((si - g) @ P) ** 2) for si in s])


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_goal_baseline_projection_matches_the_papers_formula(alpha):
    rng = np.random.default_rng(0)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    s, g, b = unit(rng.normal(size=(5, 8))), unit(rng.normal(size=8)), unit(rng.normal(size=8))
    ours = goal_baseline_reward(torch.tensor(s), torch.tensor(g), torch.tensor(b), alpha).numpy()
    np.testing.assert_allclose(ours, _hand_reward(s, g, b, alpha), rtol=1e-5, atol=1e-6)
    if alpha == 0.0:  # no regularisation: the cosine similarity to the goal
        np.testing.assert_allclose(ours, s @ g, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="alpha=1.5"):
        goal_baseline_reward(torch.tensor(s), torch.tensor(g), torch.tensor(b), 1.5)


def test_clip_reward_from_a_local_checkpoint_equals_the_formula_on_the_models_embeddings(tiny_checkpoint):
    path, model = tiny_checkpoint
    reward = CLIPReward(TINY, pretrained=None, checkpoint=str(path), goal_prompts=["a sleeve on an arm", "a dressed arm"],
                        baseline_prompts=["an arm"], alpha=0.5, batch_size=4, device="cpu")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(7, 24, 40, 3), dtype=np.uint8)  # not square: letterboxed
    r = reward(frames)
    assert r.shape == (7,) and r.dtype == np.float32 and np.isfinite(r).all()

    tokenizer = open_clip.get_tokenizer(TINY)
    with torch.no_grad():
        def text(prompts):
            return F.normalize(F.normalize(model.encode_text(tokenizer(prompts)), dim=-1).mean(0), dim=-1).numpy()
        g, b = text(["a sleeve on an arm", "a dressed arm"]), text(["an arm"])
        x = preprocess_frames(torch.as_tensor(frames), 32, model.visual.preprocess_cfg["mean"],
                              model.visual.preprocess_cfg["std"], "letterbox")
        s = F.normalize(model.encode_image(x), dim=-1).numpy()
    np.testing.assert_allclose(r, _hand_reward(s, g, b, 0.5), rtol=1e-4, atol=1e-5)
    # any episode length, one frame at a time or batched
    np.testing.assert_allclose(reward(frames[:3]), r[:3], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(reward(frames[5]), r[5:6], rtol=1e-4, atol=1e-5)


def test_missing_weights_give_an_error_that_says_how_to_provide_them(tmp_path, tiny_checkpoint):
    reward = CLIPReward("ViT-B-32", pretrained="laion2b_s34b_b79k", cache_dir=str(tmp_path), device="cpu")
    with pytest.raises(CLIPWeightsError, match="checkpoint=/path/to/open_clip_pytorch_model.bin"):
        reward(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown pretrained tag 'no-such-tag'"):
        CLIPReward("ViT-B-32", pretrained="no-such-tag", cache_dir=str(tmp_path))(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="missing.bin does not exist"):
        CLIPReward(TINY, checkpoint=str(tmp_path / "missing.bin"))(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-Nope'"):
        CLIPReward("ViT-Nope", pretrained=None)(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"frames must be \(N, H, W, 3\) uint8"):
        CLIPReward(TINY, pretrained=None, checkpoint=str(tiny_checkpoint[0]))(np.zeros((1, 8, 8, 3), np.float32))


def test_preprocessing_keeps_the_aspect_ratio_by_default():
    frames = torch.full((1, 16, 32, 3), 255, dtype=torch.uint8)  # a white 2:1 frame
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # maps 0 -> -1, 1 -> 1
    letterbox = preprocess_frames(frames, 32, mean, std, "letterbox")
    assert letterbox.shape == (1, 3, 32, 32)
    assert torch.allclose(letterbox[0, :, :8], torch.tensor(-1.0))  # black bars above and below
    assert torch.allclose(letterbox[0, :, 8:24], torch.tensor(1.0), atol=1e-3)  # the whole frame, unstretched
    assert torch.allclose(preprocess_frames(frames, 32, mean, std, "center_crop"), torch.tensor(1.0), atol=1e-3)
    assert torch.allclose(preprocess_frames(frames, 32, mean, std, "squash"), torch.tensor(1.0), atol=1e-3)
    with pytest.raises(ValueError, match="preprocess='zoom'"):
        preprocess_frames(frames, 32, mean, std, "zoom")


def test_clip_preference_labeler_prefers_the_segment_with_higher_scores(tiny_checkpoint):
    path, _ = tiny_checkpoint
    rng = np.random.default_rng(1)
    episodes = [Episode(observations=np.zeros((9, 2), np.float32), actions=np.zeros((8, 1), np.float32),
                        rewards=np.zeros(8, np.float32), terminations=np.zeros(8, bool), truncations=np.zeros(8, bool),
                        infos={}, frames=rng.integers(0, 256, size=(9, 16, 16, 3), dtype=np.uint8)) for _ in range(3)]
    labeler = CLIPPreferenceLabeler({"model_name": TINY, "pretrained": None, "checkpoint": str(path), "device": "cpu"})
    pairs = np.array([[[0, 0], [1, 2]], [[2, 4], [0, 3]], [[1, 0], [2, 1]]])
    labels = labeler.label_segments(episodes, pairs, 4)
    rewards = labeler.reward.episode_rewards(episodes)
    for pair, label in zip(pairs, labels.labels):
        first, second = (rewards[e][s:s + 4].mean() for e, s in pair)
        assert label == (1.0 if second > first else 0.0)
    assert labels.provenance["labeler"] == "clip" and len(labels.provenance["prompt_hash"]) == 16
    no_frames = [Episode(**{**ep.__dict__, "frames": None}) for ep in episodes]
    with pytest.raises(ValueError, match="episode 0 has no frames"):
        labeler.label_segments(no_frames, pairs, 4)


def test_scoring_a_dataset_shows_a_progress_bar_of_frames(tiny_checkpoint, capsys):
    path, _ = tiny_checkpoint
    rng = np.random.default_rng(2)
    episodes = [Episode(observations=np.zeros((9, 2), np.float32), actions=np.zeros((8, 1), np.float32),
                        rewards=np.zeros(8, np.float32), terminations=np.zeros(8, bool), truncations=np.zeros(8, bool),
                        infos={}, frames=rng.integers(0, 256, size=(9, 16, 16, 3), dtype=np.uint8)) for _ in range(3)]
    quiet = CLIPReward(TINY, pretrained=None, checkpoint=str(path), device="cpu")
    rewards = quiet.episode_rewards(episodes)
    assert "CLIP rewards" not in capsys.readouterr().err
    shown = CLIPReward(TINY, pretrained=None, checkpoint=str(path), device="cpu", progress=True)
    again = shown.episode_rewards(episodes)
    err = capsys.readouterr().err
    assert "CLIP rewards: 100%" in err and "24/24" in err
    assert all(np.array_equal(a, b) for a, b in zip(rewards, again))


def test_local_dir_and_hub_model_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="no open_clip_config.json"):
        CLIPReward(f"local-dir:{tmp_path}", pretrained=None)(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(CLIPWeightsError, match="local-dir:FOLDER"):
        CLIPReward("hf-hub:someone/some-clip", pretrained=None)(np.zeros((1, 8, 8, 3), np.uint8))
