"""Run an entry point and SIGKILL it right after the label store saved its N-th answer.

    python tests/kill_after_answers.py N embodied.label +task=... [overrides]

The kill is a real SIGKILL of the process in the middle of labeling (no cleanup runs); only the
moment is chosen, by counting :meth:`reward_models.labeling.LabelStore.put` calls.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reward_models.labeling import LabelStore  # noqa: E402

LIMIT = int(sys.argv[1])
_put = LabelStore.put
_saved = 0


def _put_then_maybe_die(self, *args, **kwargs):
    global _saved
    _put(self, *args, **kwargs)
    _saved += 1
    if _saved >= LIMIT:
        os.kill(os.getpid(), signal.SIGKILL)


LabelStore.put = _put_then_maybe_die
sys.argv = [sys.argv[2], *sys.argv[3:]]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
