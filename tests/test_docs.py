"""Every fenced code block of README.md and docs/*.md is a test.

* ```python blocks run (in a temporary folder), at a small size where the doc says how;
* ```toml blocks load and validate with the project's loaders (a study file or a TrainConfig);
* ```sh / ```bash / ```console lines that start an ``entrobust`` command (also after
  ``torchrun ... -m``) are parsed by the CLI's own parser — an unknown flag or subcommand fails —
  and the cheap ones (``list``, ``info``, ``--help``) run; ``make`` targets must exist in the
  Makefile and ``python FILE`` scripts in the repository;
* ```text blocks (program output, file trees, pseudo-code) are prose and are not run. A fence
  without a language fails: say what the block is.

A block is steered by hidden HTML comments on the lines right above its fence, each
``<!-- doctest: DIRECTIVE -->``:

``skip REASON``           never run it (a GPU, a download, several nodes ...); the reason is required
                          and shows in the test report
``setup NAME``            run a python block in the namespace of :data:`SETUPS` [NAME] (``model``,
                          ``x``, ``y`` ... for blocks that show a call on "your" objects)
``continue``              run a python block after the file's previous python block, in its namespace
``replace 'OLD' 'NEW'``   substitute text before running (smaller sizes for CI); OLD must occur
``slow``                  mark the block ``slow`` (run by ``make test-slow``)
``experiment`` /          what a toml block is: a study file (:func:`load_experiment`) or a
``train-config``          training config, whole or a fragment (:func:`config_from_dict`)
"""

from __future__ import annotations

import contextlib
import re
import shlex
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch

from entrobust.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

LANGUAGES = {"python", "toml", "sh", "bash", "console", "text"}
SHELLS = {"sh", "bash", "console"}
#: subcommands cheap enough to run from the docs (the others are only parsed)
RUN_COMMANDS = {"list", "info"}

_FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
_DIRECTIVE = re.compile(r"^<!--\s*doctest:\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    directives: list[str] = field(default_factory=list)
    index: int = 0  # position among the file's blocks

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}:{self.lang or 'none'}"

    def get(self, key: str) -> list[str]:
        """Arguments of every directive named ``key``."""
        out = []
        for d in self.directives:
            name, _, rest = d.partition(" ")
            if name == key:
                out.append(rest.strip())
        return out

    def has(self, key: str) -> bool:
        return any(d.partition(" ")[0] == key for d in self.directives)


@cache
def blocks_of(path: Path) -> tuple[Block, ...]:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    out = []
    for m in _FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        directives: list[str] = []
        k = line - 2  # the line above the fence (0-based)
        while k >= 0 and (d := _DIRECTIVE.match(lines[k])):
            directives.insert(0, d.group(1))
            k -= 1
        out.append(Block(path, line, m.group(1), m.group(2), directives, len(out)))
    return tuple(out)


def all_blocks() -> list[Block]:
    return [b for p in DOCS for b in blocks_of(p)]


def _param(b: Block) -> Any:
    marks = [pytest.mark.slow] if b.has("slow") else []
    return pytest.param(b, id=b.id, marks=marks)


def _skip_reason(b: Block) -> str | None:
    reasons = b.get("skip")
    if not reasons:
        return None
    reason = reasons[0].lstrip("—–-: ").strip()
    assert reason, f"{b.id}: a skipped block must say why (<!-- doctest: skip REASON -->)"
    return reason


# ------------------------------------------------------------------------------------ the blocks
def test_docs_have_blocks() -> None:
    found = all_blocks()
    assert len(found) > 30
    assert {b.lang for b in found} >= {"python", "toml", "sh", "text"}


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in all_blocks()])
def test_block_has_a_known_language(block: Block) -> None:
    assert block.lang in LANGUAGES, (
        f"{block.id}: fence language {block.lang!r}; use one of {sorted(LANGUAGES)} "
        "(```text for output and pseudo-code)"
    )
    known = {"skip", "setup", "continue", "replace", "slow", "experiment", "train-config"}
    for d in block.directives:
        assert d.partition(" ")[0] in known, f"{block.id}: unknown doctest directive {d!r}"


# ------------------------------------------------------------------------------------ python
def _mnist_slice(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` test digits, every class represented (the split is sorted by class)."""
    test = _mnist_test()
    idx = torch.linspace(0, len(test.y) - 1, n).round().long()
    return test.x[idx].clone(), test.y[idx].clone()


@cache
def _mnist_test() -> Any:
    from entrobust.data import load_dataset

    return load_dataset("mnist5k", "test").to_float()


def _model(name: str = "cnn4", seed: int = 0) -> torch.nn.Module:
    from entrobust.models import create_model

    torch.manual_seed(seed)
    return create_model(name, dataset="mnist5k").eval()


def _setup_mnist() -> dict[str, Any]:
    """A small untrained model and 8 test digits — what "model, x, y" mean in the docs."""
    x, y = _mnist_slice(8)
    return {"model": _model(), "x": x, "y": y, "t": (y + 1) % 10, "proxy": _model(seed=1)}


def _setup_loss() -> dict[str, Any]:
    from entrobust.attacks import ThreatModel, build_attack

    return {**_setup_mnist(), "threat": ThreatModel("linf", 0.3), "build_attack": build_attack}


def _setup_models() -> dict[str, Any]:
    """Several small models (geometry, fuzziness, boundary and smoothing examples)."""
    from entrobust.data import BatchLoader

    x, y = _mnist_slice(40)
    ns = _setup_mnist()
    ns.update(
        normal=_model("cnn4", 1),
        pat_entm=_model("cnn4", 2),
        std=_model("lenet", 3),
        adv=_model("lenet", 4),
        minmax=_model("lenet", 5),
        xs=x[:4],
        ys=y[:4],
        loader=BatchLoader(_mnist_test().subset(range(0, 1000, 125)), batch_size=8),
    )
    ns["x"] = ns["x"][0]  # certify / predict take one image
    return ns


def _setup_boundary() -> dict[str, Any]:
    x, y = _mnist_slice(200)
    return {"model": _model(), "x": x, "y": y}


def _setup_eval() -> dict[str, Any]:
    return {"model": _model(), "test_data": _mnist_test().subset(range(0, 1000, 100))}


def _setup_method() -> dict[str, Any]:
    return {**_setup_mnist(), "step": 0}


def _setup_checkpoint() -> dict[str, Any]:
    from entrobust.training import preset_config

    cfg = preset_config("ru/trades", dataset="mnist5k").to_dict()
    return {"model": _model("smallcnn"), "my_model": _model("smallcnn", 1), "cfg": cfg}


def _setup_foreign() -> dict[str, Any]:
    """A foreign ``.pt`` state dict in the TRADES layout (an extra ``sub_block1``), for a small
    stand-in model (the real file is a 180 MB download)."""
    from entrobust.models import create_model

    net = _model("smallcnn").net  # type: ignore[union-attr]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["sub_block1.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, "model-wideres-epoch76.pt")
    return {"create_model": create_model}


SETUPS: dict[str, Callable[[], dict[str, Any]]] = {
    "mnist": _setup_mnist,
    "loss": _setup_loss,
    "models": _setup_models,
    "boundary": _setup_boundary,
    "eval": _setup_eval,
    "method": _setup_method,
    "checkpoint": _setup_checkpoint,
    "foreign": _setup_foreign,
}


def _source(b: Block) -> str:
    code = b.code
    for arg in b.get("replace"):
        parts = shlex.split(arg)
        assert len(parts) == 2, f"{b.id}: replace takes 'OLD' 'NEW', got {arg!r}"
        old, new = parts
        assert old in code, f"{b.id}: replace {old!r}: not in the block any more"
        code = code.replace(old, new)
    return code


def _previous_python(b: Block) -> Block:
    before = [p for p in blocks_of(b.path)[: b.index] if p.lang == "python"]
    assert before, f"{b.id}: 'continue' but no python block before it"
    return before[-1]


def _run_python(b: Block, ns: dict[str, Any]) -> None:
    assert _skip_reason(b) is None, f"{b.id}: 'continue' after a skipped block"
    if b.has("continue"):
        _run_python(_previous_python(b), ns)
    for name in b.get("setup"):
        assert name in SETUPS, f"{b.id}: unknown setup {name!r}; valid: {sorted(SETUPS)}"
        ns.update(SETUPS[name]())
    exec(compile(_source(b), str(b.id), "exec"), ns)


@contextlib.contextmanager
def _registries_restored() -> Iterator[None]:
    """Blocks that register a loss, attack or model leave no trace in other tests."""
    from entrobust.registry import Registry

    regs = {
        id(v): v
        for name, mod in list(sys.modules.items())
        if name.startswith("entrobust") and mod is not None
        for v in list(vars(mod).values())
        if isinstance(v, Registry)
    }.values()
    saved = [(r, dict(r._items), dict(r._help)) for r in regs]
    try:
        yield
    finally:
        for r, items, helps in saved:
            r._items.clear()
            r._items.update(items)
            r._help.clear()
            r._help.update(helps)


@pytest.mark.parametrize("block", [_param(b) for b in all_blocks() if b.lang == "python"])
def test_python_block_runs(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reason = _skip_reason(block)
    if reason:
        pytest.skip(f"marked in the doc: {reason}")
    monkeypatch.chdir(tmp_path)
    ns: dict[str, Any] = {"__name__": "__doc_block__"}
    with _registries_restored(), torch.random.fork_rng():
        _run_python(block, ns)


# ------------------------------------------------------------------------------------ toml
@pytest.mark.parametrize("block", [_param(b) for b in all_blocks() if b.lang == "toml"])
def test_toml_block_validates(block: Block, tmp_path: Path) -> None:
    reason = _skip_reason(block)
    if reason:
        pytest.skip(f"marked in the doc: {reason}")
    if block.has("experiment"):
        from entrobust.experiments.spec import load_experiment

        path = tmp_path / "study.toml"
        path.write_text(_source(block), encoding="utf-8")
        exp = load_experiment(path)
        assert exp.defenses
    elif block.has("train-config"):
        import tomllib

        from entrobust.training.config import config_from_dict

        data = tomllib.loads(_source(block))
        cfg = config_from_dict({"preset": "ru/normal", **data} if "preset" not in data else data)
        for section, values in data.items():
            if isinstance(values, dict):
                got = getattr(cfg, section)
                for k, v in values.items():
                    assert getattr(got, k) == v, f"{block.id}: {section}.{k} did not load as written"
    else:
        pytest.fail(f"{block.id}: say what this toml is: <!-- doctest: experiment --> or train-config")


# ------------------------------------------------------------------------------------ shell
def _command_lines(code: str) -> list[str]:
    """Logical lines (continuations joined, ``$ `` prompts removed)."""
    out: list[str] = []
    buf = ""
    for raw in code.splitlines():
        line = raw.rstrip()
        if line.startswith("$ "):
            line = line[2:]
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            out.append(buf.strip())
        buf = ""
    return out


def _entrobust_argv(words: list[str]) -> list[str] | None:
    if words[0] == "entrobust":
        return words[1:]
    if words[0] == "torchrun":
        assert "-m" in words, f"torchrun without -m: {words}"
        k = words.index("-m")
        assert words[k + 1] == "entrobust", f"torchrun runs {words[k + 1]!r}, not entrobust"
        return words[k + 2 :]
    if words[:3] in (["python", "-m", "entrobust"], ["python3", "-m", "entrobust"]):
        return words[3:]
    return None


@cache
def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([\w-]+):", text, re.M))


def _check_parses(argv: list[str], where: str) -> None:
    parser = build_parser()
    try:
        parser.parse_args(argv)
    except SystemExit as exc:
        assert exc.code == 0, f"{where}: `entrobust {shlex.join(argv)}` does not parse (see stderr)"


def shell_commands(block: Block) -> list[list[str]]:
    return [shlex.split(line, comments=True) for line in _command_lines(_source(block))]


@pytest.mark.parametrize("block", [_param(b) for b in all_blocks() if b.lang in SHELLS])
def test_shell_block_commands(block: Block, capsys: pytest.CaptureFixture[str]) -> None:
    reason = _skip_reason(block)
    for words in shell_commands(block):
        if not words:
            continue
        where = f"{block.id}: {shlex.join(words)}"
        argv = _entrobust_argv(words)
        if argv is not None:
            _check_parses(argv, where)  # also for skipped blocks: flags must exist
            if reason is None and ((argv[:1] and argv[0] in RUN_COMMANDS) or "--help" in argv):
                with contextlib.suppress(SystemExit):
                    assert main(argv) == 0, where
        elif words[0] == "make":
            assert set(words[1:]) <= _make_targets(), f"{where}: no such Makefile target"
        elif words[0] in ("python", "python3"):
            assert (ROOT / words[1]).is_file(), f"{where}: no such script"
        elif words[0] in ("xdg-open", "open"):
            pass
        else:
            pytest.fail(f"{where}: unknown command {words[0]!r} (mark the block skip with a reason)")
    capsys.readouterr()
    if reason:
        pytest.skip(f"parsed only, marked in the doc: {reason}")


# ------------------------------------------------------------------------------------ the harness
def test_a_typo_in_a_flag_fails(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("```sh\nentrobust eval runs/x/best --suite quick --epz 0.3\n```\n", encoding="utf-8")
    (b,) = blocks_of(doc)
    with pytest.raises(AssertionError, match="does not parse"):
        for words in shell_commands(b):
            _check_parses(_entrobust_argv(words) or [], b.path.name)


def test_directives_are_read_from_the_lines_above_the_fence(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "text\n<!-- doctest: skip needs a GPU -->\n<!-- doctest: replace 'a' 'b' -->\n```python\na\n```\n",
        encoding="utf-8",
    )
    (b,) = blocks_of(doc)
    assert _skip_reason(b) == "needs a GPU"
    assert _source(b) == "b\n"


def test_no_run_directory_in_the_docs_that_training_never_writes() -> None:
    """Training writes ``best`` / ``last``; ``runs/x/model`` was a dead end."""
    for path in DOCS:
        bad = re.findall(r"runs/[\w.-]+/model\b", path.read_text(encoding="utf-8"))
        assert not bad, f"{path.name}: {bad}"


def test_every_doc_command_uses_a_readable_workspace_after_the_demo() -> None:
    """The README's report command after ``make demo`` names the demo's workspace."""
    readme = [b for b in blocks_of(ROOT / "README.md") if b.lang in SHELLS]
    reports = [w for b in readme for w in shell_commands(b) if w[:2] == ["entrobust", "report"]]
    assert reports
    for words in reports:
        named = "-w" in words or "--workspace" in words
        assert named, f"README: {shlex.join(words)} reads no named workspace"
