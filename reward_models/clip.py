"""CLIP zero-shot rewards (VLM-RM) and CLIP preference labels.

VLM-RM (Rocamonde et al., "Vision-Language Models are Zero-Shot Reward Models for RL", ICLR
2024, Eq. 2 with goal-baseline regularisation): with ``s``, ``g``, ``b`` the L2-normalised CLIP
embeddings of a frame, of the goal prompt(s) and of the baseline prompt(s),

    d = g - b,   P = alpha d d^T / ||d||^2 + (1 - alpha) I,
    r(s) = 1 - 0.5 ||(s - g) P||^2.

``alpha = 0`` gives ``r = s . g`` (cosine similarity to the goal); ``alpha = 1`` keeps only the
component of ``s - g`` along the baseline-to-goal direction. Several prompts are averaged after
normalisation and normalised again. The reward is per frame, so episodes may have any length.

Weights: an open_clip model by name with a pretrained tag (read from the local Hugging Face
cache; nothing is downloaded unless ``allow_download``) or a local checkpoint file. Frames are
preprocessed as tensors in batches: ``letterbox`` (default) scales the longer side to the model's
input size and pads, so nothing of the scene is cut off and nothing is stretched; ``center_crop``
(open_clip's own default) scales the shorter side and crops; ``squash`` resizes both sides.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from reward_models.labeling import Answer, Labeler
from reward_models.preferences import FIRST, SECOND, TIE

PREPROCESS_MODES = ("letterbox", "center_crop", "squash")
_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class CLIPWeightsError(RuntimeError):
    """CLIP weights are not available on this machine (and downloading was not allowed)."""


def goal_baseline_reward(image_embeddings: torch.Tensor, goal: torch.Tensor, baseline: torch.Tensor,
                         alpha: float) -> torch.Tensor:
    """VLM-RM reward ``r = 1 - 0.5 ||(s - g) P||^2`` (module docstring) for each row of ``s``.

    Args:
        image_embeddings: ``(N, E)`` float, L2-normalised frame embeddings ``s``.
        goal: ``(E,)`` L2-normalised goal embedding ``g``.
        baseline: ``(E,)`` L2-normalised baseline embedding ``b``.
        alpha: regularisation strength in [0, 1].

    Returns:
        ``(N,)`` float32 rewards; at most 1 (reached at ``s = g``).

    Raises:
        ValueError: ``alpha`` outside [0, 1]; goal equal to baseline while ``alpha > 0``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha}; expected in [0, 1]")
    s, g, b = image_embeddings.float(), goal.float(), baseline.float()
    diff = s - g
    if alpha == 0.0:
        projected = diff
    else:
        d = g - b
        norm = d.norm()
        if norm < 1e-8:
            raise ValueError("goal and baseline prompts have the same embedding; the direction d = g - b is undefined")
        d_hat = d / norm
        # (s - g) P = alpha ((s - g) . d_hat) d_hat + (1 - alpha) (s - g), P symmetric.
        projected = alpha * (diff @ d_hat)[:, None] * d_hat + (1.0 - alpha) * diff
    return 1.0 - 0.5 * projected.pow(2).sum(-1)


def preprocess_frames(frames: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float],
                      mode: str = "letterbox") -> torch.Tensor:
    """``(N, H, W, 3) uint8`` frames -> ``(N, 3, size, size) float32`` CLIP input.

    Args:
        frames: RGB frames, any ``H`` and ``W``.
        size: the model's square input size in pixels.
        mean, std: per-channel normalisation of the model (values in [0, 1] units).
        mode: ``letterbox`` (keep aspect, pad with black), ``center_crop`` or ``squash``.

    Raises:
        ValueError: wrong frame shape or dtype, unknown ``mode``.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"frames must be (N, H, W, 3) uint8, got {tuple(frames.shape)} {frames.dtype}")
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"preprocess={mode!r}; expected one of {', '.join(PREPROCESS_MODES)}")
    x = frames.permute(0, 3, 1, 2).float() / 255.0
    h, w = x.shape[-2:]
    if mode == "squash":
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    else:
        scale = size / (max(h, w) if mode == "letterbox" else min(h, w))
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
        if mode == "letterbox":
            top, left = (size - nh) // 2, (size - nw) // 2
            x = F.pad(x, (left, size - nw - left, top, size - nh - top))
        else:
            top, left = (nh - size) // 2, (nw - size) // 2
            x = x[..., top:top + size, left:left + size]
    x = x.clamp(0.0, 1.0)
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device)[:, None, None]
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device)[:, None, None]
    return (x - mean_t) / std_t


def resolve_clip_weights(model_name: str, pretrained: str | None, checkpoint: str | None,
                         cache_dir: str | None = None, allow_download: bool = False) -> tuple[str | None, dict]:
    """Where the weights come from: a local file path, a tag to download, or None (random).

    Returns:
        ``(pretrained argument for open_clip, pretrained config dict)``.

    Raises:
        FileNotFoundError: ``checkpoint`` names a missing file.
        ValueError: an unknown model name or pretrained tag.
        CLIPWeightsError: the tag's weights are not in the local cache and downloading is off;
            the message says how to provide them.
    """
    import open_clip

    if model_name.startswith("local-dir:"):  # open_clip_config.json + weights in one folder
        folder = Path(model_name.split(":", 1)[1]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"{folder} has no open_clip_config.json (model_name=local-dir:FOLDER needs it and the "
                                    "weights file beside it)")
        return (str(Path(checkpoint).expanduser()) if checkpoint else None), {}
    if model_name.startswith("hf-hub:") and not allow_download:
        raise CLIPWeightsError(f"{model_name} would be fetched from the Hugging Face hub, and downloading is off; "
                               "save the model folder on a machine with network and pass model_name=local-dir:FOLDER, "
                               "or set allow_download=true where the hub is reachable")
    if model_name.startswith("hf-hub:"):
        return None, {}
    if model_name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model_name!r}; known: {', '.join(open_clip.list_models()[:12])}, ... "
                         "(a custom model needs open_clip.add_model_config(path) first)")
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"CLIP checkpoint {path} does not exist (clip checkpoint= a local weights file)")
        tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained else {}
        return str(path), tag_cfg
    if not pretrained:
        return None, {}
    tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ValueError(f"unknown pretrained tag {pretrained!r} for {model_name}; known: {', '.join(tags) or 'none'}")
    if allow_download:
        return pretrained, tag_cfg
    from huggingface_hub import try_to_load_from_cache

    repo = tag_cfg.get("hf_hub", "").strip("/")
    for filename in _WEIGHT_FILES:
        found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir) if repo else None
        if isinstance(found, str) and Path(found).is_file():
            return found, tag_cfg
    raise CLIPWeightsError(
        f"the weights of {model_name} / {pretrained} (Hugging Face repo {repo or '?'}) are not on this machine, "
        "and downloading is off. Provide them one of three ways: (1) on a machine with network, run "
        f"`python -c \"import open_clip; open_clip.create_model('{model_name}', pretrained='{pretrained}')\"` "
        "and copy its Hugging Face cache (~/.cache/huggingface, or HF_HOME) here; (2) pass a local weights "
        "file as checkpoint=/path/to/open_clip_pytorch_model.bin; (3) set allow_download=true where the hub "
        "is reachable"
    )


class CLIPReward:
    """VLM-RM zero-shot reward of frames from an open_clip model (module docstring).

    Args:
        model_name: open_clip model, e.g. ``ViT-B-32``; ``local-dir:FOLDER`` for a folder with
            ``open_clip_config.json`` and the weights (loaded from there, offline); or a custom
            config added with ``open_clip.add_model_config``.
        pretrained: open_clip pretrained tag (e.g. ``laion2b_s34b_b79k``), read from the local
            Hugging Face cache; None with no ``checkpoint`` = random weights (benchmarks only).
        checkpoint: a local weights file; takes precedence over downloading.
        goal_prompts: texts describing the goal state (averaged).
        baseline_prompts: texts describing the environment without the goal (averaged).
        alpha: goal-baseline regularisation in [0, 1] (0 = plain cosine similarity).
        batch_size: frames per forward pass.
        device: ``cpu``, ``cuda``, ... (``auto``: CUDA when present).
        preprocess: ``letterbox`` (default, aspect preserved), ``center_crop`` or ``squash``.
        autocast: bfloat16/float16 autocast on CUDA (ignored on CPU).
        cache_dir: Hugging Face cache folder to look in (default: the hub's default).
        allow_download: let open_clip download the tag's weights (off: never touch the network).
        progress: show a progress bar (frames, rate, ETA) while :meth:`episode_rewards` scores
            a dataset.

    The model loads on first use, so building the object is cheap.

    Raises:
        ValueError: no goal prompt, ``alpha`` outside [0, 1], unknown ``preprocess``.
    """

    def __init__(self, model_name: str = "ViT-B-32", pretrained: str | None = "laion2b_s34b_b79k",
                 checkpoint: str | None = None, goal_prompts: Sequence[str] = ("a photo of a person wearing a sleeve",),
                 baseline_prompts: Sequence[str] = ("a photo of a person",), alpha: float = 0.5,
                 batch_size: int = 64, device: str = "auto", preprocess: str = "letterbox", autocast: bool = True,
                 cache_dir: str | None = None, allow_download: bool = False, progress: bool = False):
        if not goal_prompts:
            raise ValueError("goal_prompts is empty; give at least one text describing the goal")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha={alpha}; expected in [0, 1]")
        if preprocess not in PREPROCESS_MODES:
            raise ValueError(f"preprocess={preprocess!r}; expected one of {', '.join(PREPROCESS_MODES)}")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; expected >= 1")
        self.model_name, self.pretrained, self.checkpoint = model_name, pretrained, checkpoint
        self.goal_prompts, self.baseline_prompts = list(goal_prompts), list(baseline_prompts or goal_prompts)
        self.alpha, self.batch_size, self.preprocess, self.autocast = float(alpha), int(batch_size), preprocess, autocast
        self.cache_dir, self.allow_download, self.progress = cache_dir, allow_download, bool(progress)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self._model = None

    def _load(self) -> None:
        if self._model is not None:
            return
        import open_clip

        source, tag_cfg = resolve_clip_weights(self.model_name, self.pretrained, self.checkpoint, self.cache_dir,
                                               self.allow_download)
        model = open_clip.create_model(self.model_name, pretrained=source, device=self.device,
                                       force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
                                       cache_dir=self.cache_dir)
        model.eval().requires_grad_(False)
        cfg = model.visual.preprocess_cfg
        self._size = int(cfg["size"][0] if isinstance(cfg["size"], (tuple, list)) else cfg["size"])
        self._mean, self._std = tuple(cfg["mean"]), tuple(cfg["std"])
        self._model, self._tokenizer = model, open_clip.get_tokenizer(self.model_name)
        self.goal = self._embed_text(self.goal_prompts)
        self.baseline = self._embed_text(self.baseline_prompts)

    @torch.no_grad()
    def _embed_text(self, prompts: list[str]) -> torch.Tensor:
        tokens = self._tokenizer(prompts).to(self.device)
        e = F.normalize(self._model.encode_text(tokens).float(), dim=-1).mean(0)
        return F.normalize(e, dim=-1)

    def _autocast(self):
        enabled = self.autocast and self.device.type == "cuda"
        dtype = torch.bfloat16 if enabled and torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(self.device.type, dtype=dtype, enabled=enabled)

    @torch.no_grad()
    def embed_images(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings ``(N, E) float32`` of ``(N, H, W, 3) uint8`` frames, in batches."""
        self._load()
        frames = torch.as_tensor(np.asarray(frames))
        if frames.ndim == 3:
            frames = frames[None]
        out = []
        for part in frames.split(self.batch_size):
            x = preprocess_frames(part.to(self.device), self._size, self._mean, self._std, self.preprocess)
            with self._autocast():
                e = self._model.encode_image(x)
            out.append(F.normalize(e.float(), dim=-1))
        return torch.cat(out) if out else torch.zeros(0, self.goal.shape[0], device=self.device)

    def __call__(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        """VLM-RM rewards ``(N,) float32`` of ``(N, H, W, 3) uint8`` frames.

        Raises:
            CLIPWeightsError, FileNotFoundError, ValueError: see :func:`resolve_clip_weights`;
                frames of the wrong shape or dtype.
        """
        s = self.embed_images(frames)
        return goal_baseline_reward(s, self.goal, self.baseline, self.alpha).cpu().numpy().astype(np.float32)

    def episode_rewards(self, episodes: Sequence) -> list[np.ndarray]:
        """Rewards ``(T,) float32`` of each episode's transitions: the reward of the frame after each step.

        Raises:
            ValueError: an episode has no frames.
        """
        for i, ep in enumerate(episodes):
            if ep.frames is None:
                raise ValueError(f"episode {i} has no frames; CLIP rewards need a dataset collected with dataset.frames=true")
        out = []
        with tqdm(total=sum(len(ep.frames) - 1 for ep in episodes), desc="CLIP rewards", unit="frame",
                  disable=not self.progress, mininterval=1.0) as bar:
            for ep in episodes:
                out.append(self(ep.frames[1:]))
                bar.update(len(ep.frames) - 1)
        return out

    def provenance(self) -> dict:
        """JSON-able description: model, weights, prompts and their hash, alpha, preprocessing."""
        prompts = {"goal": self.goal_prompts, "baseline": self.baseline_prompts}
        return {"model": self.model_name, "pretrained": self.pretrained, "checkpoint": self.checkpoint,
                **prompts, "prompt_hash": hashlib.sha256(json.dumps(prompts).encode()).hexdigest()[:16],
                "alpha": self.alpha, "preprocess": self.preprocess}


class CLIPPreferenceLabeler(Labeler):
    """Preference labels from VLM-RM scores: the segment whose frames score higher is preferred.

    A segment's score is the mean CLIP reward of the frames after each of its steps. Pairs whose
    scores differ by less than ``tie_threshold`` are ties.

    Args:
        reward: the :class:`CLIPReward` to score frames with (or its keyword arguments).
        tie_threshold: score difference below which a pair is a tie. Default 0 (no ties).

    Raises:
        ValueError: ``tie_threshold`` < 0.
    """

    name = "clip"
    needs_frames = True

    def __init__(self, reward: CLIPReward | dict | None = None, tie_threshold: float = 0.0):
        if tie_threshold < 0:
            raise ValueError(f"tie_threshold={tie_threshold}; expected >= 0")
        self.reward = reward if isinstance(reward, CLIPReward) else CLIPReward(**(reward or {}))
        self.tie_threshold = float(tie_threshold)

    def settings(self) -> dict:
        """Model, weights, prompts (hash), alpha, preprocessing and the tie threshold."""
        return {**self.reward.provenance(), "tie_threshold": self.tie_threshold}

    def answers(self, episodes: Sequence, pairs: np.ndarray, segment_length: int, seed: int = 0,
                workdir: Path | None = None) -> Iterator[Answer]:
        """Answers for ``pairs (N, 2, 2)`` of ``(episode, start)`` segments: CLIP rewards of the
        frames of the episodes the pairs touch, then one answer per pair (outcome answered or tie).

        Raises:
            ValueError: an episode of a pair has no frames.
        """
        pairs = np.asarray(pairs, dtype=np.int64)
        needed = sorted(set(pairs[..., 0].ravel().tolist()))
        rewards = dict(zip(needed, self.reward.episode_rewards([episodes[e] for e in needed])))
        for i, pair in enumerate(pairs.tolist()):
            (e0, s0), (e1, s1) = pair
            diff = float(rewards[e1][s1:s1 + segment_length].mean() - rewards[e0][s0:s0 + segment_length].mean())
            if abs(diff) <= self.tie_threshold:
                yield Answer(i, TIE, "tie", {"score_difference": diff})
            else:
                yield Answer(i, SECOND if diff > 0 else FIRST, "answered", {"score_difference": diff})
