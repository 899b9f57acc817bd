"""One configuration layer (issue 13): one typed converter, one resolver, config as data bound in
one step, presets as data files."""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from importlib import resources

import pytest

from entrobust.cli import main
from entrobust.errors import ConfigError, UnknownNameError
from entrobust.experiments.spec import experiment_from_dict
from entrobust.training import PRESETS, TrainConfig, preset_config, resolve_config
from entrobust.training.convert import convert
from entrobust.training.method import AdversaryConfig, MethodConfig, bind_method
from entrobust.training.presets import FILES, _layer, _numbers

ADP_NEEDS_ENSEMBLE = 'needs model = "ensemble"'


# ------------------------------------------------------------------ the converter
def test_one_converter_reads_the_same_everywhere() -> None:
    assert convert(int, 3.0, "k") == 3 and isinstance(convert(float, 2, "k"), float)
    assert convert(tuple[int, ...], [1, 2.0], "k") == (1, 2)
    assert convert(str | None, None, "k") is None
    for tp, value, msg in (
        (int, 2.5, "k: expected an integer, got float 2.5"),
        (float, "fast", "k: expected a number, got str 'fast'"),
        (float, math.nan, "k: must be a finite number"),
        (bool, 1, "k: expected true/false, got int 1"),
    ):
        with pytest.raises(ConfigError, match=msg):
            convert(tp, value, "k")
    # TrainConfig, MethodConfig and experiment files use it: the same message for the same mistake
    with pytest.raises(ConfigError, match=r"epochs: expected an integer, got float 2\.5"):
        TrainConfig.from_dict({"epochs": 2.5})
    with pytest.raises(ConfigError, match=r"method\.adversary\.steps: expected an integer, got float 2\.5"):
        MethodConfig.from_dict({"adversary": {"kind": "pgd", "steps": 2.5}})
    with pytest.raises(ConfigError, match=r"seeds\[0\]: expected an integer, got float 2\.5"):
        experiment_from_dict({"name": "x", "seeds": [2.5], "defense": [{"preset": "ru/normal"}]})
    assert AdversaryConfig(kind="pgd", eps=1).eps == 1.0 and isinstance(AdversaryConfig(eps=1).eps, float)


# ------------------------------------------------------------------ config is data, bound once
def test_config_modules_import_no_runtime() -> None:
    code = (
        "import sys, entrobust.training.method_config, entrobust.training.convert\n"
        "bad = [m for m in ('torch', 'entrobust.training.adversaries', 'entrobust.training.method') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_names_are_checked_in_the_binding_step() -> None:
    cfg = MethodConfig(adversary=AdversaryConfig(kind="pgd", loss="no-such-loss"))  # data only
    with pytest.raises(ConfigError, match="adversary"):
        bind_method(cfg)
    with pytest.raises(ConfigError, match="adversary"):  # load-time validation binds
        TrainConfig.from_dict({"method": cfg.to_dict()})
    with pytest.raises(ConfigError, match=r"adversary\.kind"):  # kinds the config cannot resolve
        AdversaryConfig(kind="fgsm")


# ------------------------------------------------------------------ ADP needs an ensemble, at load
def test_adp_with_a_plain_model_fails_at_load_time_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=ADP_NEEDS_ENSEMBLE):
        preset_config("ru/adp", overrides={"model": "cnn4"})
    with pytest.raises(ConfigError, match=r"defense\[0\] \(preset 'ru/adp'.*" + ADP_NEEDS_ENSEMBLE):
        experiment_from_dict({"name": "x", "models": ["cnn4"], "defense": [{"preset": "ru/adp"}]})
    assert main(["train", "--preset", "ru/adp", "--model", "cnn4", "--dry-run"]) != 0
    assert ADP_NEEDS_ENSEMBLE in capsys.readouterr().err
    # the preset itself, and its members swapped, are fine
    ok = preset_config("ru/adp", overrides={"model_kwargs.member": "lenet"})
    assert ok.model == "ensemble" and ok.model_kwargs == {"member": "lenet", "k": 3}


# ------------------------------------------------------------------ one resolver
def _cli_args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = dict(preset=None, config=None, scale=None, dataset=None, model=None)
    base |= dict(epochs=None, batch_size=None, lr=None, seed=None, overrides=[], resume=False, out=None)
    base |= dict(device=None, threads=None, data_root=None)
    base |= kw
    return argparse.Namespace(**base)


def test_cli_experiments_and_api_resolve_the_same_config() -> None:
    from entrobust.cli.train import resolve_config as cli_resolve
    from entrobust.experiments.spec import plan_runs

    api = resolve_config(
        "ru/pat", dataset="mnist5k", scale="cpu", layers=[("", {"epochs": 2, "model": "lenet", "seed": 3})]
    )
    cli = cli_resolve(
        _cli_args(preset="ru/pat", dataset="mnist5k", scale="cpu", epochs=2, model="lenet", seed=3)
    )
    exp = experiment_from_dict(
        {
            "name": "x",
            "models": ["lenet"],
            "seeds": [3],
            "overrides": {"epochs": 2},
            "defense": [{"preset": "ru/pat"}],
        }
    )
    (run,) = plan_runs(exp)
    assert api == cli == run.config


def test_resolver_layers_label_errors_and_reset_model_kwargs() -> None:
    cfg = resolve_config(
        "ru/adp", layers=[("", ["model=cnn4", "method.objective.kind=ce", "method.objective.params={}"])]
    )
    assert cfg.model == "cnn4" and cfg.model_kwargs == {}
    with pytest.raises(ConfigError, match=r"^my layer: unknown config key 'epoks'"):
        resolve_config("ru/normal", layers=[("my layer", {"epoks": 3})])
    with pytest.raises(UnknownNameError, match=r"^here: "):
        resolve_config("ru/no-such", where="here")
    with pytest.raises(ConfigError, match="either a preset or a base"):
        resolve_config("ru/normal", base=TrainConfig())


# ------------------------------------------------------------------ presets as data
def test_every_preset_data_file_ships_with_the_package() -> None:
    folder = resources.files("entrobust.training.presets")
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".toml")) == sorted(
        f"{f}.toml" for f in FILES
    )
    papers = {PRESETS.get(n).paper for n in PRESETS.names()}
    assert papers == {"RU", "ATENT", "Min-Max", "Kanai"}


def test_preset_layers_parse_fractions_and_reject_unknown_keys() -> None:
    assert _numbers({"eps": "8/255", "x": ["1/4", "ce"], "s": "0.03/16"}) == {
        "eps": 8 / 255,
        "x": [0.25, "ce"],
        "s": 0.03 / 16,
    }
    parts = _layer(
        {"epochs": 3, "paper": {"epochs": 9, "mnist": {"epochs": 40}}, "cpu": {"epochs": 1}}, ["mnist"], "f"
    )
    assert parts == {
        "all": {"epochs": 3},
        "paper": {"epochs": 9},
        "paper.mnist": {"epochs": 40},
        "cpu": {"epochs": 1},
    }
    with pytest.raises(ConfigError, match=r"f\.paper: unknown key 'cifar01'"):
        _layer({"paper": {"cifar01": {}}}, ["cifar10"], "f")
    with pytest.raises(ConfigError, match="f: unknown key 'epoks'"):
        _layer({"epoks": 3}, [], "f")
