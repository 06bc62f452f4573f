"""What the Hydra entry points share: the task check and the run folder."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from embodied.config import available_tasks

_HELP_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--version", "--cfg", "-c", "--shell-completion", "-sc"}


def task_given(argv: Sequence[str]) -> bool:
    """Whether the command line selects a task (``+task=NAME`` or ``task=NAME``)."""
    for arg in argv:
        key = arg.split("=", 1)[0].lstrip("+~")
        if key == "task" and "=" in arg:
            return True
    return False


def require_task(job: str, argv: Sequence[str] | None = None) -> None:
    """Exit with status 2 and a message naming ``+task=`` and the tasks when none is selected.

    Help and info flags pass through to Hydra.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if task_given(argv) or _HELP_FLAGS.intersection(a.split("=", 1)[0] for a in argv):
        return
    tasks = available_tasks()
    example = tasks[0] if tasks else "NAME"
    print(
        f"error: no task selected. Choose one with +task=NAME, for example\n"
        f"  python -m embodied.{job} +task={example}\n"
        f"available tasks: {', '.join(tasks)}",
        file=sys.stderr,
    )
    raise SystemExit(2)


def run_dir() -> Path:
    """This run's folder (Hydra's ``runtime.output_dir``), created if missing."""
    path = Path(HydraConfig.get().runtime.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path
