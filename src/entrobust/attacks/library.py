"""Imports every module that registers built-in attacks (keeps ``import entrobust`` light)."""

from __future__ import annotations

import importlib

MODULES: tuple[str, ...] = (
    "entrobust.attacks.gradient",  # fgsm, bim, pgd, cw-pgd, mim, RU families, adaptive-ls, atent
    "entrobust.attacks.minimal",  # cw-l2, deepfool
    "entrobust.attacks.sampling",  # random-search, noise, transfer
    "entrobust.attacks.apgd",  # apgd-ce, apgd-dlr, apgd-t
    "entrobust.attacks.fab",  # fab, fab-t
    "entrobust.attacks.square",  # square
    "entrobust.attacks.autoattack",  # autoattack (standard, plus)
)

for _name in MODULES:
    try:
        importlib.import_module(_name)
    except ModuleNotFoundError as _exc:  # pragma: no cover - only while a module is being written
        if _exc.name != _name:
            raise
