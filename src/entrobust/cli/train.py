"""``entrobust train``: train a preset or a config file, print clean test accuracy at the end.

Examples::

    entrobust train --preset ru/normal --dataset mnist5k --epochs 1
    entrobust train --preset ru/pat-entm --dataset cifar10 --scale paper --out runs/pat-entm
    entrobust train --config my.toml --set optimizer.lr=0.05 --set method.objective.params.lam=3
    entrobust train --out runs/pat-entm --resume
    entrobust train --preset ru/pat-entm --out runs/pat-entm --overwrite

Without ``--preset`` or ``--config`` the plain ``ce`` method is trained. The resolved config is
saved as ``config.json`` / ``config.toml`` next to the checkpoints in ``--out``. A non-empty
``--out`` that is not a run of the same config is refused unless ``--overwrite`` is given (see
:mod:`entrobust.training.outdir`); the folder is checked before anything is built or written.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from entrobust.cli import plain


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model with a preset or config (see: entrobust list presets)",
        description=plain((__doc__ or "").split("\n")[0]),
    )
    src = p.add_argument_group("what to train")
    src.add_argument(
        "--preset", metavar="NAME", help="preset name, e.g. ru/pat-entm (entrobust list presets)"
    )
    src.add_argument("--config", metavar="FILE", help="a TOML or JSON TrainConfig")
    src.add_argument(
        "--scale", choices=("cpu", "paper"), help="preset scale (default: cpu for mnist5k/mnist)"
    )
    src.add_argument("--dataset", help="dataset name (entrobust list datasets)")
    src.add_argument("--model", help="model name (entrobust list models)")
    src.add_argument("--epochs", type=int, help="number of epochs")
    src.add_argument("--batch-size", type=int, dest="batch_size", help="training batch size")
    src.add_argument("--lr", type=float, help="base learning rate")
    src.add_argument("--seed", type=int, help="random seed")
    src.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override any config key, e.g. --set optimizer.kwargs.L=5 (repeatable; TOML values)",
    )
    run_g = p.add_argument_group("how to run")
    run_g.add_argument("--out", metavar="DIR", help="output directory (default: runs/<preset>-<dataset>)")
    run_g.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    run_g.add_argument(
        "--overwrite",
        action="store_true",
        help="train into a non-empty --out that holds another run or other files, replacing its run files",
    )
    run_g.add_argument("--device", help="auto, cpu, cuda[:N] or mps")
    run_g.add_argument("--threads", type=int, help="CPU threads for torch")
    run_g.add_argument("--data-root", dest="data_root", help="where dataset files live")
    run_g.add_argument("--no-progress", action="store_true", help="no progress bar")
    fast = p.add_argument_group("speed (see docs/performance.md; none changes the method)")
    fast.add_argument("--amp", choices=("off", "bf16"), help="bf16 autocast for forwards (losses stay fp32)")
    fast.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    fast.add_argument("--compile", action="store_true", help="torch.compile the training model")
    fast.add_argument(
        "--sync-batchnorm",
        action="store_true",
        help="under torchrun on CUDA: BatchNorm statistics over the global batch",
    )
    run_g.add_argument("--no-test", action="store_true", help="skip the test-set accuracy at the end")
    run_g.add_argument("--dry-run", action="store_true", help="print the resolved config (TOML) and exit")
    p.set_defaults(func=run)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


def resolve_config(args: argparse.Namespace) -> Any:
    """The :class:`TrainConfig` described by the command-line arguments, resolved by
    :func:`entrobust.training.resolve_config` (the resolver experiments use too)."""
    from entrobust.errors import ConfigError
    from entrobust.training.config import load_config
    from entrobust.training.presets import resolve_config as resolve

    if args.preset and args.config:
        raise ConfigError("give either --preset or --config, not both")
    base = None
    if args.resume and args.out and not (args.preset or args.config):
        cfg_path = Path(args.out) / "config.json"
        if not cfg_path.exists():
            raise ConfigError(
                f"nothing to resume: {args.out} holds no training run ({cfg_path.name} not found); to start "
                f"one there run: entrobust train --preset NAME (or --config FILE) --out {args.out}"
            )
        base = load_config(cfg_path)
    elif args.config:
        base = load_config(args.config)
    changes: dict[str, Any] = {k: getattr(args, k) for k in ("dataset", "model") if getattr(args, k, None)}
    for key in ("epochs", "batch_size", "seed", "device", "threads", "data_root"):
        value = getattr(args, key, None)
        if value is not None:
            changes[key] = value
    if args.lr is not None:
        changes["optimizer.lr"] = args.lr
    if getattr(args, "amp", None):
        changes["accel.amp"] = args.amp
    if getattr(args, "channels_last", False):
        changes["accel.channels_last"] = True
    if getattr(args, "compile", False):
        changes["accel.compile"] = True
    if getattr(args, "sync_batchnorm", False):
        changes["sync_batchnorm"] = True
    return resolve(
        args.preset or None,
        base=base,
        dataset=args.dataset if args.preset else None,
        scale=args.scale if args.preset else None,
        layers=[("", changes), ("", list(args.overrides))],
    )


def _default_out(cfg: Any, name: str) -> Path:
    """``runs/<name>-<dataset>[-N]``: the first that a fresh run of ``cfg`` may use (missing, empty,
    or this config stopped before its first epoch; the same on every rank)."""
    from entrobust.errors import EntrobustError
    from entrobust.training.outdir import check_out_dir

    base = Path("runs") / f"{_slug(name)}-{_slug(cfg.dataset)}"
    out, n = base, 1
    while True:
        try:
            check_out_dir(out, cfg)
            return out
        except EntrobustError:
            n += 1
            out = base.with_name(f"{base.name}-{n}")


def run(args: argparse.Namespace) -> int:
    """Train; under ``torchrun`` every rank runs this and rank 0 prints and writes."""
    from entrobust import distributed

    cfg = resolve_config(args)
    if args.dry_run:
        sys.stdout.write(cfg.to_toml())
        return 0
    distributed.init(cfg.device)
    try:
        return _train(args, cfg, distributed.is_main())
    finally:
        distributed.shutdown()


def _train(args: argparse.Namespace, cfg: Any, main: bool) -> int:
    from entrobust import distributed
    from entrobust.data import load_dataset
    from entrobust.errors import ConfigError
    from entrobust.io import atomic_write_json
    from entrobust.training.trainer import Trainer, accuracy

    def say(line: str) -> None:
        if main:
            print(line, flush=True)

    if args.out:
        out = Path(args.out)
    elif args.resume:
        raise ConfigError("--resume needs --out DIR (the run to continue)")
    else:
        out = _default_out(cfg, args.preset or (Path(args.config).stem if args.config else "train"))
    label = args.preset or args.config or cfg.preset or "ce"
    out = distributed.broadcast_object(out)  # rank 0 picks the default folder for everyone
    world = distributed.world_size()
    ranks = f", {world} ranks, {cfg.batch_size // world} examples each per batch" if world > 1 else ""
    say(f"training {label} on {cfg.dataset} ({cfg.model}, {cfg.epochs} epochs{ranks}) -> {out}")
    trainer = Trainer(cfg, out, progress=False if args.no_progress else None, log=say)
    result = trainer.fit(resume=args.resume, overwrite=args.overwrite)
    if result.stopped_early:
        say(f"early stop after epoch {result.last['epoch'] if result.last else '?'}")
    if args.no_test or not main:
        return 0
    test = load_dataset(cfg.dataset, "test", root=cfg.data_root)
    last_acc = accuracy(result.model, test, device=trainer.device)
    summary: dict[str, Any] = {
        "test_clean_acc_last": last_acc,
        "last_epoch": result.last["epoch"] if result.last else None,
    }
    print(f"clean test accuracy: {100 * last_acc:.2f}% ({len(test)} examples, last epoch)")
    if result.best is not None and result.last is not None and result.best["epoch"] != result.last["epoch"]:
        from entrobust.checkpoint import load_checkpoint

        best_model, _ = load_checkpoint(out / "best", map_location=trainer.device)
        best_acc = accuracy(best_model, test, device=trainer.device)
        summary.update(test_clean_acc_best=best_acc, best_epoch=result.best["epoch"])
        print(
            f"clean test accuracy: {100 * best_acc:.2f}% "
            f"(best epoch {result.best['epoch']} by {trainer.selection_metric()})"
        )
    atomic_write_json(out / "test.json", summary)
    print(f"checkpoints: {out / 'last.safetensors'}, {out / 'best.safetensors'}")
    return 0
