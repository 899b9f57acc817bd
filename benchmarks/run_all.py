"""Run every ``benchmarks/bench_*.py`` (each script's ``main``), one fresh process each.

Usage: ``python benchmarks/run_all.py [--only NAME ...] [--quick] [--json-dir DIR] [-- extra args]``.
A separate process per benchmark keeps their thread settings and memory apart and lets one fail
without stopping the rest. Prints each benchmark's output, then a summary (exit status, seconds);
the exit status is non-zero when any benchmark failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover(only: list[str] | None = None) -> list[Path]:
    """The benchmark scripts, sorted by name (optionally only those whose name contains a word)."""
    scripts = sorted(HERE.glob("bench_*.py"))
    if only:
        scripts = [s for s in scripts if any(word in s.stem for word in only)]
    return scripts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="run every benchmarks/bench_*.py")
    p.add_argument(
        "--only", nargs="*", default=None, help="run only benchmarks whose name contains one of these"
    )
    p.add_argument("--quick", action="store_true", help="pass --quick to benchmarks that have it (smoke run)")
    p.add_argument("--json-dir", default=None, help="pass --json DIR/<name>.json to benchmarks that have it")
    p.add_argument("extra", nargs="*", help="arguments passed to every benchmark (after --)")
    args = p.parse_args(argv)
    scripts = discover(args.only)
    if not scripts:
        print("no benchmarks found", file=sys.stderr)
        return 1
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    summary = []
    for script in scripts:
        cmd = [sys.executable, str(script), *args.extra]
        text = script.read_text(encoding="utf-8")
        if args.quick and '"--quick"' in text:  # only scripts that define the flag get it
            cmd.append("--quick")
        if args.json_dir and '"--json"' in text:
            Path(args.json_dir).mkdir(parents=True, exist_ok=True)
            cmd += ["--json", str(Path(args.json_dir) / f"{script.stem}.json")]
        print(f"=== {script.name}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, env=env, check=False).returncode
        summary.append((script.name, rc, time.perf_counter() - t0))
    print("=== summary")
    for name, rc, secs in summary:
        print(f"  {name:<32} {'ok' if rc == 0 else f'FAILED ({rc})':<12} {secs:8.1f} s")
    return 0 if all(rc == 0 for _, rc, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
