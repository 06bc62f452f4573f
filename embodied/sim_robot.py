"""A simulated ROS 2 robot: ``python -m embodied.sim_robot +task=dressing``.

Runs the task's MuJoCo simulation behind the topics of ``robot=ros2`` (``conf/robot/ros2.yaml``,
:mod:`real_robot.sim_node`), so ``python -m embodied.deploy robot=ros2 ...`` in another process
drives it over Cyclone DDS exactly as it would drive a real robot. ``sim.lockstep=false`` runs in
real time at ``sim.rate_hz`` instead of waiting for each command. Stops on Ctrl-C, after
``sim.duration_s`` or after ``sim.episodes`` finished episodes, and prints its counters.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from embodied.cli import require_task, run_dir
from embodied.pipeline import print_json
from embodied.tasks import make_env


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="sim_robot")
def _main(cfg: DictConfig) -> None:
    from real_robot.robot import ROS2RobotConfig
    from real_robot.sim_node import SimRobotNode

    run_dir()
    if cfg.robot.name != "ros2":
        raise SystemExit(f"error: sim_robot speaks ROS 2 topics; robot={cfg.robot.name} has none (use robot=ros2)")
    config = ROS2RobotConfig(**OmegaConf.to_container(cfg.robot.ros2, resolve=True))
    render = {"render_mode": "rgb_array", "width": cfg.sim.image_size, "height": cfg.sim.image_size} if cfg.sim.image else {}
    node = SimRobotNode(make_env(cfg.task, **render), config, rate_hz=float(cfg.sim.rate_hz), lockstep=bool(cfg.sim.lockstep),
                        image=bool(cfg.sim.image), force_index=cfg.task.get("force_index"))
    print(f"sim_robot: {cfg.task.name} on ROS domain {node.node.domain_id}, "
          f"{'lockstep' if cfg.sim.lockstep else f'real time at {cfg.sim.rate_hz} Hz'}; waiting for "
          f"{config.reset_topic} and {config.command.topic}", flush=True)
    try:
        node.spin(duration_s=cfg.sim.duration_s, episodes=cfg.sim.episodes)
    except KeyboardInterrupt:
        pass
    finally:
        node.close()
    print_json("sim_robot counters:", node.report())


def main() -> None:
    """Console entry point; exits 2 when no task is selected."""
    require_task("sim_robot")
    _main()


if __name__ == "__main__":
    main()
