"""Every YAML under conf/ composes and instantiates; entry points refuse a missing task."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from embodied.cli import require_task, task_given
from embodied.config import DatasetConfig, TrainerConfig, available_tasks, normalize_resume
from embodied.loggers import Logger
from embodied.tasks import make_env, make_policies
from envs.policies import Policy
from policies import make_learner
from tests.conftest import REPO, run_module

CONF = REPO / "conf"


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_yaml_is_covered_by_a_group_test():
    groups = {"algo", "attribute_labeler", "experiment", "judges", "labeler", "logger", "reward_model", "robot", "strategy", "suite", "task"}
    found = {p.relative_to(CONF).parts[0] for p in CONF.rglob("*.yaml") if p.parent != CONF}
    assert found == groups, f"a new config group needs a test here: {found - groups}"
    # benchmark.yaml: test_benchmark.py; continual.yaml, strategy/ and suite/cw*: test_continual.py;
    # online.yaml: test_online.py; zeroshot.yaml: test_zeroshot.py; deploy.yaml and sim_robot.yaml: below
    assert sorted(p.name for p in CONF.glob("*.yaml")) == ["benchmark.yaml", "config.yaml", "continual.yaml", "deploy.yaml",
                                                          "online.yaml", "sim_robot.yaml", "zeroshot.yaml"]


@pytest.mark.parametrize("task", _options("task"))
def test_task_configs_instantiate_env_and_every_policy(compose_config, task):
    cfg = compose_config([f"+task={task}"])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    env = make_env(cfg.task)
    try:
        policies = make_policies(cfg.task, env.action_space)
        assert {"expert", "noisy", "random"} <= set(policies), "the default mixture needs these"
        observation, info = env.reset(seed=0)
        for name, policy in policies.items():
            assert isinstance(policy, Policy), name
            policy.reset(0)
            action = policy.act(observation)
            assert env.action_space.contains(action), (name, action)
        _, _, _, _, info = env.step(action)
        for key in [*cfg.task.info_keys, *cfg.task.metrics]:
            assert key in info
    finally:
        env.close()


@pytest.mark.parametrize("judge", _options("judges"))
def test_judge_configs_build_judges_from_the_tasks_settings(compose_config, judge):
    from embodied.pipeline import make_judges
    from reward_models.judges import Judge

    cfg = compose_config(["+task=dressing", f"judges=[{judge}]"])
    judges = make_judges(cfg)
    assert list(judges) == [judge] and isinstance(judges[judge], Judge)
    if judge == "force":
        assert (judges[judge].limit, judges[judge].force_index) == (cfg.task.comfort_force, cfg.task.force_index)
    assert compose_config(["+task=dressing"]).judges is None, "no judge unless asked"


@pytest.mark.parametrize("algo", [a for a in _options("algo") if a != "expert"])
def test_algo_configs_instantiate_a_learner(compose_config, algo):
    cfg = compose_config(["+task=pointmass", f"algo={algo}"])
    config = instantiate(cfg.algo.learner)
    # iql_gt: IQL on the true reward; the others name a variant of their learner
    variants = {"aligndiff": "diffuser", "decision_diffuser": "diffuser", "attribute_bc": "bc", "gcbc": "bc"}
    assert config.name == variants.get(cfg.algo.name) or cfg.algo.name.startswith(config.name)
    learner = make_learner(config, observation_dim=6, action_dim=2)
    condition = torch.zeros(3, learner.condition_dim) if learner.condition_dim else None  # FB's z
    assert learner.act(torch.zeros(3, 6), condition).shape == (3, 2)


def test_expert_algo_has_no_learner_and_train_refuses_it(compose_config, tmp_path):
    from embodied.pipeline import train

    cfg = compose_config(["+task=pointmass", "algo=expert"])
    assert cfg.algo.learner is None and cfg.algo.reward == "none"
    with pytest.raises(ValueError, match="algo=expert has no learner to train"):
        train(cfg, tmp_path)


@pytest.mark.parametrize("labeler", _options("labeler"))
def test_labeler_configs_instantiate_a_labeler(compose_config, labeler):
    from reward_models.teachers import ScriptedTeacher

    cfg = compose_config(["+task=dressing", f"labeler={labeler}"])
    teacher = instantiate(cfg.labeler.teacher)
    assert callable(teacher.label_segments) and cfg.labeler.name == labeler
    assert OmegaConf.to_object(cfg.labeler).pairs >= 20
    if isinstance(teacher, ScriptedTeacher):
        rewards = [np.linspace(0, 1, 30), np.linspace(1, 0, 30)]
        pairs = np.array([[[0, 0], [1, 0]], [[0, 20], [1, 20]]])
        labels = teacher.label(rewards, pairs, cfg.labeler.segment_length, np.random.default_rng(0))
        assert labels.labels.shape == (2,) and labels.provenance["name"] == labeler
        assert not cfg.dataset.frames
    else:  # image labelers select a dataset with frames and take the task's words
        assert teacher.needs_frames and cfg.dataset.frames and cfg.dataset.recipe != "mixed"
        if labeler == "clip":
            assert teacher.reward.goal_prompts == list(cfg.task.goal_prompts)
        else:
            assert teacher.task == cfg.task.description


@pytest.mark.parametrize("reward_model", _options("reward_model"))
def test_reward_model_configs_instantiate(compose_config, reward_model):
    from reward_models.bradley_terry import RewardEnsemble

    cfg = compose_config(["+task=pointmass", f"reward_model={reward_model}"])
    config = instantiate(cfg.reward_model)
    model = RewardEnsemble(config, observation_dim=6, action_dim=2)
    inputs = {"observation": torch.zeros(4, 6), "action": torch.zeros(4, 2), "next_observation": torch.zeros(4, 6),
              "next_frame": torch.zeros(4, config.image_size, config.image_size, 3, dtype=torch.uint8)}
    assert model(inputs).shape == (4,)


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_experiment_presets_compose_and_validate(compose_config, experiment):
    # benchmark_*: presets of the Meta-World benchmark (conf/benchmark.yaml); the others of the main job
    if experiment.startswith("benchmark_"):
        cfg = compose_config(["suite=mt10", f"+experiment={experiment}"], config_name="benchmark")
    else:
        cfg = compose_config(["+task=dressing", f"+experiment={experiment}"])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert OmegaConf.to_object(cfg.trainer).steps >= 1 and OmegaConf.to_object(cfg.eval).episodes >= 1
    if experiment == "gpu_full":
        assert cfg.algo.name == "iql" and cfg.device == "cuda" and cfg.algo.learner.compile
        assert instantiate(cfg.algo.learner).compile


@pytest.mark.parametrize("task", ["dressing", "metaworld"])
@pytest.mark.parametrize("labeler", _options("attribute_labeler"))
def test_attribute_labelers_compose_and_build_one_labeler_per_attribute(compose_config, labeler, task):
    from embodied.attributes import read_settings, task_attribute_questions, task_attributes

    cfg = compose_config([f"+task={task}", "+experiment=aligndiff", f"+attribute_labeler={labeler}"])
    settings = read_settings(cfg)
    names, _, _ = task_attributes(cfg.task)
    questions = task_attribute_questions(cfg.task)
    built = [instantiate(settings.labeler, task=cfg.task.description, question=q) for q in questions]
    assert len(built) == len(names) and len({b.settings()["question"] for b in built}) == len(names)
    assert cfg.dataset.frames and all(b.needs_frames for b in built)


@pytest.mark.parametrize("logger", _options("logger"))
def test_logger_configs_instantiate(compose_config, tmp_path, logger):
    cfg = compose_config(["+task=pointmass", f"logger={logger}"])
    built = instantiate(cfg.logger)(run_dir=tmp_path)
    assert isinstance(built, Logger)
    built.log({"train/x": 1.0}, step=1)
    built.close()


def test_root_config_validates_types_and_values(compose_config):
    with pytest.raises(ConfigCompositionException):
        compose_config(["+task=pointmass", "trainer.steps=many"])
    with pytest.raises(ConfigCompositionException):
        compose_config(["+task=pointmass", "trainer.not_a_field=1"])
    cfg = compose_config(["+task=pointmass", "trainer.steps=0"])
    with pytest.raises(ValueError, match="trainer.steps=0"):
        OmegaConf.to_object(cfg.trainer)
    cfg = compose_config(["+task=pointmass", "dataset.episodes=-1"])
    with pytest.raises(ValueError, match="dataset.episodes"):
        OmegaConf.to_object(cfg.dataset)
    assert isinstance(OmegaConf.to_object(compose_config(["+task=pointmass"]).trainer), TrainerConfig)
    assert isinstance(OmegaConf.to_object(compose_config(["+task=pointmass"]).dataset), DatasetConfig)


def test_unknown_task_is_refused_with_the_options(compose_config):
    with pytest.raises(ConfigCompositionException, match="pointmass"):
        compose_config(["+task=nope"])


def test_resume_values():
    assert normalize_resume(True) == "true" and normalize_resume("AUTO") == "auto"
    with pytest.raises(ValueError, match="resume"):
        normalize_resume("maybe")


def test_task_detection_and_message(capsys):
    assert task_given(["+task=pointmass"]) and task_given(["task=pointmass", "seed=1"])
    assert not task_given(["seed=1"]) and not task_given(["+task"])
    require_task("train", ["--help"])  # help passes through to Hydra
    with pytest.raises(SystemExit) as exit_info:
        require_task("train", ["seed=3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "+task=" in err and all(t in err for t in available_tasks())


@pytest.mark.parametrize("module", ["embodied.train", "embodied.collect", "embodied.evaluate", "embodied.label",
                                    "embodied.sim_robot", "embodied.deploy"])
def test_entry_points_without_a_task_exit_nonzero_naming_task_and_tasks(tmp_path, module):
    result = run_module(module, cwd=tmp_path)
    assert result.returncode == 2
    assert "+task=" in result.stderr and "pointmass" in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_available_tasks_match_conf_folder():
    assert available_tasks() == _options("task")


@pytest.mark.parametrize("robot", _options("robot"))
def test_deploy_and_sim_robot_configs_build_their_parts(robot):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from real_robot.deploy import DeployConfig
    from real_robot.robot import ROS2RobotConfig
    from real_robot.safety import SafetyConfig

    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="conf", version_base="1.3"):
            cfg = compose(config_name="deploy", overrides=["+task=dressing", f"robot={robot}"])
            sim = compose(config_name="sim_robot", overrides=["+task=dressing"])
    finally:
        GlobalHydra.instance().clear()
    assert isinstance(instantiate(cfg.deploy), DeployConfig) and cfg.robot.name == robot
    assert isinstance(instantiate(cfg.safety, low=[-1.0] * 3, high=[1.0] * 3), SafetyConfig)
    if robot == "ros2":
        ros2 = ROS2RobotConfig(**OmegaConf.to_container(cfg.robot.ros2, resolve=True))
        assert ros2.sizes(26) == [3, 23]  # dressing: end effector + the rest
    assert sim.robot.name == "ros2" and sim.sim.lockstep is True


@pytest.mark.parametrize("override, message", [
    ("+trainer.step=100", "trainer.step is not a setting \\(did you mean trainer.steps"),
    ("+evall.episodes=3", "evall is not a setting \\(did you mean eval"),
    ("+dataset.episode=3", "dataset.episode is not a setting \\(did you mean dataset.episodes"),
    ("algo.reward=foo", "algo.reward='foo'; expected one of"),
    # keys of a section built by _target_ are checked against what the target takes
    ("+algo.learner.lr=0.1", "algo.learner.lr is not a setting \\(algo.learner has attribute_dropout, .*goal_conditioned, "
                             "goal_discount, hidden_dims, learning_rate"),
    ("+reward_model.learning_rat=0.1", "reward_model.learning_rat is not a setting \\(did you mean "
                                       "reward_model.learning_rate"),
    ("+labeler.teacher.epsilon=0.1", "labeler.teacher.epsilon is not a setting"),
    ("seed=-1", "seed=-1; expected an integer in \\[0, 2\\*\\*31\\)"),
    ("eval.seed=-1", "eval.seed=-1; expected an integer in \\[0, 2\\*\\*31\\)"),
    ("dataset.seed=-3", "dataset.seed=-3; expected an integer in \\[0, 2\\*\\*31\\)"),
])
def test_unknown_keys_and_bad_values_are_refused_before_a_job_starts(compose_config, tmp_path, override, message):
    from embodied.config import validate_config
    from embodied.pipeline import train

    cfg = compose_config(["+task=pointmass", "algo=bc", override])
    with pytest.raises(ValueError, match=message):
        validate_config(cfg)
    with pytest.raises(ValueError, match=message):
        train(cfg, tmp_path / "run")
    for path in (tmp_path / "run").rglob("*"):
        assert path.name == ".lock", f"{path} written by a refused job"


@pytest.mark.parametrize("task", ["pointmass", "dressing", "metaworld"])
@pytest.mark.parametrize("labeler", ["oracle", "mistake", "clip", "vlm"])
def test_every_shipped_config_validates(compose_config, task, labeler):
    from embodied.config import validate_config

    validate_config(compose_config([f"+task={task}", f"labeler={labeler}"]))


def test_resume_true_prefers_the_newest_killed_run_over_a_newer_finished_one(tmp_path):
    from embodied.config import find_latest_run

    killed, finished = tmp_path / "2026-11-29" / "10-00-00_dressing_iql", tmp_path / "2026-11-30" / "09-00-00_dressing_iql"
    for run in (killed, finished):
        (run / "checkpoints").mkdir(parents=True)
    (finished / "metrics.json").write_text("{}")
    assert find_latest_run(tmp_path, "dressing_iql") == killed
    (killed / "metrics.json").write_text("{}")  # both finished: the newest
    assert find_latest_run(tmp_path, "dressing_iql") == finished
    assert find_latest_run(tmp_path, "dressing_bc") is None


def test_a_section_that_fails_to_build_is_printed_as_its_key_and_its_own_message(compose_config):
    from hydra.errors import InstantiationException

    from embodied.cli import _error_message

    cfg = compose_config(["+task=pointmass", "algo=iql", "algo.learner.expectile=1.5"])
    with pytest.raises(InstantiationException) as caught:
        instantiate(cfg.algo.learner)
    assert _error_message(caught.value) == "algo.learner: expectile=1.5; expected in (0, 1)"
