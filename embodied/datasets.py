"""Offline robot datasets in Minari format: resumable collection, validation, loading.

A dataset id is ``embodied/<task>/<recipe>-v0``; datasets live under ``MINARI_DATASETS_PATH``
(default ``~/.minari/datasets``, Minari's own), so ``minari.load_dataset(id)`` opens them too.

Collection writes each finished episode to ``<root>/.staging/<id>/episode_NNNNNN.npz``
atomically; a rerun continues after the last staged episode (same seeds, same policy
assignment, no duplicates). Only when all episodes are staged is the Minari dataset built in a
temporary folder and renamed into place, so an interrupted collection never leaves a dataset that
loads as complete.

Stored per episode (Minari layout): ``observations`` (``(T+1, D) float32``, or a dict with
``state`` and ``pixels (T+1, H, W, 3) uint8`` JPEG-compressed in chunked HDF5 when the recipe
asks for frames), ``actions (T, A)``, ``rewards (T,)`` (the ground-truth reward, which learners
only get with ``algo.reward=gt``), ``terminations``/``truncations (T,)``, ``infos`` (``(T+1,)``
per key, plus ``behaviour_policy``), and the episode ``seed``. The dataset metadata holds the
provenance (task, env id and version, recipe, seed, package versions, render settings) as JSON
under ``embodied_provenance``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from embodied.data import Episode, load_episodes, mixture_assignment, rollout, save_episodes
from embodied.io import write_json_atomic
from envs.policies import Policy

STATE_KEY, FRAMES_KEY = "state", "pixels"
POLICY_INFO_KEY = "behaviour_policy"
PROVENANCE_KEY = "embodied_provenance"
#: Packages whose versions go into the provenance.
PROVENANCE_PACKAGES = ("embodied", "mujoco", "gymnasium", "metaworld", "minari", "numpy", "torch")


class DatasetError(ValueError):
    """A dataset is missing, incomplete or malformed; the message names the episode and field."""


@dataclass
class DatasetConfig:
    """The offline dataset (Minari format) a run trains on, and the recipe it is collected with
    when it is ours and missing (``dataset.*`` in the Hydra config)."""

    id: Optional[str] = None
    """Dataset id or folder. Default ``embodied/<task>/<recipe>-v0``, collected when missing; any
    other Minari dataset on disk (e.g. ``mujoco/hopper/medium-v0``) is loaded as it is."""
    root: Optional[str] = None
    """Datasets root. Default: ``MINARI_DATASETS_PATH``, else ``~/.minari/datasets``."""
    recipe: str = "mixed"
    """Recipe name, the last part of the default id (``embodied/<task>/<recipe>-v0``)."""
    episodes: int = 60
    """Episodes to collect. Default 60."""
    mixture: dict[str, float] = field(default_factory=lambda: {"expert": 0.3, "noisy": 0.5, "random": 0.2})
    """Share of episodes per behaviour policy of the task (normalised)."""
    seed: int = 0
    """Collection seed (episode i resets with seed + i), apart from the run's seed so that seed
    sweeps share one dataset."""
    frames: bool = False
    """Store rendered RGB frames with every observation (image reward models, VLM labelers)."""
    width: int = 128
    """Frame width, px."""
    height: int = 128
    """Frame height, px."""

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"dataset.episodes={self.episodes}; expected >= 1")
        if not 0 <= self.seed < 2**31:
            raise ValueError(f"dataset.seed={self.seed}; expected an integer in [0, 2**31)")
        if not self.recipe or "/" in self.recipe or "-v" in self.recipe:
            raise ValueError(f"dataset.recipe={self.recipe!r}: expected a plain name without '/' or '-v'")
        if self.frames and not (0 < self.width <= 512 and 0 < self.height <= 512):
            raise ValueError(f"frame size {self.width}x{self.height}; expected 1..512 px on each side")
        self.mixture = {str(k): float(v) for k, v in self.mixture.items()}

    def recipe_dict(self) -> dict[str, Any]:
        """How the dataset is made (stored in its provenance and compared on reuse): ``name``
        (the recipe), episodes, mixture, seed, frames, width, height."""
        return {"name": self.recipe, "episodes": self.episodes, "mixture": dict(self.mixture), "seed": self.seed,
                "frames": self.frames, "width": self.width, "height": self.height}


def recipe_difference(stored: dict[str, Any], wanted: dict[str, Any]) -> str:
    """The settings in which two recipes differ, as ``dataset.KEY=STORED, not WANTED; ...``."""
    changed = [f"dataset.{key}={stored.get(key)!r}, not {wanted.get(key)!r}"
               for key in sorted(set(stored) | set(wanted)) if key != "name" and stored.get(key) != wanted.get(key)]
    return "; ".join(changed) or str(stored)


def make_dataset_id(task: str, recipe: str) -> str:
    """``embodied/<task>/<recipe>-v0``."""
    return f"embodied/{task}/{recipe}-v0"


def datasets_root() -> Path:
    """``MINARI_DATASETS_PATH`` if set, else ``~/.minari/datasets`` (Minari's default)."""
    return Path(os.environ.get("MINARI_DATASETS_PATH") or Path.home() / ".minari" / "datasets")


def is_complete(path: Path) -> bool:
    """Whether ``path`` is a finished Minari dataset folder (``data/metadata.json`` present)."""
    return (path / "data" / "metadata.json").is_file()


def package_versions() -> dict[str, str]:
    """Installed versions of :data:`PROVENANCE_PACKAGES` (``"missing"`` when not installed)."""
    out = {"python": platform.python_version()}
    for name in PROVENANCE_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


@contextlib.contextmanager
def _minari_root(path: Path) -> Iterator[None]:
    """Point Minari's dataset root at ``path`` for the duration (Minari reads the variable)."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def collect_dataset(
    dataset_id: str,
    make_env: Callable[[], gym.Env],
    policies: Mapping[str, Policy],
    recipe: DatasetConfig,
    info_keys: Sequence[str] = ("success",),
    provenance: Mapping[str, Any] | None = None,
    root: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Collect (or finish collecting) a Minari dataset; return its folder.

    Args:
        dataset_id: ``embodied/<task>/<recipe>-v0``.
        make_env: builds the env (with ``render_mode="rgb_array"`` and the recipe's frame size
            when ``recipe.frames``).
        policies: behaviour policies by name; the recipe's mixture picks among them.
        recipe: what to collect.
        info_keys: ``info`` entries stored per step.
        provenance: extra JSON-able facts for the metadata (task, env id, ...).
        root: datasets root (default :func:`datasets_root`).
        progress: show a progress bar with rate and ETA.

    Raises:
        DatasetError: the staging folder holds episodes of a different recipe, or a staged
            episode cannot be read; a complete dataset of this id was collected with another
            recipe or in another env id (``provenance["task_config"]["env"]["id"]``: a new
            version of the task's dynamics).
        KeyError: the mixture names a policy not in ``policies``.
    """
    root = Path(root) if root is not None else datasets_root()
    final = root / dataset_id
    if is_complete(final):
        stored = json.loads(json.loads((final / "data" / "metadata.json").read_text()).get(PROVENANCE_KEY, "{}"))
        wanted_env = _env_id(provenance)
        if wanted_env is not None and stored.get("env_id") not in (None, wanted_env):
            raise DatasetError(
                f"dataset {dataset_id} was collected in {stored['env_id']}, and the task now makes {wanted_env} (another "
                f"version: other dynamics). Delete {final} to collect it again in {wanted_env}, or name a new one "
                f"(dataset.recipe={recipe.recipe}-2)"
            )
        if stored.get("recipe") not in (None, recipe.recipe_dict()):
            raise DatasetError(
                f"dataset {dataset_id} was collected with {recipe_difference(stored['recipe'], recipe.recipe_dict())}. Name the new "
                f"one (dataset.recipe={recipe.recipe}-2 makes {dataset_id.rsplit('/', 1)[0]}/{recipe.recipe}-2-v0), use the "
                f"existing one with its settings, or delete {final}"
            )
        return final
    if final.exists():
        raise DatasetError(f"{final} exists but is not a complete Minari dataset; remove it to collect again")
    assignment = mixture_assignment(recipe.mixture, recipe.episodes, recipe.seed)
    missing = sorted(set(assignment) - set(policies))
    if missing:
        raise KeyError(f"mixture names policies {missing}; the task has {sorted(policies)}")

    staging = root / ".staging" / dataset_id
    try:
        staging.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DatasetError(f"cannot write dataset {dataset_id} under the datasets root {root} ({error.strerror}); set "
                           "dataset.root=<a writable folder> (or MINARI_DATASETS_PATH)") from None
    recipe_file = staging / "recipe.json"
    if recipe_file.exists():
        staged_recipe = json.loads(recipe_file.read_text())
        if staged_recipe != recipe.recipe_dict():
            raise DatasetError(
                f"{staging} holds episodes collected with {recipe_difference(staged_recipe, recipe.recipe_dict())} "
                f"(an interrupted collection). Rerun with those settings to finish it, delete {staging} to start "
                f"again, or name the new dataset (dataset.recipe={recipe.recipe}-2)"
            )
    else:
        write_json_atomic(recipe_file, recipe.recipe_dict())

    done = 0
    while (staging / f"episode_{done:06d}.npz").exists():
        done += 1
    if done < recipe.episodes:
        env = make_env()
        try:
            bar = tqdm(total=recipe.episodes, initial=done, desc=f"collect {dataset_id}", unit="episode",
                       disable=not progress, mininterval=1.0)
            for i in range(done, recipe.episodes):
                name = assignment[i]
                episode = rollout(env, policies[name], recipe.seed + i, info_keys, policy_name=name,
                                  render=recipe.frames)
                save_episodes(staging / f"episode_{i:06d}.npz", [episode])
                bar.update(1)
            bar.close()
            observation_space, action_space, env_spec = env.observation_space, env.action_space, env.spec
        finally:
            env.close()
    else:
        env = make_env()
        observation_space, action_space, env_spec = env.observation_space, env.action_space, env.spec
        env.close()

    def staged_episodes() -> Iterator[Episode]:
        for i in range(recipe.episodes):
            try:
                yield from load_episodes(staging / f"episode_{i:06d}.npz")
            except (OSError, ValueError) as error:
                raise DatasetError(f"staged episode {i} of {dataset_id} is unreadable ({error}); delete it and rerun") from error
    metadata = {
        PROVENANCE_KEY: json.dumps({
            **dict(provenance or {}),
            "env_id": env_spec.id if env_spec is not None else "unknown",
            "recipe": recipe.recipe_dict(),
            "packages": package_versions(),
            "format": "embodied-minari-1",
        }, sort_keys=True),
    }
    write_minari(dataset_id, staged_episodes(), observation_space, action_space, root, metadata,
                 frame_shape=(recipe.height, recipe.width, 3) if recipe.frames else None, env_spec=env_spec)
    shutil.rmtree(staging, ignore_errors=True)
    for parent in staging.parents:  # drop the now empty .staging/<namespace> folders
        if parent == root or not parent.is_dir() or any(parent.iterdir()):
            break
        parent.rmdir()
    return final


def _env_id(provenance: Mapping[str, Any] | None) -> str | None:
    """The gymnasium id of the env a dataset is wanted from: ``task_config.env.id`` of the
    provenance, when the caller gave it."""
    task = (provenance or {}).get("task_config") or {}
    env = task.get("env") if isinstance(task, Mapping) else None
    return str(env["id"]) if isinstance(env, Mapping) and "id" in env else None


def write_minari(
    dataset_id: str,
    episodes: Iterable[Episode],
    observation_space: gym.spaces.Box,
    action_space: gym.spaces.Box,
    root: str | Path,
    metadata: Mapping[str, Any] | None = None,
    frame_shape: tuple[int, int, int] | None = None,
    env_spec: gym.envs.registration.EnvSpec | None = None,
    batch: int = 16,
) -> Path:
    """Write episodes as a Minari dataset at ``root/dataset_id``, atomically.

    The dataset is built under a temporary root beside it and renamed into place, ``batch``
    episodes at a time (memory stays bounded for long collections with frames). With
    ``env_spec`` Minari records the environment (``MinariDataset.recover_environment()``).

    Raises:
        DatasetError: a dataset with that id already exists there, or frames are asked for but
            an episode has none.
    """
    from minari.data_collector import EpisodeBuffer

    root = Path(root)
    final = root / dataset_id
    if final.exists():
        raise DatasetError(f"a dataset already exists at {final}")
    if frame_shape is not None:
        observation_space = gym.spaces.Dict({
            STATE_KEY: observation_space,
            FRAMES_KEY: gym.spaces.Box(0, 255, frame_shape, dtype=np.uint8),
        })

    def to_buffer(i: int, ep: Episode) -> EpisodeBuffer:
        observations: Any = ep.observations
        if frame_shape is not None:
            if ep.frames is None:
                raise DatasetError(f"episode {i} has no frames but the dataset stores frames")
            observations = {STATE_KEY: ep.observations, FRAMES_KEY: ep.frames}
        infos: dict[str, Any] = {k: np.asarray(v) for k, v in ep.infos.items()}
        infos[POLICY_INFO_KEY] = [ep.policy] * len(ep.observations)  # python str: HDF5 utf-8 strings
        return EpisodeBuffer(
            id=i, seed=ep.seed, observations=observations, actions=ep.actions,
            rewards=list(ep.rewards), terminations=list(ep.terminations), truncations=list(ep.truncations),
            infos=infos,
        )

    tmp_root = root / f".tmp-{uuid.uuid4().hex[:8]}"
    try:
        with _minari_root(tmp_root):
            dataset, pending = None, []
            for i, ep in enumerate(episodes):
                pending.append(to_buffer(i, ep))
                if len(pending) == batch:
                    dataset = _flush(dataset, pending, dataset_id, env_spec, observation_space, action_space)
                    pending = []
            if pending or dataset is None:
                if not pending:
                    raise DatasetError(f"no episodes to write to {dataset_id}")
                dataset = _flush(dataset, pending, dataset_id, env_spec, observation_space, action_space)
            if metadata:
                dataset.storage.update_metadata(dict(metadata))
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp_root / dataset_id, final)
        _copy_namespace_metadata(tmp_root, root, dataset_id)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return final


def _flush(dataset: Any, buffers: list, dataset_id: str, env_spec: Any, observation_space: gym.Space,
           action_space: gym.Space) -> Any:
    """Create the Minari dataset from the first batch of episode buffers, or append a batch."""
    import minari

    if dataset is None:
        with warnings.catch_warnings():
            # Minari asks for author, author_email and code_permalink on every write; a dataset of
            # ours records its provenance (task, recipe, package versions) in its metadata instead.
            warnings.filterwarnings("ignore", message=r"`(author|author_email|code_permalink)` is set to None")
            return minari.create_dataset_from_buffers(
                dataset_id, buffers, env=env_spec, eval_env=env_spec,
                observation_space=observation_space, action_space=action_space,
                algorithm_name="embodied.collect", description="episodes collected by embodied",
                data_format="hdf5",
            )
    dataset.storage.update_episodes(buffers)
    return dataset


def _copy_namespace_metadata(src_root: Path, dst_root: Path, dataset_id: str) -> None:
    """Minari keeps a ``namespace_metadata.json`` per namespace folder; bring them along."""
    parts = dataset_id.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        rel = Path(*parts[:depth]) / "namespace_metadata.json"
        if (src_root / rel).is_file() and not (dst_root / rel).exists():
            (dst_root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src_root / rel, dst_root / rel)


@dataclass
class OfflineDataset:
    """A validated dataset in memory.

    Attributes:
        source: the id or path it was loaded from.
        path: its folder.
        episodes: :class:`embodied.data.Episode` list (frames kept only if asked).
        observation_space: the flat state observation space (``Box``).
        action_space: the action space (``Box``).
        has_frames: whether the dataset stores frames.
        metadata: Minari's metadata dict.
    """

    source: str
    path: Path
    episodes: list[Episode]
    observation_space: gym.spaces.Box
    action_space: gym.spaces.Box
    has_frames: bool
    metadata: dict[str, Any]

    @property
    def provenance(self) -> dict[str, Any]:
        """What :func:`collect_dataset` recorded (empty for datasets made elsewhere)."""
        raw = self.metadata.get(PROVENANCE_KEY)
        return json.loads(raw) if isinstance(raw, str) else {}


def resolve_dataset(id_or_path: str | Path, root: str | Path | None = None) -> Path:
    """The folder of a dataset given as a path (to the dataset or its ``data/``) or an id.

    Raises:
        DatasetError: nothing complete there; the message says whether a collection is half
            done and lists the local datasets.
    """
    candidate = Path(id_or_path).expanduser()
    for path in (candidate, candidate.parent):
        if is_complete(path):
            return path
    root = Path(root) if root is not None else datasets_root()
    path = root / str(id_or_path)
    if is_complete(path):
        return path
    staging = root / ".staging" / str(id_or_path)
    if staging.is_dir():
        staged = len(list(staging.glob("episode_*.npz")))
        raise DatasetError(f"dataset {id_or_path!r} is incomplete: its collection stopped after {staged} "
                           "episodes; rerun the same collect command to finish it")
    local = sorted(str(p.parent.relative_to(root)) for p in root.glob("**/data/metadata.json")) if root.is_dir() else []
    local = [p.removesuffix("/data") for p in local]
    raise DatasetError(f"unknown dataset {str(id_or_path)!r}: no Minari dataset at {candidate} or {path}. "
                       f"Local datasets under {root}: {local or 'none'}. Make one with "
                       "`python -m embodied.collect +task=NAME`")


def _state_and_frames(observations: Any) -> tuple[Any, Any]:
    if isinstance(observations, dict):
        return observations.get(STATE_KEY), observations.get(FRAMES_KEY)
    return observations, None


def validate_episode(
    index: int,
    data: Mapping[str, Any],
    observation_space: gym.spaces.Box,
    action_space: gym.spaces.Box,
    frame_space: gym.spaces.Box | None,
) -> None:
    """Check one episode's arrays against the spaces and Minari's T+1 / T convention.

    Raises:
        DatasetError: naming ``episode <index>``, the field, what it is and what was expected.
    """

    def fail(field_name: str, problem: str) -> None:
        raise DatasetError(f"episode {index}: field {field_name!r} {problem}")

    state, frames = _state_and_frames(data.get("observations"))
    actions = data.get("actions")
    if state is None:
        fail("observations", "is missing")
    if actions is None:
        fail("actions", "is missing")
    state, actions = np.asarray(state), np.asarray(actions)
    steps = len(actions)
    if steps == 0:
        fail("actions", "is empty: an episode needs at least one step")
    if not np.issubdtype(state.dtype, np.floating):
        fail("observations", f"has dtype {state.dtype}; expected a float dtype")
    if not np.issubdtype(actions.dtype, np.floating):
        fail("actions", f"has dtype {actions.dtype}; expected a float dtype")
    if state.shape != (steps + 1, *observation_space.shape):
        fail("observations", f"has shape {state.shape}; expected ({steps + 1}, {', '.join(map(str, observation_space.shape))}) "
             f"(T+1 rows for T={steps} actions, the observation space's shape)")
    if actions.shape != (steps, *action_space.shape):
        fail("actions", f"has shape {actions.shape}; expected ({steps}, {', '.join(map(str, action_space.shape))})")
    for name in ("rewards", "terminations", "truncations"):
        value = data.get(name)
        if value is None:
            fail(name, "is missing")
        if np.shape(value) != (steps,):
            fail(name, f"has shape {np.shape(value)}; expected ({steps},), one per action")
    if not np.all(np.isfinite(state)):
        row = int(np.argwhere(~np.isfinite(state))[0][0])
        fail("observations", f"has a non-finite value (NaN or inf) at step {row}")
    if not np.all(np.isfinite(actions)):
        fail("actions", "has a non-finite value (NaN or inf)")
    if not np.all(np.isfinite(np.asarray(data["rewards"], dtype=np.float64))):
        fail("rewards", "has a non-finite value (NaN or inf)")
    if frame_space is not None:
        if frames is None:
            fail("observations/pixels", "is missing but the dataset promises frames")
        frames = np.asarray(frames)
        if frames.dtype != np.uint8:
            fail("observations/pixels", f"has dtype {frames.dtype}; expected uint8")
        if frames.shape != (steps + 1, *frame_space.shape):
            fail("observations/pixels", f"has shape {frames.shape}; expected ({steps + 1}, {', '.join(map(str, frame_space.shape))})")


def load_dataset(
    id_or_path: str | Path,
    root: str | Path | None = None,
    keep_frames: bool = False,
    progress: bool = False,
) -> OfflineDataset:
    """Open, validate and load a Minari dataset (ours or any other on disk).

    Args:
        id_or_path: a dataset id (looked up under ``root``) or a dataset folder.
        root: datasets root (default :func:`datasets_root`).
        keep_frames: keep decoded frames in the episodes (memory: T x H x W x 3 bytes each).
        progress: show a progress bar while reading.

    Raises:
        DatasetError: unknown id, unreadable or truncated file, or an episode that fails
            :func:`validate_episode` (the message names the episode and field).
    """
    import minari

    path = resolve_dataset(id_or_path, root)
    try:
        dataset = minari.MinariDataset(path / "data")
    except Exception as error:  # h5py/OSError/KeyError/json errors from a damaged dataset
        raise DatasetError(f"dataset {str(id_or_path)!r} at {path} cannot be opened: {type(error).__name__}: {error}") from error
    space = dataset.observation_space
    frame_space = None
    if isinstance(space, gym.spaces.Dict):
        if STATE_KEY not in space.spaces:
            raise DatasetError(f"dataset {str(id_or_path)!r}: dict observations without a {STATE_KEY!r} entry "
                               f"(has {sorted(space.spaces)}); expected a flat Box or state + pixels")
        frame_space = space.spaces.get(FRAMES_KEY)
        space = space.spaces[STATE_KEY]
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise DatasetError(f"dataset {str(id_or_path)!r}: observation space {space}; expected a flat Box")
    if not isinstance(dataset.action_space, gym.spaces.Box):
        raise DatasetError(f"dataset {str(id_or_path)!r}: action space {dataset.action_space}; expected a Box")

    episodes = []
    total = dataset.total_episodes
    for index in tqdm(range(total), desc=f"load {id_or_path}", unit="episode", disable=not progress):
        try:
            episode_index = int(dataset.episode_indices[index])
            data = next(iter(dataset.storage.get_episodes([episode_index])))
            episode_meta = next(iter(dataset.storage.get_episode_metadata([episode_index])))
        except DatasetError:
            raise
        except Exception as error:
            raise DatasetError(f"dataset {str(id_or_path)!r}: episode {index} cannot be read "
                               f"({type(error).__name__}: {error}); the file may be truncated or miss a field") from error
        try:
            validate_episode(index, data, space, dataset.action_space, frame_space)
        except DatasetError as error:
            raise DatasetError(f"dataset {str(id_or_path)!r} at {path}: {error}") from None
        state, frames = _state_and_frames(data["observations"])
        infos = {k: np.asarray(v) for k, v in (data.get("infos") or {}).items() if not isinstance(v, dict)}
        policy = infos.pop(POLICY_INFO_KEY, np.asarray([""]))
        episodes.append(Episode(
            observations=np.asarray(state, dtype=np.float32),
            actions=np.asarray(data["actions"], dtype=np.float32),
            rewards=np.asarray(data["rewards"], dtype=np.float32),
            terminations=np.asarray(data["terminations"], dtype=bool),
            truncations=np.asarray(data["truncations"], dtype=bool),
            infos=infos,
            policy=str(policy[0].decode() if isinstance(policy[0], bytes) else policy[0]) if len(policy) else "",
            seed=int(episode_meta["seed"]) if episode_meta.get("seed") is not None else -1,
            frames=np.asarray(frames) if keep_frames and frames is not None else None,
        ))
    return OfflineDataset(
        source=str(id_or_path), path=path, episodes=episodes, observation_space=space,
        action_space=dataset.action_space, has_frames=frame_space is not None, metadata=dict(dataset.storage.metadata),
    )
