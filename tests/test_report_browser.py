"""The HTML report in a real headless browser: it loads offline, renders its tables and images,
and a screenshot is not blank. Skipped (with the reason) when no Chromium is installed, unless
``ENTROBUST_REQUIRE_BROWSER=1`` (set by CI, which installs Chromium) makes a missing browser a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from entrobust.experiments.store import Store
from entrobust.record import EvalRecord
from entrobust.report import write_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def _browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


REQUIRED = os.environ.get("ENTROBUST_REQUIRE_BROWSER", "") not in ("", "0")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        _browser() is None and not REQUIRED,
        reason="no headless Chromium found (looked for: " + ", ".join(BROWSERS) + "); "
        "install one, e.g. `apt-get install -y chromium`",
    ),
]


def _study(tmp_path: Path) -> Store:
    store = Store(tmp_path / "results.sqlite")
    for label, clean, rob in (("Normal", 0.99, 0.02), ("EntM", 0.98, 0.2), ("PAT", 0.97, 0.7)):
        cfg = {
            "dataset": "mnist5k",
            "seed": 0,
            "method": {"adversary": {"kind": "pgd" if label == "PAT" else "none"}},
        }
        rid = store.add_run(
            cfg, name=label, preset=f"ru/{label.lower()}", dataset="mnist5k", model="cnn4", seed=0
        )
        store.set_status(rid, "done")
        store.add_member("b", rid, label)
        store.add_epoch(rid, 1, {"epoch": 1, "train_loss": 0.5})
        base = {"run_id": rid, "evaluation": "white-box", "norm": "linf", "n": 100, "clean_acc": clean}
        rows = [
            EvalRecord(attack="clean", row="clean", eps=0.0, robust_acc=clean, **base),
            EvalRecord(attack="PGD10-32", eps=32 / 255, robust_acc=rob, **base),
            EvalRecord(attack="worst-case", row="worst-case", eps=32 / 255, robust_acc=rob, **base),
        ]
        store.replace_evaluations(rid, "white-box", rows)
        hist = {"layer": "c", "edges": [-0.5, 0.0, 0.5], "counts": [4, 6], "near_zero": 1, "total": 10}
        store.add_analysis(rid, "fuzziness", {"first": 0.3, "histograms": [hist]})
    return store


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    rep = write_report(_study(tmp_path), tmp_path / "report", experiment="b")
    html_path = rep.paths["html"]
    browser = _browser()
    assert browser is not None, "ENTROBUST_REQUIRE_BROWSER is set but no Chromium was found"
    # offline: no background, update, sync or QUIC traffic for a closed network to refuse
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-dev-shm-usage",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-quic", f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", html_path.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "RU Table 1 layout" in dom.stdout and dom.stdout.count("<img") == len(rep.figures) >= 2
    shot = tmp_path / "report.png"
    out = subprocess.run(
        [browser, *flags, "--window-size=1280,2400", f"--screenshot={shot}", html_path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and shot.exists(), out.stderr[-2000:]
    from matplotlib.image import imread

    img = imread(shot)
    assert img.shape[0] >= 2000 and img.shape[1] >= 1200
    assert float(img[..., :3].std()) > 0.05  # not a blank page
    # the dark header band is drawn at the top: the page's CSS was applied
    assert float(img[5:60, :, :3].mean()) < 0.4
