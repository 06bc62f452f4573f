"""CLIP image-embedding throughput: batched against one frame at a time, in one process.

    python benchmarks/bench_clip.py                      # ViT-B-32, random weights, 256 frames
    python benchmarks/bench_clip.py --batch 32 --frames 512 --device cuda

Random weights time the same as trained ones (no download needed). Frames are 128x128 uint8
like the dressing dataset's, so letterbox preprocessing is part of the time, as in labeling.
Prints images/s for each mode and the ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from reward_models.clip import CLIPReward


def throughput(reward: CLIPReward, frames: np.ndarray, batched: bool) -> float:
    """Frames per second of ``reward.embed_images`` over ``frames``."""
    if reward.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    if batched:
        reward.embed_images(frames)
    else:
        for frame in frames:
            reward.embed_images(frame[None])
    if reward.device.type == "cuda":
        torch.cuda.synchronize()
    return len(frames) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=128, help="frame side in pixels")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(args.frames, args.size, args.size, 3), dtype=np.uint8)
    reward = CLIPReward(args.model, pretrained=None, batch_size=args.batch, device=args.device)
    reward.embed_images(frames[: args.batch])  # load and warm up
    reward.embed_images(frames[:1])
    one = throughput(reward, frames[: max(32, args.frames // 4)], batched=False)
    batched = throughput(reward, frames, batched=True)
    print(f"{args.model} random weights, {args.size}x{args.size} frames, device {args.device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"  one frame at a time : {one:8.1f} images/s")
    print(f"  batches of {args.batch:<4d}     : {batched:8.1f} images/s")
    print(f"  ratio               : {batched / one:8.2f}x")


if __name__ == "__main__":
    main()
