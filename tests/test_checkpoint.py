"""Checkpoint folders: round trip, atomic writes under SIGKILL, fallbacks and clear errors."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from embodied.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    CheckpointWarning,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)


def test_round_trip_restores_weights_optimizer_and_rng(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(7)
    path = save_checkpoint(tmp_path, 12, model.state_dict(), {"optim": opt.state_dict(), "rng": gen.get_state(), "note": "x"})
    assert path.name == "00000012"
    assert (tmp_path / "last").resolve() == path.resolve()

    ckpt = load_checkpoint(tmp_path)
    assert ckpt.step == 12 and ckpt.state["note"] == "x"
    twin = torch.nn.Linear(3, 2)
    twin.load_state_dict(ckpt.weights)
    assert torch.equal(twin.weight, model.weight)
    twin_opt = torch.optim.Adam(twin.parameters(), lr=1e-3)
    twin_opt.load_state_dict(ckpt.state["optim"])  # integer keys of optimiser state survive json
    assert torch.equal(twin_opt.state[twin.weight]["exp_avg"], opt.state[model.weight]["exp_avg"])
    restored = torch.Generator()
    restored.set_state(ckpt.state["rng"])
    assert torch.equal(torch.rand(3, generator=restored), torch.rand(3, generator=gen))
    meta = json.loads((path / "state.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION


def test_no_pickle_is_written(tmp_path):
    path = save_checkpoint(tmp_path, 1, {"w": torch.ones(2)}, {"a": [1, 2.5, None, True]})
    assert sorted(p.name for p in path.iterdir()) == ["state.json", "state.safetensors", "weights.safetensors"]


def test_keep_last_prunes_old_steps_and_resaving_a_step_replaces_it(tmp_path):
    for step in range(1, 5):
        save_checkpoint(tmp_path, step, {"w": torch.full((2,), float(step))}, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["00000003", "00000004"]
    save_checkpoint(tmp_path, 4, {"w": torch.full((2,), 40.0)}, keep_last=2)
    assert load_checkpoint(tmp_path).weights["w"][0] == 40.0


def test_broken_last_pointer_falls_back_to_newest_complete(tmp_path):
    save_checkpoint(tmp_path, 1, {"w": torch.ones(1)})
    save_checkpoint(tmp_path, 2, {"w": torch.ones(1) * 2})
    (tmp_path / "00000002" / "state.json").unlink()  # damaged by hand
    with pytest.warns(CheckpointWarning, match="points to 00000002, which lacks state.json; using 00000001"):
        assert latest_checkpoint(tmp_path).name == "00000001"
    with pytest.raises(CheckpointError, match="00000002 is incomplete: it lacks state.json"):
        load_checkpoint(tmp_path / "00000002")
    shutil.rmtree(tmp_path / "00000002")  # a `last` pointing to a deleted step
    with pytest.warns(CheckpointWarning, match="points to 00000002, which does not exist; using 00000001"):
        assert load_checkpoint(tmp_path).step == 1


def test_unreadable_and_future_checkpoints_raise_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_checkpoint(tmp_path / "nothing")
    path = save_checkpoint(tmp_path, 3, {"w": torch.ones(1000)})
    weights = path / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated file
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(path)
    path = save_checkpoint(tmp_path, 4, {"w": torch.ones(1)})
    meta = json.loads((path / "state.json").read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    (path / "state.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="upgrade embodied"):
        load_checkpoint(path)
    for bad in (0, "1", None, True, 1.5):
        meta["format_version"] = bad
        (path / "state.json").write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match=r"format_version=.*expected an integer from 1 to"):
            load_checkpoint(path)
    del meta["format_version"]
    (path / "state.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format_version=None"):
        load_checkpoint(path)
    meta.update(format_version=FORMAT_VERSION, step="4")
    (path / "state.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="step='4'; expected an integer"):
        load_checkpoint(path)


def test_state_with_unstorable_objects_is_refused(tmp_path):
    with pytest.raises(TypeError, match="cannot store"):
        save_checkpoint(tmp_path, 1, {"w": torch.ones(1)}, {"bad": object()})
    assert list_checkpoints(tmp_path) == []


_WRITER = textwrap.dedent(
    """
    import sys, torch
    from embodied.checkpoint import save_checkpoint
    root, mode = sys.argv[1], sys.argv[2]
    save_checkpoint(root, 1, {"w": torch.full((4,), 1.0)}, {"marker": 1})
    print("saved-1", flush=True)
    if mode == "big":
        # ~200 MB of weights: the write takes long enough to be killed in the middle of it.
        save_checkpoint(root, 2, {"w": torch.full((4,), 2.0), "big": torch.ones(50_000_000)}, {"marker": 2})
    else:
        step = 2
        while True:
            save_checkpoint(root, step, {"w": torch.full((4,), float(step))}, {"marker": step}, keep_last=3)
            step += 1
    """
)


def _start_writer(root: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(root), mode], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "saved-1"
    return proc


def _assert_consistent(root: Path) -> int:
    ckpt = load_checkpoint(root)
    assert ckpt.state["marker"] == ckpt.step
    assert torch.equal(ckpt.weights["w"], torch.full((4,), float(ckpt.step)))
    return ckpt.step


def test_sigkill_during_a_write_keeps_the_previous_checkpoint(tmp_path):
    proc = _start_writer(tmp_path, "big")
    deadline = time.time() + 60
    while not list(tmp_path.glob(".tmp-00000002-*")):  # the step-2 write has begun
        assert time.time() < deadline and proc.poll() is None, "writer never started step 2"
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "00000002").exists(), "the write finished before the kill; test proves nothing"
    assert list(tmp_path.glob(".tmp-*")), "half-written folder expected on disk"
    assert latest_checkpoint(tmp_path).name == "00000001"
    assert _assert_consistent(tmp_path) == 1
    assert [p.name for p in list_checkpoints(tmp_path)] == ["00000001"]
    save_checkpoint(tmp_path, 3, {"w": torch.full((4,), 3.0)}, {"marker": 3})  # next save cleans up
    assert not list(tmp_path.glob(".tmp-*"))
    assert _assert_consistent(tmp_path) == 3


@pytest.mark.parametrize("trial", range(4))
def test_sigkill_at_a_random_moment_never_exposes_a_partial_checkpoint(tmp_path, trial):
    proc = _start_writer(tmp_path, "loop")
    time.sleep(random.Random(trial).uniform(0.05, 0.4))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step = _assert_consistent(tmp_path)
    assert step >= 1
    for folder in list_checkpoints(tmp_path):
        assert _assert_consistent(folder) == int(folder.name)
