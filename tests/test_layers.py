"""The package's layers depend one way: ``experiments`` may import ``report``, never the reverse.

Two checks, since either alone can miss a cycle: every ``import`` statement in ``report/`` (also
the lazy ones inside functions) is read with ``ast``, and a child process that loads every report
module (claims and the HTML renderer included) must end without ``entrobust.experiments`` in
``sys.modules``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from _subprocess import SRC, child_env

REPORT = SRC / "entrobust" / "report"


def _imported_modules(path: Path) -> list[str]:
    """Absolute names of the modules ``path`` imports anywhere in its body."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_report_sources_never_import_experiments() -> None:
    files = sorted(REPORT.glob("*.py"))
    assert {"claims.py", "stats.py", "render.py", "tables.py"} <= {f.name for f in files}
    offending = {
        f.name: [m for m in _imported_modules(f) if m.split(".")[:2] == ["entrobust", "experiments"]]
        for f in files
    }
    assert not {k: v for k, v in offending.items() if v}, offending


def test_the_ast_check_sees_a_lazy_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from entrobust.experiments.store import Store\n    return Store\n")
    assert "entrobust.experiments.store" in _imported_modules(bad)


def test_loading_the_report_leaves_experiments_unloaded() -> None:
    modules = sorted(f"entrobust.report.{f.stem}" for f in REPORT.glob("*.py") if f.stem != "__init__")
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "import entrobust.report as r\n"
        "r.write_report, r.check_claims\n"
        "print(sorted(m for m in sys.modules if m.startswith('entrobust.experiments')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_the_store_and_its_records_load_without_torch() -> None:
    """``entrobust runs`` / ``report`` read stored rows; the shared record keeps them torch-free."""
    code = (
        "import sys, entrobust.record, entrobust.experiments.store, entrobust.report.results\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False", out.stdout
