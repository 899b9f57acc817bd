"""Time the main job: ``entrobust demo`` from an empty folder to a finished report — or the
reproduction, ``entrobust reproduce``.

Usage: ``python benchmarks/bench_demo.py [--scale SCALE] [--quick] [--out DIR] [--keep]
[--threads N] [--workers N] [--json FILE]``; ``SCALE`` is one of the demo's scales
(``entrobust.experiments.demo.DEMO_SCALES``), ``cpu`` by default, or ``reproduce`` (the
reproduction scale, every paper table; hours, see docs/experiments.md "Reproduction scale").
Budgets on an idle 2-core CPU with the default workers (every core): the ``cpu`` demo at most
five minutes wall time, the reproduction at most 60 minutes; the budget line is printed for those.

Runs the demo in a fresh process (so imports and data loading count), streams its progress, and
prints the wall time, the process CPU time (user + system), the load average before and after,
and the time of each stage (train, evaluate, analyse, report) parsed from the demo's stage lines.
On a shared machine the wall time includes waiting for the CPU: with ``--threads 1`` (the default)
the CPU time is what the same run takes on an idle core, so it is reported too. ``--quick`` runs
the tiny scale (a smoke test of the benchmark itself). This is a benchmark, not a test: nothing
is asserted; the exit status is the demo's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: wall-time budgets on an idle 2-core CPU: the ``cpu`` demo (five minutes), the reproduction (an hour)
BUDGETS_S: dict[str, float] = {"cpu": 300.0, "reproduce": 3600.0}
#: a stage line of the runner: ``== train ==`` with one worker, ``== train, evaluate, analyse (97 units,
#: 2 worker processes × 1 thread(s)) ==`` with several (the three stages then run as one pool of units)
_STAGE = re.compile(r"^\[\s*(\d+\.\d)s\] == ([\w, ]+?)(?: \(.*\))? ==")
_DONE = re.compile(r"^\[\s*(\d+\.\d)s\] (?:demo|reproduction) finished")


def _cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else the platform's processor string), so
    that a figure is never quoted without the machine it was measured on."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    from entrobust.experiments.demo import DEMO_SCALES

    p.add_argument(
        "--scale",
        default="cpu",
        choices=[*DEMO_SCALES, "reproduce"],
        help="demo scale, or reproduce for `entrobust reproduce` (default: cpu)",
    )
    p.add_argument("--quick", action="store_true", help="same as --scale tiny")
    p.add_argument("--out", default=None, help="demo folder (default: a fresh temporary folder)")
    p.add_argument(
        "--keep", action="store_true", help="keep the demo folder (default: delete a temporary one)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads of the demo (default: 1)")
    p.add_argument(
        "--workers", type=int, default=None, help="worker processes of the demo (default: every core)"
    )
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    scale = "tiny" if args.quick else args.scale

    tmp = None
    if args.out is None:
        tmp = tempfile.mkdtemp(prefix="entrobust-bench-demo-")
        out = Path(tmp) / "demo"
    else:
        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            print(
                f"{out} is not empty: the demo would resume instead of running from scratch", file=sys.stderr
            )
            return 2
    workers = ["--workers", str(args.workers)] if args.workers is not None else []
    if scale == "reproduce":
        cmd = [sys.executable, "-m", "entrobust", "reproduce", "--out", str(out), *workers]
    else:
        demo = ["demo", "--scale", scale, "--out", str(out), "--threads", str(args.threads)]
        cmd = [sys.executable, "-m", "entrobust", *demo, *workers]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    load0 = os.getloadavg()
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    stages: dict[str, float] = {}
    finished = None
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        m = _STAGE.match(line)
        if m:
            stages[m.group(2)] = float(m.group(1))
        m = _DONE.match(line)
        if m:
            finished = float(m.group(1))
    rc = proc.wait()
    wall = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    load1 = os.getloadavg()

    order = list(stages)  # in the order the demo printed them (a dict keeps insertion order)
    ends = [stages[s] for s in order[1:]] + [finished if finished is not None else wall]
    per_stage = {s: round(end - stages[s], 1) for s, end in zip(order, ends, strict=True)}
    print("\n=== bench_demo")
    print(f"scale {scale}, threads {args.threads}, {os.cpu_count()} CPU(s), exit status {rc}")
    kernels = os.environ.get("ATEN_CPU_CAPABILITY") or "unforced (the best this CPU has)"
    print(f"CPU         {_cpu_name()}; torch kernels {kernels}")
    limit = BUDGETS_S.get(scale)
    verdict = "within" if limit is not None and wall <= limit else "OVER"
    budget = f"; budget {limit / 60:.0f} min: {verdict}" if limit is not None else ""
    print(f"wall time   {wall:7.1f} s  ({wall / 60:.1f} min{budget})")
    print(f"CPU time    {cpu:7.1f} s  (user + system of the demo process)")
    print(f"load avg    {load0[0]:.2f} before, {load1[0]:.2f} after (1-minute)")
    for s in order:
        print(f"  {s:<24} {per_stage[s]:7.1f} s")
    result = {
        "scale": scale,
        "threads": args.threads,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "cpu_name": _cpu_name(),
        "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY"),
        "exit_status": rc,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "budget_s": limit,
        "load_before": load0[0],
        "load_after": load1[0],
        "stages_s": per_stage,
        "report": str(out / "report.html") if scale != "reproduce" else str(out),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    if tmp is not None and not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
