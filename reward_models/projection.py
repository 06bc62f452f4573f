"""RLZero's projection step (Sikchi et al. 2024, "Zero-Shot Language to Behaviors without any
Supervision", Sec. 4.2): each frame of an imagined or recorded prompt video is replaced by the
agent's own observation whose rendered frame is nearest in an image embedding; imitating the
projected sequence then gives the behaviour.

- :class:`PixelEmbedder`: the configurable alternative to CLIP when no weights are at hand:
  frames downsampled by area averaging to ``size`` x ``size``, mean-centred and L2-normalised.
- :class:`CLIPEmbedder`: a CLIP image encoder (:class:`reward_models.clip.CLIPReward`'s), for
  prompts from another camera or renderer than the dataset's.
- :class:`FrameIndex`: the dataset's frame embeddings, computed once and cached on disk
  (``.npz``, keyed by the embedder's settings and the frames' content hash), and
  :meth:`FrameIndex.project`: the nearest dataset frame of each prompt frame by cosine
  similarity.
- :func:`read_video`: frames of a video file (imageio) or of an image folder (sorted names).
- :func:`imagine_video`: RLZero's "imagine" step: frames from a text-to-video diffusers pipeline
  (or one frame from a text-to-image pipeline) saved in a local folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.nn import functional as F

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


class Embedder(Protocol):
    """Frames ``(N, H, W, 3) uint8`` -> L2-normalised embeddings ``(N, E) float32``."""

    def settings(self) -> dict[str, Any]:
        """What the embeddings depend on (keys the cache)."""

    def __call__(self, frames: np.ndarray) -> torch.Tensor: ...


class PixelEmbedder:
    """Area-averaged ``size`` x ``size`` RGB pixels, centred per frame and L2-normalised; needs no
    weights. Robust to the image size of the prompt, not to another camera.

    Raises:
        ValueError: ``size`` < 4.
    """

    def __init__(self, size: int = 32):
        if size < 4:
            raise ValueError(f"pixel embedder size={size}; expected >= 4")
        self.size = int(size)

    def settings(self) -> dict[str, Any]:
        return {"embedder": "pixels", "size": self.size}

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(frames)).permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(self.size, self.size), mode="area").reshape(len(x), -1)
        return F.normalize(x - x.mean(1, keepdim=True), dim=-1)


class CLIPEmbedder:
    """CLIP image embeddings (a :class:`reward_models.clip.CLIPReward`'s encoder).

    Args:
        clip: keyword arguments of :class:`reward_models.clip.CLIPReward` (the root ``clip`` node).
    """

    def __init__(self, clip: dict[str, Any]):
        from reward_models.clip import CLIPReward

        self.arguments = dict(clip)
        self.model = CLIPReward(**{**self.arguments, "goal_prompts": self.arguments.get("goal_prompts") or ["a photo"]})

    def settings(self) -> dict[str, Any]:
        keys = ("model_name", "pretrained", "checkpoint", "preprocess")
        return {"embedder": "clip", **{k: self.arguments.get(k) for k in keys}}

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        return self.model.embed_images(frames).float().cpu()


def read_video(path: str | Path) -> np.ndarray:
    """Frames ``(T, H, W, 3) uint8`` of a video file or of a folder of images (sorted by name).

    Raises:
        FileNotFoundError: nothing at ``path``, or a folder without images.
        ValueError: frames that are not RGB images of one size.
    """
    import imageio.v3 as iio

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        frames = [np.asarray(iio.imread(p)) for p in files]
    elif path.exists():
        frames = list(iio.imiter(path))
    else:
        raise FileNotFoundError(f"no video or image folder at {path}")
    frames = [f[..., :3] if f.ndim == 3 else np.repeat(f[..., None], 3, -1) for f in frames]
    if len({f.shape for f in frames}) != 1:
        raise ValueError(f"{path}: frames of different sizes {sorted({f.shape for f in frames})}")
    return np.stack(frames).astype(np.uint8)


def imagine_video(pipeline: str | Path, text: str, frames: int = 16, steps: int = 25, size: int | None = None,
                  seed: int = 0, device: str | torch.device = "cpu") -> np.ndarray:
    """RLZero's imagination: frames ``(T, H, W, 3) uint8`` of ``text`` from a diffusers pipeline
    saved in a local folder (``model_index.json``; ``DiffusionPipeline.from_pretrained`` with
    ``local_files_only``: nothing is downloaded). A text-to-video pipeline (one whose call takes
    ``num_frames``, e.g. ``TextToVideoSDPipeline``) gives ``frames`` frames; a text-to-image
    pipeline (e.g. ``StableDiffusionPipeline``) gives one frame: an imagined goal image.

    Args:
        pipeline: the pipeline's folder.
        text: the prompt, e.g. "a robot arm pulls a sleeve up a person's arm".
        frames: frames of a text-to-video pipeline.
        steps: denoising steps (``num_inference_steps``).
        size: height and width in px (None: the pipeline's default).
        seed: the initial noise's seed.

    Raises:
        FileNotFoundError: no pipeline folder at ``pipeline``.
        ImportError: a pipeline component needs a package that is not installed (named).
        ValueError: an empty prompt, or a pipeline that takes no text prompt.
    """
    import inspect

    from diffusers import DiffusionPipeline

    path = Path(pipeline)
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"no diffusers pipeline at {path} (expected its model_index.json); save one with "
                                "pipeline.save_pretrained(folder)")
    if not str(text).strip():
        raise ValueError("the text prompt is empty; say what the video should show")
    pipe = DiffusionPipeline.from_pretrained(path, local_files_only=True).to(device)
    pipe.set_progress_bar_config(disable=True)
    parameters = inspect.signature(pipe.__call__).parameters
    if "prompt" not in parameters:
        raise ValueError(f"{type(pipe).__name__} at {path} takes no text prompt; give a text-to-video or text-to-image pipeline")
    kwargs: dict[str, Any] = {"prompt": str(text), "num_inference_steps": int(steps), "output_type": "np",
                              "generator": torch.Generator(device=device).manual_seed(int(seed))}
    if size is not None:
        kwargs.update(height=int(size), width=int(size))
    video = "num_frames" in parameters
    if video:
        kwargs["num_frames"] = int(frames)
    out = pipe(**kwargs)
    array = np.asarray(out.frames[0] if video else out.images, dtype=np.float32)  # (T, H, W, 3) in [0, 1]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"{type(pipe).__name__} returned frames of shape {array.shape}; expected (T, H, W, 3)")
    return (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)


class FrameIndex:
    """The dataset's frames, embedded once, and nearest-frame projection of prompt frames.

    Args:
        frames: ``(N, H, W, 3) uint8``, one per dataset observation.
        embedder: :class:`PixelEmbedder`, :class:`CLIPEmbedder` or any :class:`Embedder`.
        cache: an ``.npz`` file to keep the embeddings in (reused when the embedder's settings and
            the frames' hash match; rewritten atomically otherwise); None: no cache.
        chunk: frames embedded at a time.
    """

    def __init__(self, frames: np.ndarray, embedder: Embedder, cache: str | Path | None = None, chunk: int = 1024):
        self.embedder = embedder
        frames = np.asarray(frames)
        digest = hashlib.sha256(frames.tobytes()).hexdigest()[:16]
        key = json.dumps({**embedder.settings(), "frames": digest, "count": len(frames)}, sort_keys=True, default=str)
        self.cached = False
        if cache is not None and Path(cache).exists():
            with np.load(cache) as stored:
                if str(stored["key"]) == key:
                    self.embeddings, self.cached = torch.as_tensor(stored["embeddings"]), True
        if not self.cached:
            self.embeddings = torch.cat([embedder(frames[i:i + chunk]) for i in range(0, len(frames), chunk)])
            if cache is not None:
                cache = Path(cache)
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_name(f".{cache.name}.tmp.npz")
                np.savez(tmp, key=np.asarray(key), embeddings=self.embeddings.numpy())
                tmp.replace(cache)

    def project(self, prompt_frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The nearest dataset frame of each prompt frame: indices ``(T,) int64`` and cosine
        similarities ``(T,) float32``."""
        query = self.embedder(np.asarray(prompt_frames))
        similarity = query @ self.embeddings.T
        best = similarity.max(dim=1)
        return best.indices.numpy().astype(np.int64), best.values.numpy().astype(np.float32)


__all__ = ["CLIPEmbedder", "Embedder", "FrameIndex", "PixelEmbedder", "read_video"]
