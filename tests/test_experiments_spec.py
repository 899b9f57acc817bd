"""Experiment files: a valid study loads and plans; every kind of bad input fails naming the key
and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from entrobust.errors import ConfigError, EntrobustError, UnknownNameError
from entrobust.experiments.spec import TINY_OVERRIDES, load_experiment

VALID = """
name = "small"
scale = "tiny"
seeds = [0, 1]

[overrides]
epochs = 2

[[defense]]
preset = "ru/normal"

[[defense]]
preset = "ru/pat"
label = "PAT"
surrogate = "Normal"
overrides = { "method.adversary.steps" = 3 }

[[evaluation]]
name = "white-box"
suite = "FGSM_32,PGD10-32"
mode = "independent"
max_examples = 50

[[evaluation]]
name = "black"
suite = "PGD10-32"
transfer = true
eps = ["8/255"]

[analysis.audit]
eps = "48/255"
n = 20

[analysis.fuzziness]

[report]
tables = ["ru-table1"]
"""


def _write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_valid_file_loads_and_plans(tmp_path: Path) -> None:
    exp = load_experiment(_write(tmp_path, VALID))
    assert exp.name == "small" and exp.scale == "tiny"
    assert [d.name for d in exp.defenses] == ["Normal", "PAT"]  # the preset's title is the default label
    assert exp.evaluations[1].eps == pytest.approx((8 / 255,))
    plan = exp.plan()
    assert [(p.label, p.seed) for p in plan] == [("Normal", 0), ("Normal", 1), ("PAT", 0), ("PAT", 1)]
    pat = plan[2].config
    assert pat.epochs == 2  # experiment override beats the tiny scale's 1 epoch
    assert pat.method.adversary.steps == 3  # defense override
    assert pat.max_train_examples == TINY_OVERRIDES["max_train_examples"]
    assert pat.seed == 0 and plan[3].config.seed == 1
    assert plan[2].adversarial and not plan[0].adversarial
    assert exp.analyses[0].params == {"eps": "48/255", "n": 20}


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        # unknown keys, at every level
        (('scale = "tiny"', 'scale = "tiny"\ncolour = "red"'), ConfigError, "unknown key 'colour'"),
        (('label = "PAT"', 'label = "PAT"\nepochs = 3'), ConfigError, "unknown key 'defense[1].epochs'"),
        (
            ("max_examples = 50", "max_examples = 50\nsteps = 4"),
            ConfigError,
            "unknown key 'evaluation[0].steps'",
        ),
        (
            ('tables = ["ru-table1"]', 'tables = ["ru-table1"]\nfont = 3'),
            ConfigError,
            "unknown key 'report.font'",
        ),
        (("[overrides]\nepochs = 2", "[overrides]\nepoks = 2"), ConfigError, "overrides"),
        (('"method.adversary.steps" = 3', '"method.adversary.stepz" = 3'), ConfigError, "defense[1]"),
        (("n = 20", "n = 20\nwidth = 3"), ConfigError, "analysis.audit: unknown parameter 'width'"),
        # wrong types
        (("seeds = [0, 1]", 'seeds = "0"'), ConfigError, "seeds: expected a list"),
        (("seeds = [0, 1]", 'seeds = [0, "one"]'), ConfigError, "seeds[1]: expected an integer"),
        (
            ("max_examples = 50", 'max_examples = "all"'),
            ConfigError,
            "evaluation[0].max_examples: expected an integer",
        ),
        (("transfer = true", 'transfer = "yes"'), ConfigError, "evaluation[1].transfer: expected true/false"),
        (('eps = ["8/255"]', 'eps = ["eight"]'), ConfigError, "evaluation[1].eps[0]"),
        (("n = 20", "n = 2.5"), ConfigError, "analysis.audit: n: expected an integer"),
        (("[overrides]\nepochs = 2", '[overrides]\nepochs = "two"'), ConfigError, "epochs"),
        (('mode = "independent"', 'mode = "sideways"'), ConfigError, "evaluation[0].mode: must be one of"),
        (('scale = "tiny"', 'scale = "huge"'), ConfigError, "scale: must be one of"),
        # unknown names
        (
            ('preset = "ru/pat"', 'preset = "ru/patt"'),
            UnknownNameError,
            "defense[1].preset: unknown preset 'ru/patt'",
        ),
        (
            ("seeds = [0, 1]", 'seeds = [0, 1]\ndatasets = ["mnist6k"]'),
            UnknownNameError,
            "datasets[0]: unknown dataset",
        ),
        (
            ("seeds = [0, 1]", 'seeds = [0, 1]\nmodels = ["resnet9000"]'),
            UnknownNameError,
            "models[0]: unknown model",
        ),
        (
            ('suite = "FGSM_32,PGD10-32"', 'suite = "FGSM_32,PDG10-32"'),
            UnknownNameError,
            "evaluation[0].suite",
        ),
        (("[analysis.fuzziness]", "[analysis.fuzzyness]"), UnknownNameError, "unknown analysis 'fuzzyness'"),
        (
            ('tables = ["ru-table1"]', 'tables = ["ru-table99"]'),
            UnknownNameError,
            "report.tables[0]: unknown table",
        ),
        # references and structure
        (
            ('surrogate = "Normal"', 'surrogate = "Nromal"'),
            ConfigError,
            "defense[1].surrogate: no defense labelled",
        ),
        (
            ('preset = "ru/normal"', 'preset = "ru/normal"\nlabel = "PAT"'),
            ConfigError,
            "label 'PAT' is used twice",
        ),
        (('name = "white-box"', 'name = "black"'), ConfigError, "name 'black' is used twice"),
        (('name = "small"\n', ""), ConfigError, "missing key 'name'"),
        (('preset = "ru/normal"', 'label = "x"'), ConfigError, "defense[0]: missing key 'preset'"),
    ],
)
def test_bad_input_names_the_key_and_the_file(
    tmp_path: Path, edit: tuple[str, str], error: type[Exception], message: str
) -> None:
    old, new = edit
    assert old in VALID, old
    path = _write(tmp_path, VALID.replace(old, new, 1), "broken-study.toml")
    with pytest.raises(error) as info:
        load_experiment(path)
    text = str(info.value)
    assert text.startswith(str(path)), text
    assert message in text, text


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read experiment file"):
        load_experiment(tmp_path / "missing.toml")
    bad = _write(tmp_path, "name = [unclosed", "bad.toml")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_experiment(bad)


def test_errors_are_entrobust_errors_for_the_cli(tmp_path: Path) -> None:
    path = _write(tmp_path, VALID.replace('ru/pat"', 'nope"', 1))
    with pytest.raises(EntrobustError):
        load_experiment(path)


def test_shipped_study_files_are_valid() -> None:
    folder = Path(__file__).resolve().parents[1] / "experiments"
    files = sorted(folder.glob("*.toml"))
    assert len(files) >= 8, files
    for f in files:
        exp = load_experiment(f)
        assert exp.defenses and exp.evaluations, f
        if exp.scale != "paper":  # paper-scale files need dataset files; still validated above
            assert {p.dataset for p in exp.plan()} == {"mnist5k"}, f


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ('suite = "FGSM_32,PGD10-32"', 'suite = "fgsm,pgd:stepz=3"\neps = [0.3]'),
            "evaluation[0].suite ('fgsm,pgd:stepz=3' on mnist5k): suite row 'pgd(stepz=3)': "
            "unknown option(s) ['stepz'] for attack 'pgd'; valid: ",
        ),
        (('suite = "PGD10-32"', 'suite = "pgd:steps=0"'), "evaluation[1].suite"),
        (("n = 20", "n = 20\npgd_steps = 0"), "analysis.audit: pgd_steps: steps must be an integer >= 1"),
        (("n = 20", 'n = 20\nchecks = ["gradient"]'), "analysis.audit: checks: unknown audit check(s)"),
        (("n = 20", 'n = 20\nnorm = "l3"'), "analysis.audit: norm: unknown norm 'l3'"),
        (
            ("[analysis.fuzziness]", "[analysis.fuzziness]\nbins = 0"),
            "analysis.fuzziness: bins: must be >= 1",
        ),
        (
            ("[analysis.fuzziness]", '[analysis.geometry]\ndistortion = "deepfoo"'),
            "analysis.geometry: distortion: unknown minimal-distortion attack 'deepfoo'; valid: deepfool, cw",
        ),
    ],
)
def test_attack_and_analysis_options_are_checked_at_load(
    tmp_path: Path, edit: tuple[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Options are checked by building each attack / analysis (not running it), at load and in
    ``entrobust run --dry-run``: a misspelt option never reaches training."""
    from entrobust.cli import main

    old, new = edit
    assert old in VALID, old
    path = _write(tmp_path, VALID.replace(old, new, 1), "study.toml")
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert str(info.value).startswith(f"{path}: "), info.value
    assert message in str(info.value), info.value
    assert main(["run", str(path), "--dry-run", "--workspace", str(tmp_path / "ws")]) == 2
    out = capsys.readouterr()
    assert message in out.err and "training run(s)" not in out.out
    assert not (tmp_path / "ws").exists()


def test_analyses_take_the_datasets_own_default_threat() -> None:
    """One rule for a dataset's default ε (issue 13): studies' analyses, training validation and
    the audit CLI all read it from the dataset (digits used to get 0.3 here and 0.1 elsewhere)."""
    from entrobust.data import default_threat
    from entrobust.diagnostics.analysis import default_eps

    for name in ("mnist5k", "digits", "cifar10", "svhn", None):
        assert default_eps(name) == default_threat(name)[1]
    assert default_eps("digits") == 0.1 and default_eps("mnist5k") == 0.3
    assert default_eps("mnist5k", "l2") == 2.0 and default_eps("cifar10", "l2") == 0.5


def test_the_old_input_surface_name_still_loads_with_a_warning(tmp_path: Path) -> None:
    old = VALID.replace("[analysis.fuzziness]", "[analysis.landscape]\nresolution = 5")
    with pytest.warns(DeprecationWarning, match="'landscape' is now called 'input-surface'"):
        exp = load_experiment(_write(tmp_path, old))
    (surface,) = [a for a in exp.analyses if a.kind == "input-surface"]
    assert surface.params == {"resolution": 5}
    both = old + "\n[analysis.input-surface]\n"
    with pytest.warns(DeprecationWarning), pytest.raises(ConfigError, match="given twice"):
        load_experiment(_write(tmp_path, both, "both.toml"))
