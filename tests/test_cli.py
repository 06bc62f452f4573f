"""The entry points' shared parts: the console log of a run folder."""

from __future__ import annotations

import sys

import pytest

from embodied.cli import ConsoleLog


def test_console_log_keeps_the_final_text_of_redrawn_lines(tmp_path):
    path = tmp_path / "job.log"
    with ConsoleLog(path, snapshot_s=3600):
        print("stage one")
        sys.stderr.write("\rbar  10%")
        sys.stderr.write("\rbar  50%\r")
        sys.stderr.write("\x1b[A\rbar 100%   \n")  # a nested bar's cursor move, then the last state
        print("no newline at the end", end="")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ") and "pid" in lines[0]
    assert lines[1:] == ["stage one", "bar 100%", "no newline at the end"]


def test_console_log_writes_a_snapshot_of_a_long_redraw_and_the_error(tmp_path):
    path = tmp_path / "job.log"
    try:
        with ConsoleLog(path, snapshot_s=0.0) as log:
            sys.stderr.write("\rtrain 1/3")
            sys.stderr.write("\rtrain 2/3")  # a killed job's log still shows how far it got
            try:
                raise ValueError("bad value")
            except ValueError as error:
                log.write_exception(error)
                raise
    except ValueError:
        pass
    text = path.read_text()
    assert "train 1/3\ntrain 2/3\nTraceback" in text and "ValueError: bad value" in text
    assert sys.stdout.__class__.__name__ != "_Tee" and sys.stderr.__class__.__name__ != "_Tee"


def test_the_reward_scatter_plot_is_not_squashed_by_one_outlier(tmp_path):
    import numpy as np

    from embodied.label import plot_reward_vs_true

    rng = np.random.default_rng(0)
    true = rng.normal(0.0, 1.0, 2000)
    learned = true + rng.normal(0.0, 0.1, 2000)
    learned[7] = 1000.0  # one wild prediction
    shown = plot_reward_vs_true(learned, true, tmp_path / "scatter.png", "test")
    assert (tmp_path / "scatter.png").stat().st_size > 5000
    assert shown["ylim"][1] < 6.0 and shown["ylim"][0] > -6.0, "the axis holds the bulk, not the outlier"
    assert 1 <= shown["outside"] <= 40


def test_our_warnings_print_as_one_line_and_others_as_python_shows_them():
    from embodied.checkpoint import CheckpointWarning
    from embodied.cli import _format_warning

    ours = _format_warning(CheckpointWarning("last points to 2, which does not exist; using 1"), CheckpointWarning,
                           "/x/checkpoint.py", 242, "found = latest_checkpoint(root)")
    assert ours == "warning: last points to 2, which does not exist; using 1\n"
    theirs = _format_warning(UserWarning("something"), UserWarning, "/lib/other.py", 7, "call()")
    assert theirs.startswith("/lib/other.py:7: UserWarning: something")


def test_the_force_histogram_marks_the_limit_and_counts_outliers_in_its_last_bin(tmp_path, monkeypatch):
    import matplotlib.axes
    import numpy as np

    from embodied.pipeline import plot_histogram

    drawn = {}
    hist, axvline = matplotlib.axes.Axes.hist, matplotlib.axes.Axes.axvline
    monkeypatch.setattr(matplotlib.axes.Axes, "hist",
                        lambda self, x, **kw: drawn.update(x=np.asarray(x), label=kw.get("label")) or hist(self, x, **kw))
    monkeypatch.setattr(matplotlib.axes.Axes, "axvline",
                        lambda self, x, **kw: drawn.update(limit=x, limit_label=kw.get("label")) or axvline(self, x, **kw))
    forces = np.r_[np.full(38, 3.0), 24.0, 3000.0]  # two of 40 episodes over the 20 N limit, one a solver spike
    path = plot_histogram(forces, 20.0, tmp_path / "max_force_histogram.png", "test", "max_force", "N")
    assert path.stat().st_size > 5000
    assert drawn["limit"] == 20.0 and "5% of episodes over" in drawn["limit_label"]
    assert drawn["x"].max() == pytest.approx(20.0 * 1.25) and "1 above 25" in drawn["label"], "the spike does not squash it"
