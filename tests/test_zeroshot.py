"""Zero-shot prompts to a forward-backward model: goal, reward, demo and random z, the entry point
end to end on the maze, and a trained model reused for another prompt."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from embodied.zeroshot import GoalPromptPolicy, PerEpisodePolicy, ZeroShotConfig, fit_bc, zeroshot
from envs.pointmaze import goal_observation_of
from policies.bc import BCConfig, BCLearner
from policies.fb import FBConfig, FBLearner


def _compose(overrides):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="conf", version_base="1.3"):
            return compose(config_name="zeroshot", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def _small(root, *extra):
    return _compose(["+task=pointmaze", "dataset.episodes=4", "trainer.steps=30", "trainer.batch_size=32",
                     "trainer.checkpoint_every=30", "trainer.log_every=10", "algo.learner.z_dim=8",
                     "algo.learner.hidden_dims=[32]", "trainer.progress=false", "eval.episodes=2", "eval.videos=0",
                     "device=cpu", f"output_root={root}", *extra])


def test_a_goal_prompt_acts_towards_b_of_each_observations_goal():
    torch.manual_seed(0)
    learner = FBLearner(FBConfig(hidden_dims=[16], z_dim=8), 6, 2).eval()
    policy = GoalPromptPolicy(learner, goal_observation_of)
    observation = np.array([0.5, -1.0, 0.1, 0.0, 2.5, 2.5], np.float32)
    expected = learner.act(torch.as_tensor(observation)[None],
                           learner.goal_z(torch.as_tensor(goal_observation_of(observation))[None]))[0].numpy()
    assert np.allclose(policy.act(observation), expected)
    other_goal = observation.copy()
    other_goal[4:] = [-2.5, -2.5]
    assert not np.allclose(policy.act(other_goal), expected)  # another goal, another z, another action


def test_every_prompt_runs_end_to_end_and_a_trained_model_is_reused(tmp_path, datasets_root):
    first = zeroshot(_small(tmp_path, "prompt=goal"), tmp_path / "goal")
    assert first["prompt"] == "goal" and 0.0 <= first["eval"]["success_rate"] <= 1.0
    checkpoint = tmp_path / "goal" / "checkpoints"
    assert (checkpoint / "00000030").exists()
    for prompt in ("reward", "demo", "random"):
        report = zeroshot(_small(tmp_path, f"prompt={prompt}", f"zeroshot.checkpoint={checkpoint}"), tmp_path / prompt)
        assert report["checkpoint"].endswith("00000030") and not (tmp_path / prompt / "checkpoints").exists()
        z = json.loads((tmp_path / prompt / "z.json").read_text())["z"]
        assert math.isclose(float(np.linalg.norm(z)), math.sqrt(8), rel_tol=1e-4)  # on the sphere
    demo = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert demo["prompt_info"]["demo_success"] == 1.0 and demo["eval"]["episodes"] == 1.0
    tracking = zeroshot(_small(tmp_path, "prompt=demo", "zeroshot.window=20", f"zeroshot.checkpoint={checkpoint}"),
                        tmp_path / "tracking")
    assert tracking["prompt_info"]["window"] == 20


def test_bad_prompts_are_refused_with_what_is_expected(tmp_path):
    with pytest.raises(ValueError, match="expected one of"):
        ZeroShotConfig(prompt="audio")
    cfg = _compose(["+task=pointmass", "prompt=goal", "dataset.episodes=4", "trainer.steps=10", "trainer.batch_size=16",
                    "algo.learner.hidden_dims=[16]", "algo.learner.z_dim=4", "trainer.progress=false", "device=cpu",
                    f"output_root={tmp_path}"])
    with pytest.raises(ValueError, match="no goal_observation"):
        zeroshot(cfg, tmp_path / "run")


def test_a_reach_goal_observation_puts_the_hand_on_the_goal():
    import envs
    from envs.metaworld_adapter import hand_at_goal

    env = envs.make("embodied/MetaWorld-v0", task="reach-v3")
    try:
        observation, _ = env.reset(seed=0)
        goal_state = hand_at_goal(observation)
        goal = np.asarray(env.unwrapped._target_pos, np.float32)
        assert np.allclose(goal_state[0:3], goal) and np.allclose(goal_state[18:21], goal)
        assert np.array_equal(goal_state[3:18], observation[3:18]) and np.array_equal(goal_state[36:], observation[36:])
    finally:
        env.close()


def test_the_projection_returns_each_prompt_frames_own_dataset_frame(tmp_path):
    """Dataset frames: 30 distinct random images; prompt: 10 of them shuffled, with pixel noise and
    at another image size. Every prompt frame maps back to its source; the second index reads the
    cache."""
    from reward_models.projection import FrameIndex, PixelEmbedder

    rng = np.random.default_rng(0)
    dataset = rng.integers(0, 256, (30, 48, 48, 3)).astype(np.uint8)
    chosen = rng.permutation(30)[:10]
    prompt = np.clip(dataset[chosen].astype(np.int16) + rng.integers(-20, 21, (10, 48, 48, 3)), 0, 255).astype(np.uint8)
    prompt = np.repeat(np.repeat(prompt, 2, axis=1), 2, axis=2)  # 96 x 96: another size
    index = FrameIndex(dataset, PixelEmbedder(16), tmp_path / "cache.npz")
    rows, similarity = index.project(prompt)
    assert np.array_equal(rows, chosen) and not index.cached and (similarity > 0.5).all()
    again = FrameIndex(dataset, PixelEmbedder(16), tmp_path / "cache.npz")
    assert again.cached and torch.equal(again.embeddings, index.embeddings)
    assert not FrameIndex(dataset[:29], PixelEmbedder(16), tmp_path / "cache.npz").cached  # other frames: recomputed


def _tiny_text_pipelines(folder: Path) -> tuple[Path, Path]:
    """A text-to-image (Stable Diffusion) and a text-to-video (ModelScope's TextToVideoSD) diffusers
    pipeline with tiny random networks and a character-level CLIP tokenizer, saved as a user's
    local weights would be: the folders ``imagine_video`` loads."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        TextToVideoSDPipeline,
        UNet2DConditionModel,
        UNet3DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch], vocab[ch + "</w>"] = len(vocab), len(vocab) + 1
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                num_attention_heads=2, max_position_embeddings=16, projection_dim=16,
                                                bos_token_id=0, eos_token_id=1, pad_token_id=1))
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        block_out_channels=(8, 16), latent_channels=4, norm_num_groups=4, sample_size=16)
    common = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                  cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)
    unet = UNet2DConditionModel(down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), **common)
    unet3d = UNet3DConditionModel(down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                                  up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), **common)
    parts = dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=DDIMScheduler(clip_sample=False, steps_offset=1))
    StableDiffusionPipeline(unet=unet, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
                            **parts).save_pretrained(folder / "text-to-image")
    TextToVideoSDPipeline(unet=unet3d, **parts).save_pretrained(folder / "text-to-video")
    return folder / "text-to-image", folder / "text-to-video"


def test_imagined_prompt_frames_come_from_a_local_text_to_video_or_text_to_image_pipeline(tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    from reward_models.projection import imagine_video

    image_pipeline, video_pipeline = _tiny_text_pipelines(tmp_path)
    video = imagine_video(video_pipeline, "a red arm", frames=5, steps=2, size=16, seed=3)
    assert video.shape == (5, 16, 16, 3) and video.dtype == np.uint8 and video.std() > 0
    assert np.array_equal(video, imagine_video(video_pipeline, "a red arm", frames=5, steps=2, size=16, seed=3))
    assert not np.array_equal(video, imagine_video(video_pipeline, "a blue arm", frames=5, steps=2, size=16, seed=3))
    image = imagine_video(image_pipeline, "a red arm", frames=5, steps=2, size=16)
    assert image.shape == (1, 16, 16, 3)  # a text-to-image pipeline imagines one goal image
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        imagine_video(tmp_path / "nothing", "a red arm")
    with pytest.raises(ValueError, match="prompt is empty"):
        imagine_video(video_pipeline, "  ")
    DDPMPipeline(unet=UNet2DModel(sample_size=8, block_out_channels=(8, 16), norm_num_groups=4,
                                  down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2),
                 scheduler=DDPMScheduler()).save_pretrained(tmp_path / "unconditional")
    with pytest.raises(ValueError, match="takes no text prompt"):
        imagine_video(tmp_path / "unconditional", "a red arm")


def test_video_prompts_project_rendered_demonstrations_onto_the_dataset(tmp_path):
    cfg = _small(tmp_path, "prompt=video", "zeroshot.video=demo", "zeroshot.video_size=48", "dataset.frames=true",
                 "dataset.recipe=explore-frames", "dataset.width=32", "dataset.height=32", "zeroshot.pixel_size=16")
    report = zeroshot(cfg, tmp_path / "video")
    info = report["prompt_info"]
    assert info["frames"] > 10 and info["embedder"] == "pixels" and info["projection_error"] >= 0.0
    assert report["eval"]["episodes"] == 1.0  # evaluated from the demonstration's start
    assert report["baseline_bc"]["eval"]["episodes"] == 1.0  # BC on the projected pairs, same start
    # two demonstrations seen from another camera and size: one prompt (and one BC) per episode
    other = _small(tmp_path, "prompt=video", "zeroshot.video=demo", "zeroshot.video_size=40", "dataset.frames=true",
                   "dataset.recipe=explore-frames", "dataset.width=32", "dataset.height=32", "zeroshot.pixel_size=16",
                   "zeroshot.demo_episodes=2", "zeroshot.bc_steps=5", "zeroshot.video_camera={elevation: -55, azimuth: 60}",
                   f"zeroshot.checkpoint={tmp_path / 'video' / 'checkpoints'}")
    report = zeroshot(other, tmp_path / "camera")
    info = report["prompt_info"]
    assert report["eval"]["episodes"] == 2.0 and len(info["projection_error_per_demo"]) == 2
    assert info["video_camera"] == {"elevation": -55, "azimuth": 60} and info["embeddings_cached"]
    z = json.loads((tmp_path / "camera" / "z.json").read_text())
    assert sorted(z["z_by_seed"]) == ["2000000", "2000001"] and z["z_by_seed"]["2000000"] != z["z_by_seed"]["2000001"]
    # RLZero from text: frames imagined by a local text-to-video pipeline, projected, imitated
    _, video_pipeline = _tiny_text_pipelines(tmp_path)
    text = _small(tmp_path, "prompt=video", "zeroshot.video=text", "zeroshot.video_text='a ball in a maze'",
                  f"zeroshot.video_pipeline={video_pipeline}", "zeroshot.video_frames=4", "zeroshot.video_steps=2",
                  "zeroshot.video_text_size=16", "dataset.frames=true", "dataset.recipe=explore-frames", "dataset.width=32",
                  "dataset.height=32", "zeroshot.pixel_size=16", "zeroshot.bc_steps=5",
                  f"zeroshot.checkpoint={tmp_path / 'video' / 'checkpoints'}")
    report = zeroshot(text, tmp_path / "text")
    info = report["prompt_info"]
    assert info["frames"] == 4 and info["video_text"] == "a ball in a maze" and info["embeddings_cached"]
    assert (tmp_path / "text" / "videos" / "imagined.png").stat().st_size > 100
    with pytest.raises(ValueError, match="zeroshot.video"):
        ZeroShotConfig(prompt="video")
    with pytest.raises(ValueError, match="video_text=<prompt> and zeroshot.video_pipeline"):
        ZeroShotConfig(prompt="video", video="text", video_text="a ball")


def test_goal_conditioned_bc_is_the_goal_prompt_baseline_on_the_same_data(tmp_path, datasets_root):
    cfg = _compose(["+task=pointmaze", "algo=gcbc", "prompt=goal", "dataset.episodes=4", "trainer.steps=30",
                    "trainer.batch_size=32", "trainer.checkpoint_every=30", "algo.learner.hidden_dims=[32]",
                    "trainer.progress=false", "eval.episodes=2", "eval.videos=0", "device=cpu", f"output_root={tmp_path}"])
    report = zeroshot(cfg, tmp_path / "gcbc")
    assert report["model"] == "BCLearner" and 0.0 <= report["eval"]["success_rate"] <= 1.0
    learner = BCLearner(BCConfig(hidden_dims=[16], goal_conditioned=True), 6, 2).eval()
    policy = GoalPromptPolicy(learner, goal_observation_of)
    observation = np.array([0.5, -1.0, 0.1, 0.0, 2.5, 2.5], np.float32)
    goal = torch.as_tensor(goal_observation_of(observation))[None]
    assert np.allclose(policy.act(observation), learner.act(torch.as_tensor(observation)[None], goal)[0].numpy())
    for prompt in ("reward", "random"):  # only goal prompts can use a goal-conditioned BC
        with pytest.raises(ValueError, match="needs a forward-backward model"):
            zeroshot(_compose(["+task=pointmaze", "algo=gcbc", f"prompt={prompt}", "device=cpu", f"output_root={tmp_path}",
                               f"zeroshot.checkpoint={tmp_path / 'gcbc' / 'checkpoints'}"]), tmp_path / prompt)
    with pytest.raises(ValueError, match="trained without goals"):
        BCLearner(BCConfig(hidden_dims=[16]), 6, 2).goal_condition(goal)


def test_each_episode_is_prompted_by_its_own_demonstration_and_bc_fits_its_pairs():
    class Constant:
        def __init__(self, value):
            self.value, self.seeds = value, []

        def reset(self, seed=None):
            self.seeds.append(seed)

        def act(self, observation):
            return np.full(2, self.value, np.float32)

    first, second = Constant(0.1), Constant(-0.1)
    policy = PerEpisodePolicy({7: first, 8: second})
    policy.reset(8)
    assert policy.act(np.zeros(6))[0] == np.float32(-0.1) and second.seeds == [8]
    policy.reset(7)
    assert policy.act(np.zeros(6))[0] == np.float32(0.1)
    with pytest.raises(KeyError, match="seed 9"):
        policy.reset(9)
    rng = np.random.default_rng(0)
    states = rng.uniform(-1, 1, (64, 3)).astype(np.float32)
    actions = np.tanh(states[:, :2] * 0.8)
    bc = fit_bc(states, actions, 400, 0, torch.device("cpu"), hidden_dims=(64, 64))
    error = (bc.act(torch.as_tensor(states)).numpy() - actions).__abs__().mean()
    assert error < 0.05, error
    with pytest.raises(ValueError, match="pairs of equal count"):
        fit_bc(states, actions[:10], 1, 0, torch.device("cpu"))
