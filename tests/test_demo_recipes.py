"""The demo's training recipes are pinned (issue 15, item 2): the ``cpu`` presets of the adversarially
trained defenses became the converged recipes (minutes of CPU each, docs/training.md), while the demo
keeps its own lighter training budget — the recipes of its models before that change, so its models
are no weaker and no slower than they were.

``tests/golden/demo_cpu_recipes.json`` holds ``TrainConfig.to_dict()`` of every run of
``demo_experiment("cpu")`` keyed by label. A deliberate change of the demo's recipes regenerates it::

    ENTROBUST_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_demo_recipes.py -n 0
    git diff tests/golden/demo_cpu_recipes.json
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from entrobust.experiments.demo import demo_experiment

GOLDEN = Path(__file__).parent / "golden" / "demo_cpu_recipes.json"


def resolve_demo() -> dict[str, Any]:
    return {run.label: run.config.to_dict() for run in demo_experiment("cpu").plan()}


def test_demo_recipes_match_the_golden_snapshot() -> None:
    got = resolve_demo()
    text = json.dumps(got, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if os.environ.get("ENTROBUST_REGEN_GOLDEN"):
        GOLDEN.write_text(text, encoding="utf-8")
    want = json.loads(GOLDEN.read_text(encoding="utf-8"))
    changed = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
    assert not changed, f"demo training recipes changed: {changed} (regenerate the golden file on purpose)"


def test_demo_trains_small_models_for_a_few_epochs() -> None:
    # the demo's budget (≤ 5 min on 2 cores): cnn4 / LeNet / a cnn4 ensemble, at most 4 epochs
    for label, cfg in resolve_demo().items():
        assert cfg["model"] in {"cnn4", "lenet", "ensemble"}, label
        assert cfg["epochs"] <= 4, label
        adversary = cfg["method"]["adversary"]
        assert adversary["kind"] == "none" or adversary["steps"] <= 5, label
