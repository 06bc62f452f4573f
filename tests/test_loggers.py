"""One logger interface: namespaced keys, explicit steps, JSON lines and TensorBoard agree."""

from __future__ import annotations

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from embodied.loggers import JsonlLogger, Logger, build_logger


def test_keys_must_be_namespaced_and_values_scalar(tmp_path):
    logger = Logger()
    assert logger.log({"train/loss": torch.tensor(0.5)}, step=1) == {"train/loss": 0.5}
    with pytest.raises(ValueError, match="namespaced"):
        logger.log({"loss": 1.0}, step=1)
    with pytest.raises(ValueError, match="scalar"):
        logger.log({"train/loss": torch.ones(2)}, step=1)
    with pytest.raises(ValueError, match="not a number"):
        logger.log({"train/loss": "high"}, step=1)
    with pytest.raises(ValueError, match="step"):
        logger.log({"train/loss": 1.0}, step=-1)
    with pytest.raises(ValueError, match="unknown logger backends"):
        build_logger(tmp_path, ["wandb"])


def test_jsonl_and_tensorboard_record_the_same_numbers(tmp_path):
    logger = build_logger(tmp_path)
    for step in (10, 20):
        logger.log({"train/loss": step / 10, "eval/success_rate": 0.5}, step=step)
    logger.close()
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(l["step"], l["train/loss"]) for l in lines] == [(10, 1.0), (20, 2.0)]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(10, 1.0), (20, 2.0)]


def test_resume_drops_lines_written_after_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    logger = JsonlLogger(path)
    for step in (10, 20, 30):
        logger.log({"train/loss": float(step)}, step=step)
    logger.close()
    with open(path, "a") as f:
        f.write('{"step": 40, "train/lo')  # cut short by a kill
    resumed = JsonlLogger(path, resume_step=20)
    resumed.log({"train/loss": 30.5}, step=30)
    resumed.close()
    steps = [json.loads(l)["step"] for l in path.read_text().splitlines()]
    assert steps == [10, 20, 30]


def test_a_resumed_tensorboard_log_keeps_the_checkpoint_step_and_drops_later_ones(tmp_path):
    logger = build_logger(tmp_path, ["tensorboard"])
    for step in (10, 20, 30):
        logger.log({"train/loss": float(step)}, step=step)
    logger.close()
    resumed = build_logger(tmp_path, ["tensorboard"], resume_step=20)  # the checkpoint was at step 20
    resumed.log({"train/loss": 30.5}, step=30)
    resumed.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(10, 10.0), (20, 20.0), (30, 30.5)]
