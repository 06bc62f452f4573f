"""Deploy a policy to a robot: ``python -m embodied.deploy checkpoint=PATH robot=ros2|mujoco``.

A fixed-rate control loop (``deploy.rate_hz``) through the safety layer (``safety.*``), with
deadline accounting, that records every episode (``episodes/``, then a Minari dataset in
``dataset/``, our dataset format, so deployments become new data). ``robot=mujoco`` steps the
task's simulation; ``robot=ros2`` talks to a ROS 2 robot, or to ``python -m embodied.sim_robot``,
over Cyclone DDS. Without ``checkpoint`` the task's behaviour policy ``policy=`` (default
``expert``) runs, and ``+task=NAME`` is needed; with one, the task comes from the checkpoint's run
folder unless given. Prints and writes ``deploy.json``: success rate, latency, missed deadlines,
safety counters, dropped messages. Rerunning into the same folder continues with the next episode.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from embodied.cli import require_task, run_folder
from embodied.io import write_json_atomic
from embodied.paths import RunPaths
from embodied.pipeline import print_json
from embodied.runtime import seed_everything
from embodied.tasks import make_env, make_policy


def task_from_checkpoint(checkpoint: str | Path) -> DictConfig:
    """The task config of the run that wrote ``checkpoint`` (``<run>/.hydra/config.yaml``).

    Raises:
        FileNotFoundError: no run folder with a ``.hydra/config.yaml`` above the checkpoint.
        ValueError: that file is not a config with a ``task``.
    """
    path = Path(checkpoint).resolve()
    for folder in [path, *path.parents][:4]:
        config = RunPaths(folder).hydra_config
        if config.exists():
            try:
                task = OmegaConf.load(config).get("task")
            except Exception as error:
                raise ValueError(f"{config} cannot be read as a run config ({type(error).__name__}: "
                                 f"{str(error).splitlines()[0]}); give the task with +task=NAME") from None
            if task is None:
                raise ValueError(f"{config} has no task; give the task with +task=NAME")
            return task
    raise FileNotFoundError(f"no .hydra/config.yaml in the run folder of {checkpoint}; give the task with +task=NAME")


def build_robot(cfg: DictConfig, task: Any, observation_dim: int, action_dim: int) -> Any:
    """``robot=mujoco``: :class:`MujocoRobot` on the task's env; ``robot=ros2``: :class:`ROS2Robot`.

    Raises:
        ValueError: an unknown ``robot.name``.
    """
    from real_robot.robot import MujocoRobot, ROS2Robot, ROS2RobotConfig

    if cfg.robot.name == "mujoco":
        return MujocoRobot(lambda: make_env(task), list(cfg.robot.position_indices), list(task.info_keys),
                           force_index=task.get("force_index"))
    if cfg.robot.name == "ros2":
        return ROS2Robot(ROS2RobotConfig(**OmegaConf.to_container(cfg.robot.ros2, resolve=True)), observation_dim, action_dim)
    raise ValueError(f"robot.name={cfg.robot.name!r}; expected mujoco or ros2")


def write_deploy_dataset(folder: Path, task_name: str, episodes: list, observation_space: Any, action_space: Any,
                         env_spec: Any = None) -> Path:
    """The recorded episodes as a Minari dataset ``embodied/<task>/deploy-v0`` under
    ``folder/dataset`` (rewritten from ``episodes/`` when more were recorded)."""
    from embodied.datasets import write_minari

    root = folder / "dataset"
    dataset_id = f"embodied/{task_name}/deploy-v0"
    if (root / dataset_id).exists():
        shutil.rmtree(root / dataset_id)
    return write_minari(dataset_id, episodes, observation_space, action_space, root,
                        metadata={"source": "embodied.deploy"}, env_spec=env_spec)


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="deploy")
def _main(cfg: DictConfig) -> None:
    from embodied.data import Episode, load_episodes, save_episodes
    from real_robot.deploy import DeployLoop
    from real_robot.safety import SafetyLayer

    with run_folder("deploy", cfg) as folder:
        seed_everything(int(cfg.seed))
        if OmegaConf.is_missing(cfg, "task"):
            task = task_from_checkpoint(cfg.checkpoint)
        else:
            task = cfg.task
        probe = make_env(task)
        observation_space, action_space, env_spec = probe.observation_space, probe.action_space, probe.spec
        probe.close()
        policy, name = make_policy(task, cfg.policy, cfg.checkpoint, cfg.device, action_space, cfg.condition)
        safety_overrides = {}
        if cfg.safety.low is None:
            safety_overrides = {"low": action_space.low.tolist(), "high": action_space.high.tolist()}
        if cfg.safety.get("force_limit") is None and task.get("force_limit") is not None:
            safety_overrides["force_limit"] = float(task.force_limit)  # the task's limit, unless set
        if cfg.safety.get("force_margin") is None:  # the task's margin, unless set; 5 N without one
            margin = task.get("force_margin")
            safety_overrides["force_margin"] = 5.0 if margin is None else float(margin)
        safety = SafetyLayer(instantiate(cfg.safety, **safety_overrides))
        config = instantiate(cfg.deploy)
        robot = build_robot(cfg, task, int(observation_space.shape[0]), int(action_space.shape[0]))
        records = folder / "episodes"
        records.mkdir(exist_ok=True)
        done = [ep for path in sorted(records.glob("episode_*.npz")) for ep in load_episodes(path)]
        if done:
            print(f"{len(done)} episodes already recorded in {records}; continuing")

        def save(index: int, episode: Any) -> None:
            save_episodes(records / f"episode_{index:05d}.npz", [Episode(**dataclasses.asdict(episode))])

        with robot:
            loop = DeployLoop(robot, policy, safety, config, on_episode=save, policy_name=name)
            report = loop.run(done)
            if hasattr(robot, "dropped_counts"):
                report["dropped_messages"] = robot.dropped_counts()
        episodes = [ep for path in sorted(records.glob("episode_*.npz")) for ep in load_episodes(path)]
        dataset = write_deploy_dataset(folder, str(task.name), episodes, observation_space, action_space, env_spec)
        report = {"task": str(task.name), "robot": str(cfg.robot.name), "policy": name, **report, "dataset": str(dataset)}
        write_json_atomic(folder / "deploy.json", report)
        print_json(f"{task.name} on robot={cfg.robot.name}, {name}:", report)
        print(f"deploy report: {folder / 'deploy.json'}")


def main() -> None:
    """Console entry point; exits 2 when neither a checkpoint nor a task is given."""
    argv = sys.argv[1:]
    if not any(a.split("=", 1)[0] == "checkpoint" and not a.endswith("=null") for a in argv):
        require_task("deploy")  # a behaviour policy (policy=expert) needs its task
    _main()


if __name__ == "__main__":
    main()
