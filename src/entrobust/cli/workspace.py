"""Options and store access shared by the commands that read a results workspace
(``run``, ``runs``, ``report``, ``claims``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from entrobust.experiments.store import Store

DEFAULT_WORKSPACE = "entrobust-workspace"
#: where ``entrobust demo`` writes by default (its ``--out``)
DEMO_WORKSPACE = "entrobust-demo"


def add_workspace_arg(p: argparse.ArgumentParser) -> None:
    """``--workspace/-w DIR``, defaulting to :data:`DEFAULT_WORKSPACE`."""
    p.add_argument(
        "--workspace", "-w", default=DEFAULT_WORKSPACE, help=f"results folder (default: {DEFAULT_WORKSPACE})"
    )


def add_selection_args(p: argparse.ArgumentParser) -> None:
    """``--workspace``, ``--experiment`` and ``--runs``: which stored runs a command reads."""
    add_workspace_arg(p)
    p.add_argument(
        "--experiment", "-e", default=None, help="only the runs of this experiment (default: all runs)"
    )
    p.add_argument(
        "--runs", nargs="+", default=None, metavar="ID", help="only these run ids (prefixes accepted)"
    )


def open_store(workspace: str) -> Store:
    """The results store of ``workspace``, opened read-only (these commands never write, need no
    workspace lock and work on read-only media); a clear error when there is none yet."""
    from entrobust.errors import EntrobustError
    from entrobust.experiments.runner import store_path
    from entrobust.experiments.store import Store

    path = store_path(workspace)
    if not path.exists():
        hint = "run an experiment first (entrobust run / demo)"
        if workspace == DEFAULT_WORKSPACE and store_path(DEMO_WORKSPACE).exists():
            hint = f"the demo's results are in {DEMO_WORKSPACE}: pass -w {DEMO_WORKSPACE}"
        raise EntrobustError(f"no results store at {path}; {hint}")
    return Store(path, readonly=True)
