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


def test_the_force_limit_stops_before_the_limit_and_retracts_along_the_approach():
    layer, clock = armed_layer(force_limit=20.0, force_margin=5.0, backoff_steps=2, max_delta=None)
    push = np.array([0.5, 0.0, -0.2])
    layer.force(3.0)
    first = layer.filter(push)
    assert first.send and first.reasons == [] and np.allclose(first.command, push)
    layer.force(14.9)  # below limit - margin: still moving
    assert layer.filter(push).send and not layer.estopped
    layer.force(15.0)  # at limit - margin: stop, before the 20 N limit
    assert layer.estopped and layer.backing_off and layer.counters["force_stop"] == 1
    for _ in range(2):  # the retract move goes out although the e-stop is latched
        back = layer.filter(push)
        assert back.send and back.reasons == ["force_backoff"] and np.allclose(back.command, -push)
    after = layer.filter(push)
    assert not after.send and after.reasons == ["blocked_estop"] and not layer.backing_off
    layer.force(1.0)  # the force fell, but the stop stays latched, like the e-stop
    assert not layer.filter(push).send
    with pytest.raises(RuntimeError, match="e-stop is latched"):
        layer.arm()
    layer.reset_estop()
    layer.arm()
    layer.observed()
    layer.force(1.0)
    assert layer.filter(push).send and layer.max_force == 15.0


def test_without_a_fresh_force_reading_the_robot_holds_and_a_fixed_backoff_is_used():
    layer, clock = armed_layer(force_limit=20.0, force_margin=5.0, backoff_steps=1, backoff_command=[0.0, 0.0, 1.0],
                               watchdog_s=0.1, max_delta=None)
    assert layer.filter([0.3, 0.0, 0.0]).reasons == ["force_missing"], "no reading yet: no motion"
    layer.force(2.0)
    assert layer.filter([0.3, 0.0, 0.0]).send
    clock.now += 0.15
    layer.observed()  # the observation is fresh, the force reading is not
    assert layer.filter([0.3, 0.0, 0.0]).reasons == ["force_missing"]
    layer.force(float("nan"))  # a malformed reading refreshes nothing
    assert layer.filter([0.3, 0.0, 0.0]).reasons == ["force_missing"] and layer.counters["force_malformed"] == 1
    layer.force(30.0)
    retract = layer.filter([0.3, 0.0, 0.0])
    assert retract.send and np.allclose(retract.command, [0.0, 0.0, 1.0])
    assert layer.filter([0.3, 0.0, 0.0]).reasons == ["blocked_estop"]


@pytest.mark.parametrize("kwargs, message", [
    ({"force_limit": 20.0, "force_margin": 20.0}, "expected 0 <= force_margin < force_limit"),
    ({"force_limit": 20.0, "force_margin": -1.0}, "expected 0 <= force_margin < force_limit"),
    ({"backoff_steps": -1}, "backoff_steps=-1; expected >= 0"),
    ({"backoff_command": [0.0, 1.0]}, "backoff_command=\\[0.0, 1.0\\] has 2 entries; commands have 3"),
])
def test_force_settings_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SafetyConfig(**kwargs)
