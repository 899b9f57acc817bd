"""``entrobust list WHAT``: print a registry (datasets, models, attacks, presets, ...)."""

from __future__ import annotations

import argparse
import importlib

from entrobust.errors import ConfigError

#: what → (module, registry attribute)
REGISTRIES: dict[str, tuple[str, str]] = {
    "datasets": ("entrobust.data", "DATASETS"),
    "models": ("entrobust.models", "MODELS"),
    "attacks": ("entrobust.attacks", "ATTACKS"),
    "suites": ("entrobust.evaluation", "SUITES"),
    "presets": ("entrobust.training", "PRESETS"),
    "objectives": ("entrobust.training.objectives", "OBJECTIVES"),
    "adversaries": ("entrobust.training.adversaries", "ADVERSARIES"),
    "regularizers": ("entrobust.training.regularizers", "REGULARIZERS"),
    "optimizers": ("entrobust.training", "OPTIMIZERS"),
    "losses": ("entrobust.attacks.losses", "LOSSES"),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered datasets, models, attacks, suites, presets")
    p.add_argument("what", choices=sorted(REGISTRIES), help="which registry to list")
    p.set_defaults(func=run)


def rows(what: str) -> list[tuple[str, str]]:
    """(name, one-line description) for every entry of registry ``what``."""
    if what not in REGISTRIES:
        raise ConfigError(f"unknown registry {what!r}; valid: {', '.join(sorted(REGISTRIES))}")
    module_name, attr = REGISTRIES[what]
    try:
        registry = getattr(importlib.import_module(module_name), attr)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise ConfigError(f"{what} are not available in this installation ({exc})") from None
    entries = [(name, registry.help(name)) for name in registry.names()]
    if what == "attacks":  # parametric RU families (FGSM_k, PGDp-k, CWp-k)
        from entrobust.attacks import PATTERNS

        entries += [(f"{p.example} (family)", p.help) for p in PATTERNS]
    return entries


def run(args: argparse.Namespace) -> int:
    entries = rows(args.what)
    width = max((len(n) for n, _ in entries), default=0)
    for name, text in entries:
        print(f"{name:<{width}}  {text}")
    return 0
