"""Export to and import from the LeRobot dataset format, v3.0 (parquet + mp4), without lerobot.

Why our own writer: the registry's ``lerobot-dataset`` package would downgrade numpy and pin
setuptools and packaging in the main environment (see the README); the format itself is
parquet tables, JSON and mp4 files, which pyarrow and imageio-ffmpeg write.

Layout written (LeRobot ``CODEBASE_VERSION = "v3.0"``)::

    <root>/meta/info.json                      features, fps, path templates, totals
    <root>/meta/stats.json                     mean / std / min / max / count per feature
    <root>/meta/tasks.parquet                  task text (index) -> task_index
    <root>/meta/episodes/chunk-000/file-000.parquet   one row per episode: length, tasks,
                                               dataset_from_index / _to_index, file and video
                                               locations (from_timestamp / to_timestamp)
    <root>/data/chunk-000/file-000.parquet     one row per step
    <root>/videos/<image key>/chunk-000/file-000.mp4  all episodes' frames, H.264

A row (frame) ``t`` of an episode holds ``observation.state`` = ``o_t``, ``action`` = ``a_t``,
``next.reward`` = ``r_t``, ``next.done`` (terminated, or truncated on the last row),
``next.success``, and, so that our episodes (``T + 1`` observations) survive the round trip,
``next.observation.state`` = ``o_{t+1}`` and ``next.truncated``. The video holds ``T + 1``
frames per episode; LeRobot reads frame ``t`` at ``from_timestamp + t / fps`` and never the
extra last one. Importing a dataset LeRobot wrote (no ``next.observation.state``) takes
``o_{t+1}`` from the next row, so each episode gives ``T - 1`` transitions.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embodied.data import Episode

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
IMAGE_KEY = "observation.images.main"


class LeRobotFormatError(ValueError):
    """A folder is not a LeRobot v3.0 dataset we can read; the message names what is wrong."""


def _vector_feature(dim: int, dtype: str = "float32", prefix: str = "") -> dict:
    return {"dtype": dtype, "shape": [int(dim)], "names": [f"{prefix}{i}" for i in range(int(dim))]}


def _stats(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=np.float64)
    return {"mean": values.mean(0).tolist(), "std": values.std(0).tolist(), "min": values.min(0).tolist(),
            "max": values.max(0).tolist(), "count": [int(len(values))]}


def _pixel_stats(frame_batches) -> dict:
    """Per-channel mean / std / min / max (values in [0, 1]) and pixel count of ``(T, H, W, 3)
    uint8`` batches, accumulated batch by batch so that memory stays at one episode."""
    count, total, squares = 0, np.zeros(3), np.zeros(3)
    low, high = np.full(3, 255), np.zeros(3, dtype=np.int64)
    for frames in frame_batches:
        pixels = np.asarray(frames).reshape(-1, 3)
        count += len(pixels)
        total += pixels.sum(0, dtype=np.float64)
        squares += np.square(pixels, dtype=np.float64).sum(0)
        low, high = np.minimum(low, pixels.min(0)), np.maximum(high, pixels.max(0))
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return {"mean": (mean / 255).tolist(), "std": (std / 255).tolist(), "min": (low / 255).tolist(),
            "max": (high / 255).tolist(), "count": [int(count)]}


def _fixed_list(values: np.ndarray) -> pa.FixedSizeListArray:
    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def export_lerobot(episodes: Sequence[Episode], root: str | Path, fps: float, task: str,
                   robot_type: str = "embodied", image_key: str = IMAGE_KEY, overwrite: bool = False) -> Path:
    """Write ``episodes`` as a LeRobot v3.0 dataset in the folder ``root`` (atomically).

    Args:
        episodes: our episodes; frames ``(T+1, H, W, 3) uint8`` go to an mp4 when every episode
            has them.
        root: the dataset folder to create.
        fps: control rate in Hz (timestamps are ``frame_index / fps``).
        task: the task in words (LeRobot's task string).
        robot_type: written to ``info.json``.
        image_key: the camera's feature name.
        overwrite: replace an existing folder.

    Returns:
        ``root``.

    Raises:
        FileExistsError: ``root`` exists and ``overwrite`` is off.
        ValueError: no episodes, an empty episode, or frames on only some episodes.
    """
    root = Path(root)
    if root.exists() and not overwrite:
        raise FileExistsError(f"{root} exists; pass overwrite=True to replace it")
    if not episodes:
        raise ValueError("no episodes to export")
    for i, ep in enumerate(episodes):
        if len(ep.actions) == 0:
            raise ValueError(f"episode {i} is empty (0 steps); LeRobot episodes need at least one frame")
    with_frames = [ep.frames is not None for ep in episodes]
    if any(with_frames) and not all(with_frames):
        raise ValueError(f"episodes {[i for i, f in enumerate(with_frames) if not f][:5]} have no frames while others do")
    has_video = all(with_frames)
    D, A = episodes[0].observations.shape[1], episodes[0].actions.shape[1]

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        columns: dict[str, list] = {k: [] for k in ("observation.state", "action", "next.observation.state",
                                                    "next.reward", "next.done", "next.truncated", "next.success",
                                                    "timestamp", "frame_index", "episode_index", "index", "task_index")}
        episode_rows, start, video_frames, video_time = [], 0, 0, 0.0
        writer = None
        if has_video:
            import imageio.v2 as imageio

            video_file = staging / VIDEO_PATH.format(video_key=image_key, chunk_index=0, file_index=0)
            video_file.parent.mkdir(parents=True, exist_ok=True)
            writer = imageio.get_writer(video_file, fps=fps, codec="libx264", pixelformat="yuv420p",
                                        macro_block_size=1, ffmpeg_params=["-crf", "15"], ffmpeg_log_level="error")
        for e, ep in enumerate(episodes):
            T = len(ep.actions)
            success = np.asarray(ep.infos.get("success", np.zeros(T + 1)), dtype=bool)
            done = np.asarray(ep.terminations, dtype=bool).copy()
            done[-1] |= bool(ep.truncations[-1])
            columns["observation.state"].append(ep.observations[:-1])
            columns["next.observation.state"].append(ep.observations[1:])
            columns["action"].append(ep.actions)
            columns["next.reward"].append(np.asarray(ep.rewards, np.float32))
            columns["next.done"].append(done)
            columns["next.truncated"].append(np.asarray(ep.truncations, dtype=bool))
            columns["next.success"].append(success[1:T + 1] if len(success) == T + 1 else success[:T])
            columns["timestamp"].append(np.arange(T, dtype=np.float32) / np.float32(fps))
            columns["frame_index"].append(np.arange(T, dtype=np.int64))
            columns["episode_index"].append(np.full(T, e, np.int64))
            columns["index"].append(np.arange(start, start + T, dtype=np.int64))
            columns["task_index"].append(np.zeros(T, np.int64))
            row = {"episode_index": e, "tasks": [task], "length": T, "dataset_from_index": start,
                   "dataset_to_index": start + T, "data/chunk_index": 0, "data/file_index": 0,
                   "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
            if writer is not None:
                for frame in ep.frames:
                    writer.append_data(np.asarray(frame, np.uint8))
                video_time = video_frames / fps
                row.update({f"videos/{image_key}/chunk_index": 0, f"videos/{image_key}/file_index": 0,
                            f"videos/{image_key}/from_timestamp": video_time,
                            f"videos/{image_key}/to_timestamp": video_time + T / fps})
                video_frames += T + 1
            episode_rows.append(row)
            start += T
        if writer is not None:
            writer.close()

        flat = {k: np.concatenate(v) for k, v in columns.items()}
        arrays = {}
        for key, values in flat.items():
            arrays[key] = _fixed_list(values) if values.ndim == 2 else pa.array(values)
        data_file = staging / DATA_PATH.format(chunk_index=0, file_index=0)
        data_file.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(arrays), data_file)

        episodes_file = staging / EPISODES_PATH
        episodes_file.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(episode_rows), episodes_file)
        _write_tasks(staging / "meta" / "tasks.parquet", [task])

        features = {
            "observation.state": _vector_feature(D, prefix="o"),
            "action": _vector_feature(A, prefix="a"),
            "next.observation.state": _vector_feature(D, prefix="o"),
            "next.reward": {"dtype": "float32", "shape": [1], "names": None},
            "next.done": {"dtype": "bool", "shape": [1], "names": None},
            "next.truncated": {"dtype": "bool", "shape": [1], "names": None},
            "next.success": {"dtype": "bool", "shape": [1], "names": None},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": {"dtype": "int64", "shape": [1], "names": None},
            "episode_index": {"dtype": "int64", "shape": [1], "names": None},
            "index": {"dtype": "int64", "shape": [1], "names": None},
            "task_index": {"dtype": "int64", "shape": [1], "names": None},
        }
        stats = {k: _stats(v if v.ndim == 2 else v[:, None]) for k, v in flat.items()}
        if has_video:
            H, W = episodes[0].frames.shape[1:3]
            features[image_key] = {
                "dtype": "video", "shape": [int(H), int(W), 3], "names": ["height", "width", "channels"],
                "info": {"video.height": int(H), "video.width": int(W), "video.codec": "h264",
                         "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": float(fps),
                         "video.channels": 3, "has_audio": False}}
            channel = _pixel_stats(ep.frames[:-1] for ep in episodes)
            stats[image_key] = {k: [[[v]] for v in channel[k]] if k != "count" else channel[k] for k in channel}
        info = {
            "codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": len(episodes),
            "total_frames": int(start), "total_tasks": 1, "chunks_size": 1000, "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 500, "fps": float(fps) if not float(fps).is_integer() else int(fps),
            "splits": {"train": f"0:{len(episodes)}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if has_video else None, "features": features,
            "embodied": {"final_frame_in_video": has_video, "image_key": image_key if has_video else None},
        }
        (staging / "meta" / "info.json").write_text(json.dumps(info, indent=2))
        (staging / "meta" / "stats.json").write_text(json.dumps(stats, indent=2))
        if root.exists():
            shutil.rmtree(root)
        os.replace(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root


def _write_tasks(path: Path, tasks: list[str]) -> None:
    """``tasks.parquet`` as pandas writes a frame indexed by the task text (LeRobot reads it so)."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": ["task"], "column_indexes": [],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
                    {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0",
    }
    pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()}), path)


def import_lerobot(root: str | Path, keep_frames: bool = True, image_key: str | None = None) -> list[Episode]:
    """Read a LeRobot v3.0 dataset folder into our episodes.

    Args:
        root: the dataset folder (with ``meta/info.json``).
        keep_frames: decode the camera video into ``frames``.
        image_key: which ``dtype: video`` feature to decode (default: the first).

    Returns:
        Episodes with ``observations (T+1, D)``, ``actions (T, A)``, ``rewards (T,)`` (zeros when
        the dataset has no ``next.reward``), terminations, truncations, ``infos["success"]``
        and, when asked, ``frames (T+1, H, W, 3) uint8``.

    Raises:
        LeRobotFormatError: a missing file, another codebase version, a missing column, or
            lengths that disagree; the message names which.
    """
    root = Path(root)
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        raise LeRobotFormatError(f"{root} is not a LeRobot dataset: {info_path} is missing")
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as error:
        raise LeRobotFormatError(f"{info_path} is not valid JSON: {error}") from None
    if info.get("codebase_version") != CODEBASE_VERSION:
        raise LeRobotFormatError(f"{root} is LeRobot {info.get('codebase_version')!r}; this reader takes {CODEBASE_VERSION} "
                                 "(convert older datasets with lerobot's v2.1 -> v3.0 converter)")
    features = info.get("features", {})
    for key in ("observation.state", "action"):
        if key not in features:
            raise LeRobotFormatError(f"{info_path}: feature {key!r} is missing; found {sorted(features)}")
    data_files = sorted((root / "data").rglob("*.parquet"))
    episode_files = sorted((root / "meta" / "episodes").rglob("*.parquet"))
    if not data_files or not episode_files:
        raise LeRobotFormatError(f"{root}: no parquet files under data/ or meta/episodes/")
    try:
        data = pa.concat_tables([pq.read_table(f) for f in data_files]).to_pydict()
        meta = pa.concat_tables([pq.read_table(f) for f in episode_files]).to_pylist()
    except Exception as error:  # pyarrow raises several types for damaged files
        raise LeRobotFormatError(f"{root}: a parquet file cannot be read ({error})") from None
    for key in ("observation.state", "action", "index"):
        if key not in data:
            raise LeRobotFormatError(f"{root}/data: column {key!r} is missing")
    index = np.asarray(data["index"], np.int64)
    order = np.argsort(index)
    column = {k: np.asarray(v)[order] if not isinstance(v[0], list) else np.asarray(v, np.float32)[order]
              for k, v in data.items() if v}
    fps = float(info["fps"])
    video_keys = [k for k, v in features.items() if v.get("dtype") == "video"]
    key = image_key or (video_keys[0] if video_keys else None)
    if image_key and image_key not in video_keys:
        raise LeRobotFormatError(f"{root}: no video feature {image_key!r}; found {video_keys}")
    final_frame = bool(info.get("embodied", {}).get("final_frame_in_video", False))
    exact = "next.observation.state" in column
    readers: dict[str, object] = {}
    episodes = []
    try:
        for row in sorted(meta, key=lambda r: r["episode_index"]):
            lo, hi = int(row["dataset_from_index"]), int(row["dataset_to_index"])
            rows = np.searchsorted(index[order], np.arange(lo, hi))
            if hi - lo != int(row["length"]) or len(rows) == 0 or not np.array_equal(index[order][rows], np.arange(lo, hi)):
                raise LeRobotFormatError(f"{root}: episode {row['episode_index']} claims rows {lo}..{hi} "
                                         f"(length {row['length']}) but the data holds other indices")
            state, action = column["observation.state"][rows], column["action"][rows]
            if exact:
                observations = np.concatenate([state, column["next.observation.state"][rows][-1:]])
                actions = action
            else:
                observations, actions = state, action[:-1]
            T = len(actions)

            def field(name, default, dtype):
                return np.asarray(column[name][rows][:T], dtype) if name in column else np.full(T, default, dtype)

            rewards = field("next.reward", 0.0, np.float32)
            done = field("next.done", False, bool)
            if "next.truncated" in column:
                truncations = field("next.truncated", False, bool)
            else:  # an episode that ends without a termination was cut off
                truncations = np.zeros(T, bool)
                if T:
                    truncations[-1] = not done[-1]
            terminations = done & ~truncations
            success = np.concatenate([[False], field("next.success", False, bool)])
            frames = None
            if keep_frames and key is not None:
                in_video = T + 1 if (final_frame or not exact) else T
                frames = _read_frames(root, info, row, key, fps, in_video, readers)
                if len(frames) < T + 1:  # no frame after the last step: repeat the last one
                    frames = np.concatenate([frames, np.repeat(frames[-1:], T + 1 - len(frames), axis=0)])
            episodes.append(Episode(observations=observations.astype(np.float32), actions=actions.astype(np.float32),
                                    rewards=rewards, terminations=terminations, truncations=truncations,
                                    infos={"success": success}, policy="lerobot", seed=int(row["episode_index"]),
                                    frames=frames))
    finally:
        for reader in readers.values():
            reader.close()
    return episodes


def _read_frames(root: Path, info: dict, row: dict, key: str, fps: float, count: int, readers: dict) -> np.ndarray:
    """Frames of one episode from its video file: ``count`` frames from ``from_timestamp``."""
    import imageio.v2 as imageio

    path = root / info["video_path"].format(video_key=key, chunk_index=int(row[f"videos/{key}/chunk_index"]),
                                            file_index=int(row[f"videos/{key}/file_index"]))
    if not path.is_file():
        raise LeRobotFormatError(f"{root}: video {path} is missing")
    if str(path) not in readers:
        readers[str(path)] = imageio.get_reader(path, format="FFMPEG")
    reader = readers[str(path)]
    first = int(round(float(row[f"videos/{key}/from_timestamp"]) * fps))
    frames = []
    for i in range(first, first + count):
        try:
            frames.append(reader.get_data(i))
        except IndexError:
            break
    if not frames:
        raise LeRobotFormatError(f"{root}: video {path} has no frame at {first / fps:.3f} s")
    return np.stack(frames).astype(np.uint8)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m embodied.lerobot export ID_OR_PATH FOLDER`` / ``import FOLDER NEW_ID``."""
    import argparse

    import gymnasium as gym

    from embodied.datasets import datasets_root, load_dataset, write_minari

    parser = argparse.ArgumentParser(prog="python -m embodied.lerobot", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="a Minari dataset (ours or any) -> a LeRobot v3.0 folder")
    export.add_argument("dataset", help="Minari dataset id or folder")
    export.add_argument("folder", type=Path)
    export.add_argument("--fps", type=float, default=10.0, help="control rate in Hz (dressing: 10)")
    export.add_argument("--task", default="", help="the task in words (default: the dataset id)")
    export.add_argument("--overwrite", action="store_true")
    imp = sub.add_parser("import", help="a LeRobot v3.0 folder -> a Minari dataset")
    imp.add_argument("folder", type=Path)
    imp.add_argument("dataset_id", help="new Minari id, e.g. embodied/dressing/from-lerobot-v0")
    imp.add_argument("--root", type=Path, default=None, help="datasets root (default: MINARI_DATASETS_PATH)")
    args = parser.parse_args(argv)
    if args.command == "export":
        dataset = load_dataset(args.dataset, keep_frames=True)
        out = export_lerobot(dataset.episodes, args.folder, args.fps, args.task or dataset.source,
                             overwrite=args.overwrite)
        print(f"wrote {len(dataset.episodes)} episodes to {out}")
    else:
        episodes = import_lerobot(args.folder)
        actions = np.concatenate([ep.actions for ep in episodes])
        D = episodes[0].observations.shape[1]
        frames = episodes[0].frames
        path = write_minari(
            args.dataset_id, episodes, gym.spaces.Box(-np.inf, np.inf, (D,), np.float32),
            gym.spaces.Box(actions.min(0), actions.max(0), dtype=np.float32), args.root or datasets_root(),
            metadata={"embodied_source": f"lerobot:{args.folder}"},
            frame_shape=tuple(frames.shape[1:]) if frames is not None else None,
        )
        print(f"wrote {len(episodes)} episodes to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
