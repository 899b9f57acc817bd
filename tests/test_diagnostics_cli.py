"""``entrobust audit / analyze / certify`` on a tiny checkpoint (digits, untrained LeNet5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from entrobust.cli import main
from entrobust.diagnostics._cli import default_threat, parse_floats
from entrobust.errors import ConfigError

torch.set_num_threads(1)


def test_audit_cli_writes_json_and_pngs(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "audit"
    rc = main(
        [
            "audit",
            str(ckpt),
            "--n",
            "20",
            "--curve-n",
            "10",
            "--checks",
            "gradients,eps-curve",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "gradient-obfuscation audit: linf ε = 0.1" in text  # digits default budget
    data = json.loads((out / "audit.json").read_text())
    assert [c["name"] for c in data["checks"]] == ["gradients", "eps-curve"]
    assert data["settings"]["dataset"] == "digits"
    assert (out / "audit_eps.png").stat().st_size > 1000 and not (out / "audit_steps.png").exists()


def test_audit_cli_default_out_is_the_run_directory(ckpt: Path) -> None:
    assert main(["audit", str(ckpt), "--n", "10", "--checks", "gradients", "--eps", "8/255", "--quiet"]) == 0
    data = json.loads((ckpt.parent / "audit" / "audit.json").read_text())
    assert data["threat"]["eps"] == pytest.approx(8 / 255)


def test_analyze_cli(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "an"
    rc = main(
        ["analyze", str(ckpt), "--what", "margin,jacobian,fuzziness,boundary", "--n", "12", "--out", str(out)]
    )
    assert rc == 0
    data = json.loads((out / "analysis.json").read_text())
    assert set(data) == {"margin", "jacobian", "fuzziness", "boundary"}
    assert data["jacobian"]["jacobian_norm"] > 0 and data["jacobian"]["n"] == 12
    assert len(data["fuzziness"]["layers"]) == 2  # LeNet5 has two convolutions
    assert len(data["boundary"]["classes"]) == 2
    for png in ("weights.png", "boundary.png"):
        assert (out / png).stat().st_size > 1000


def test_analyze_cli_needs_a_checkpoint_except_for_the_toy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "--what", "margin"]) == 2
    assert "needs a CHECKPOINT" in capsys.readouterr().err
    assert main(["analyze", "x", "--what", "nonsense"]) == 2


def test_analyze_names_which_space_a_surface_explores(ckpt: Path, tmp_path: Path) -> None:
    from entrobust.diagnostics.analysis import ANALYSES, analyze

    assert {"input-surface", "weight-landscape"} <= set(ANALYSES)
    assert not {"surface", "landscape"} & set(ANALYSES)
    for old, new in (("landscape", "weight-landscape"), ("surface", "input-surface")):
        with pytest.raises(ConfigError, match=f"{old!r} is now called {new!r}"):
            analyze(None, None, [old], tmp_path)


def test_certify_cli(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cert"
    rc = main(
        [
            "certify",
            str(ckpt),
            "--sigma",
            "0.25",
            "--n0",
            "10",
            "--n",
            "100",
            "--batch",
            "100",
            "--count",
            "3",
            "--radii",
            "0,0.1",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    data = json.loads((out / "certify.json").read_text())
    assert len(data["predictions"]) == 3 and set(data["certified_accuracy"]) == {"0.0", "0.1"}
    assert (out / "certify.png").exists()
    assert "certified accuracy" in capsys.readouterr().out


def test_default_threat_and_float_parsing() -> None:
    adv = {"recipe": {"method": {"adversary": {"kind": "pgd", "norm": "l2", "eps": 2.0}}}}
    assert default_threat(adv, "mnist5k") == ("l2", 2.0)
    assert default_threat({}, "mnist5k") == ("linf", 0.3)
    assert default_threat({}, "cifar10") == ("linf", pytest.approx(8 / 255))
    assert parse_floats("0, 8/255,0.5", "--eps") == [0.0, pytest.approx(8 / 255), 0.5]
    with pytest.raises(ConfigError, match="--eps"):
        parse_floats("abc", "--eps")


def test_package_exports_are_functions_even_after_submodule_imports() -> None:
    import importlib

    import entrobust.diagnostics as diag

    for module in ("obfuscation", "weights", "geometry", "smoothing", "landscape", "toy", "boundary"):
        importlib.import_module(f"entrobust.diagnostics.{module}")
    for name in diag.__all__:
        assert not isinstance(getattr(diag, name), type(diag)), f"{name} resolves to a module"
    assert callable(diag.audit) and callable(diag.fuzziness)


def test_one_registry_serves_the_cli_and_experiment_files(ckpt: Path, tmp_path: Path) -> None:
    """``entrobust analyze`` and an experiment's ``[analysis.KIND]`` run the same kind: the same
    function and parameters give the same numbers; only the CLI also draws pictures."""
    from entrobust.data import load_dataset
    from entrobust.diagnostics.analysis import ALIASES, ANALYSES, AnalysisContext, analyze, checkpoint_kinds
    from entrobust.experiments.spec import experiment_from_dict

    assert "audit" in ANALYSES and "audit" not in checkpoint_kinds()
    assert set(checkpoint_kinds()) | {"audit"} == set(ANALYSES)
    assert ALIASES["table4"] in ANALYSES
    exp = experiment_from_dict(
        {
            "name": "x",
            "datasets": ["digits"],
            "defense": [{"preset": "ru/normal", "overrides": {"epochs": 1}}],
            "analysis": {"boundary": {"n": 30}, "table4": {"n": 10, "adv_steps": 0, "distortion": ""}},
        }
    )
    assert [a.kind for a in exp.analyses] == ["boundary", "geometry"]
    with pytest.raises(ConfigError, match="classes"):
        ANALYSES.get("boundary").validate({"classes": [3, 3]})

    model = ANALYSES.get("margin")  # any run-scope kind: same numbers through both doors
    from entrobust.checkpoint import load_checkpoint

    net, _ = load_checkpoint(ckpt)
    data = load_dataset("digits", "test")
    params = model.validate({"n": 25})
    stored = model.fn(AnalysisContext(dataset="digits", model=net, test=data, seed=3), params)
    res = analyze(net, data, ["margin", "fuzziness"], tmp_path, dataset="digits", n=25, seed=3)
    assert res.parts["margin"]["margin"] == pytest.approx(stored["margin"], rel=1e-6)
    assert res.parts["margin"]["n"] == stored["n"] == 25
    assert (tmp_path / "weights.png").exists() and (tmp_path / "weights.png") in res.files
    with pytest.raises(ConfigError, match="entrobust audit"):
        analyze(net, data, ["audit"], tmp_path)
