"""Golden snapshot of every resolved preset config (issue 13: presets are data, behaviour is fixed).

``tests/golden/presets.json`` holds ``TrainConfig.to_dict()`` of every preset × dataset × scale
it supports (each ``paper`` dataset, and the ``cpu`` variant on its default dataset), keyed
``"<preset>|<dataset>|<scale>"``, written with sorted keys. Any change to a preset's resolved
hyperparameters — deliberate or not — fails :func:`test_presets_match_the_golden_snapshot`.

To change a preset deliberately, regenerate the file and review the diff::

    ENTROBUST_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_presets_golden.py -n 0
    git diff tests/golden/presets.json
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from entrobust.training import PRESETS, preset_config

GOLDEN = Path(__file__).parent / "golden" / "presets.json"


def resolve_all() -> dict[str, Any]:
    """``"<preset>|<dataset>|<scale>"`` → resolved config dict, for every preset."""
    out: dict[str, Any] = {}
    for name in PRESETS.names():
        preset = PRESETS.get(name)
        for dataset in preset.datasets:
            out[f"{name}|{dataset}|paper"] = preset_config(name, dataset=dataset, scale="paper").to_dict()
        cpu = preset_config(name, scale="cpu")
        out[f"{name}|{cpu.dataset}|cpu"] = cpu.to_dict()
    return out


def render(configs: dict[str, Any]) -> str:
    return json.dumps(configs, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def test_presets_match_the_golden_snapshot() -> None:
    text = render(resolve_all())
    if os.environ.get("ENTROBUST_REGEN_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8")
    golden = GOLDEN.read_text(encoding="utf-8")
    if text != golden:
        want, got = json.loads(golden), json.loads(text)
        changed = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        raise AssertionError(
            f"{len(changed)} resolved preset configs differ from {GOLDEN.name} (first: {changed[:5]}); "
            "regenerate deliberately with ENTROBUST_REGEN_GOLDEN=1 (see the module docstring)"
        )


def test_snapshot_covers_every_preset() -> None:
    keys = json.loads(GOLDEN.read_text(encoding="utf-8")).keys()
    assert {k.split("|")[0] for k in keys} == set(PRESETS.names())
    assert sum(k.endswith("|cpu") for k in keys) == len(PRESETS.names())
