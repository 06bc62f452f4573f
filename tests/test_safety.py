"""The robot safety layer: e-stop, arming, watchdog, NaN guard, limits, rate limit, workspace."""

from __future__ import annotations

import numpy as np
import pytest

from real_robot.safety import SafetyConfig, SafetyLayer


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def armed_layer(**kw) -> tuple[SafetyLayer, Clock]:
    clock = Clock()
    layer = SafetyLayer(SafetyConfig(**kw), clock)
    layer.arm()
    layer.observed()
    return layer, clock


def test_nothing_is_sent_before_arming():
    layer = SafetyLayer(SafetyConfig(), Clock())
    layer.observed()
    decision = layer.filter([0.3, 0.0, 0.0])
    assert decision.reasons == ["blocked_unarmed"] and not decision.command.any() and not decision.send
    layer.arm()
    assert layer.filter([0.3, 0.0, 0.0]).command.tolist() == [0.3, 0.0, 0.0]


def test_stale_observations_stop_the_robot_within_the_watchdog_time():
    layer, clock = armed_layer(watchdog_s=0.1)
    assert layer.filter([0.2, 0.2, 0.2]).reasons == []
    clock.now += 0.09
    assert layer.filter([0.2, 0.2, 0.2]).command.any()  # 90 ms: still fresh
    clock.now += 0.02
    stale = layer.filter([0.2, 0.2, 0.2])  # 110 ms since the last observation
    assert stale.reasons == ["watchdog"] and not stale.command.any() and stale.send
    layer.observed()
    assert layer.filter([0.2, 0.2, 0.2]).command.any()
    assert layer.counters["watchdog"] == 1


def test_a_nan_command_is_not_sent():
    layer, _ = armed_layer()
    for bad in ([np.nan, 0, 0], [0, np.inf, 0]):
        decision = layer.filter(bad)
        assert decision.reasons == ["nan"] and np.array_equal(decision.command, np.zeros(3))
    assert layer.counters["nan"] == 2
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        layer.filter([0.0, 0.0])


def test_out_of_limit_commands_are_clamped_and_rate_limited():
    layer, _ = armed_layer(low=[-1, -1, -1], high=[1, 1, 1], max_delta=0.5)
    first = layer.filter([3.0, -0.2, 0.0])
    assert first.command.tolist() == [0.5, -0.2, 0.0] and first.reasons == ["clamped", "rate_limited"]
    second = layer.filter([3.0, -0.2, 0.0])
    assert second.command.tolist() == [1.0, -0.2, 0.0]  # clamped to the limit, reached in two steps
    assert layer.counters["clamped"] == 2 and layer.counters["rate_limited"] == 1


def test_the_estop_latches_until_reset_and_rearmed():
    layer, _ = armed_layer()
    layer.estop()
    blocked = layer.filter([0.1, 0, 0])
    assert blocked.reasons == ["blocked_estop"] and not blocked.send
    with pytest.raises(RuntimeError, match="reset_estop"):
        layer.arm()
    layer.reset_estop()
    assert layer.filter([0.1, 0, 0]).reasons == ["blocked_unarmed"]  # released, but not armed again
    layer.arm()
    assert layer.filter([0.1, 0, 0]).command.tolist() == [0.1, 0.0, 0.0]


def test_workspace_box_zeroes_the_components_that_would_leave_it():
    layer, _ = armed_layer(workspace_low=[0.0, 0.0, 0.0], workspace_high=[1.0, 1.0, 1.0], max_delta=None)
    decision = layer.filter([1.0, -1.0, 0.5], position=[0.99, 0.5, 0.5], step_scale=0.02)
    assert decision.command.tolist() == [0.0, -1.0, 0.5] and decision.reasons == ["workspace"]
    back_inside = layer.filter([-1.0, 0.0, 0.0], position=[1.2, 0.5, 0.5], step_scale=0.02)
    assert back_inside.command.tolist() == [-1.0, 0.0, 0.0]  # moving back in is allowed


def test_dry_run_decides_but_sends_nothing_and_config_errors_are_named():
    layer, _ = armed_layer(dry_run=True)
    decision = layer.filter([0.1, 0.1, 0.1])
    assert not decision.send and decision.command.tolist() == [0.1, 0.1, 0.1] and layer.counters["dry_run"] == 1
    with pytest.raises(ValueError, match="watchdog_s=0"):
        SafetyConfig(watchdog_s=0)
    with pytest.raises(ValueError, match="low <= high"):
        SafetyConfig(low=[1.0], high=[0.0])
    with pytest.raises(ValueError, match="both workspace_low and workspace_high"):
        SafetyConfig(workspace_low=[0, 0, 0])
