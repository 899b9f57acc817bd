"""One training loop for every method (STYLE rule 5): epochs of ``optimizer.step(closure)``.

Each closure call draws the **next minibatch**, (optionally) applies AWP, and lets the
:class:`~entrobust.training.method.Method` compute its loss and gradients (adversary, objective
and regularizer all live in the method). Plain optimizers call the closure once per step;
Entropy-SGD calls it ``L`` times, so its inner SGLD steps consume fresh batches and one epoch is
one pass over the data for every optimizer (Kanai et al. §4; the last outer step of an epoch
wraps around to the epoch's first batches when the batch count is not a multiple of ``L``).

The loop knows no adversary; the work around it is done by handlers
(:mod:`entrobust.training.handlers`): per batch :class:`~entrobust.training.handlers.EpsRamp`
and :func:`~entrobust.training.handlers.perturb_weights` (AWP); after each epoch the
:class:`~entrobust.training.handlers.Validator` (clean + PGD robust accuracy on a held-out split
carved from the training data — never the test set), the
:class:`~entrobust.training.handlers.BestTracker` (best epoch, early stopping) and the
:class:`~entrobust.training.checkpointing.Checkpointer`; then the log line and the callbacks.
The run folder:

``<out>/trainer_state.pt``
    everything needed to resume: model, optimizer (incl. Entropy-SGD / AWP state), RNG states,
    epoch, step, best metric, early-stopping counter, history. Written atomically with
    ``torch.save`` of plain containers and tensors only and read back with
    ``torch.load(weights_only=True)``, so loading never runs arbitrary pickled code.
``<out>/last.safetensors`` + ``last.json``, ``<out>/best.*``
    model checkpoints (:mod:`entrobust.checkpoint`) of the last epoch and of the best epoch by
    validation robust accuracy (Rice et al. 2020 early stopping).
``<out>/config.json``, ``config.toml``, ``history.json``
    the resolved config and the per-epoch metrics.
``<out>/commit.json``
    the manifest of the last committed checkpoint. An epoch's files (``last.*``, ``best.*``,
    ``trainer_state.pt``, ``history.json``) are committed as one unit: staged under hidden
    names, committed by one atomic replace of this manifest, then published
    (:mod:`entrobust.training.commit`). A resume first restores the folder to the last
    committed unit, so a crash at any instant costs at most the epoch in progress.

Resume (``train(cfg, out, resume=True)``) restores the model, optimizer, AWP, RNG states and the
epoch; the data order is a function of (seed, epoch) (:class:`~entrobust.data.BatchLoader`), so
an interrupted run — even by ``kill -9`` — continues to bit-identical weights on CPU. The learning
rate is a pure function of the epoch (:class:`~entrobust.training.config.ScheduleConfig`), so no
scheduler state is needed.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from entrobust import distributed
from entrobust.accel import autocast_factory
from entrobust.distributed import DistInfo
from entrobust.errors import ConfigError
from entrobust.progress import Progress, is_terminal
from entrobust.runtime import rng_state, set_rng_state
from entrobust.training.checkpointing import (
    RESUMABLE_CHANGES,
    STATE_FILE,
    STATE_FORMAT,
    STATE_VERSION,
    Checkpointer,
)
from entrobust.training.config import TrainConfig
from entrobust.training.handlers import BestTracker, EpsRamp, Validator, perturb_weights
from entrobust.training.method import Method
from entrobust.training.optim import AWP, closure_calls

__all__ = ["RESUMABLE_CHANGES", "STATE_FILE", "Callback", "TrainResult", "Trainer", "accuracy", "train"]


# ----------------------------------------------------------------------------------- callbacks


class Callback:
    """Hooks called by the trainer; override what you need (all are no-ops here).

    ``on_epoch_end(metrics)`` receives the epoch's metrics dict (the same row as in
    ``TrainResult.history``); a results store records it there.
    """

    def on_train_start(self, trainer: Trainer) -> None:
        """Before the first epoch (also after a resume)."""

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        """After each epoch's checkpoint is written."""

    def on_train_end(self, result: TrainResult) -> None:
        """After the last epoch."""


class _FunctionCallback(Callback):
    def __init__(self, fn: Callable[[dict[str, Any]], Any]) -> None:
        self.fn = fn

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        self.fn(metrics)


CallbackLike = Callback | Callable[[dict[str, Any]], Any]


def _as_callbacks(callbacks: Sequence[CallbackLike]) -> list[Callback]:
    out: list[Callback] = []
    for cb in callbacks:
        if isinstance(cb, Callback):
            out.append(cb)
        elif callable(cb):
            out.append(_FunctionCallback(cb))
        else:
            raise ConfigError(f"callback must be a Callback or a callable(metrics), got {type(cb).__name__}")
    return out


# ----------------------------------------------------------------------------------- results


@dataclass
class TrainResult:
    """What :func:`train` returns: per-epoch history, best/last metrics and file paths.

    ``best`` is the history row of the epoch with the highest validation robust accuracy (the
    last row when there is no validation split). ``model`` holds the **last** weights.
    """

    config: TrainConfig
    history: list[dict[str, Any]]
    best: dict[str, Any] | None
    last: dict[str, Any] | None
    model: nn.Module
    out_dir: Path | None = None
    best_path: Path | None = None
    last_path: Path | None = None
    state_path: Path | None = None
    stopped_early: bool = False
    resumed_from_epoch: int = 0
    extras: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------- helpers


@torch.no_grad()
def accuracy(
    model: nn.Module, data: Any, *, batch_size: int = 500, device: torch.device | str | None = None
) -> float:
    """Clean top-1 accuracy of ``model`` on a :class:`~entrobust.data.TensorData` (eval mode, restored)."""
    from entrobust.data import BatchLoader

    if len(data) == 0:
        return float("nan")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for x, y in BatchLoader(data, batch_size, device=dev):
            correct += int((model(x).argmax(1) == y).sum())
    finally:
        model.train(was_training)
    return correct / len(data)


def _mean(stats: dict[str, list[tuple[float, int]]]) -> dict[str, float]:
    out = {}
    for k, pairs in stats.items():
        n = sum(w for _, w in pairs)
        out[k] = sum(v * w for v, w in pairs) / n if n else float("nan")
    return out


def _gather_stats(stats: dict[str, list[tuple[float, int]]]) -> dict[str, list[tuple[float, int]]]:
    """Per-rank (value, count) pairs → one pair per key holding the sums over every rank, so
    :func:`_mean` gives the example-weighted mean over the global batches."""
    keys = sorted(stats)
    sums = [sum(v * w for v, w in stats[k]) for k in keys] + [sum(w for _, w in stats[k]) for k in keys]
    totals = distributed.reduce_sums(sums)
    n = len(keys)
    return {
        k: [(totals[i] / totals[n + i], int(totals[n + i]))] if totals[n + i] else []
        for i, k in enumerate(keys)
    }


class _Stream:
    """Endless batches of one epoch: after the last batch it starts the epoch's order again."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self._it: Iterator[tuple[Tensor, Tensor]] = iter(loader)
        self.wrapped = 0

    def __next__(self) -> tuple[Tensor, Tensor]:
        try:
            return next(self._it)
        except StopIteration:
            self.wrapped += 1
            self._it = iter(self.loader)
            return next(self._it)


# ----------------------------------------------------------------------------------- trainer


class Trainer:
    """Runs a :class:`TrainConfig`; see the module docstring.

    Args:
        config: the run's configuration.
        out_dir: where checkpoints, config and history go (``None``: nothing is written and
            resume is impossible).
        model: use this module instead of building ``config.model`` (any ``nn.Module`` mapping
            [0, 1] images to logits).
        train_data, val_data: use these :class:`~entrobust.data.TensorData` splits instead of
            loading ``config.dataset``.
        callbacks: :class:`Callback` objects or plain callables ``fn(metrics)`` (epoch end).
        progress: report each epoch on stderr (default: only when stderr is a terminal): a bar
            with ETA on a terminal, one line per epoch otherwise (:mod:`entrobust.progress`).
        log: function receiving one line per epoch (default: none).
    """

    def __init__(
        self,
        config: TrainConfig,
        out_dir: str | Path | None = None,
        *,
        model: nn.Module | None = None,
        train_data: Any = None,
        val_data: Any = None,
        callbacks: Sequence[CallbackLike] = (),
        progress: bool | None = None,
        log: Callable[[str], Any] | None = None,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.callbacks = _as_callbacks(callbacks)
        self.progress = is_terminal() if progress is None else progress
        self.log = log
        self._user_model = model
        self._train_data = train_data
        self._val_data = val_data
        self.model: nn.Module | None = None
        self.train_model: nn.Module | None = None
        self.dist = DistInfo()
        self.method: Method | None = None
        self.optimizer: Optimizer | None = None
        self.awp: AWP | None = None
        self.device: torch.device = torch.device("cpu")
        self.epoch = 0  # completed epochs
        self.step = 0  # closure calls (minibatches) so far
        self.history: list[dict[str, Any]] = []
        # handlers (see entrobust.training.handlers), built by setup() but the best-epoch tracker
        self.best = BestTracker(config.validation, adversarial=config.method.adversary.kind != "none")
        self.ramp: EpsRamp | None = None
        self.validator: Validator | None = None
        self.checkpointer: Checkpointer | None = None
        self._phase = 1
        self._resumed_from = 0
        self._resuming = False

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Seed, build data, model, method, optimizer and AWP (called by :meth:`fit`)."""
        from entrobust.data import BatchLoader, augmentation_for, load_dataset
        from entrobust.runtime import seed_everything, select_device, set_threads

        cfg = self.config
        set_threads(cfg.threads)
        self.dist = distributed.init(cfg.device)  # joins torchrun's process group; else a world of 1
        world, rank = self.dist.world_size, self.dist.rank
        if cfg.batch_size % world:
            raise ConfigError(
                f"batch_size {cfg.batch_size} is the global batch and must divide evenly over "
                f"{world} ranks; use a multiple of {world}"
            )
        seed_everything(cfg.seed)  # the same seed on every rank: see entrobust.distributed
        self.device = distributed.local_device(cfg.device) if world > 1 else select_device(cfg.device)
        v = cfg.validation
        if self._train_data is None:
            self._train_data = load_dataset(
                cfg.dataset, "train", root=cfg.data_root, val_size=v.size, seed=v.split_seed
            )
            if v.size > 0 and self._val_data is None:
                self._val_data = load_dataset(
                    cfg.dataset, "val", root=cfg.data_root, val_size=v.size, seed=v.split_seed
                )
        if cfg.max_train_examples is not None and cfg.max_train_examples < len(self._train_data):
            g = torch.Generator().manual_seed(cfg.seed)
            keep = torch.randperm(len(self._train_data), generator=g)[: cfg.max_train_examples]
            self._train_data = self._train_data.subset(torch.sort(keep).values)
        if len(self._train_data) == 0:
            raise ConfigError(f"dataset {cfg.dataset!r} has no training examples")
        self.model = self._build_model().to(self.device)
        self.train_model = self._parallel_model(self.model)
        self.method = Method(cfg.method)
        self.method.autocast = autocast_factory(self.device, cfg.accel.amp)
        self.ramp = EpsRamp(self.method, cfg.schedule)
        self.validator = Validator(cfg, self._val_data, self.dist, self.device)
        if self.out_dir is not None:
            self.checkpointer = Checkpointer(self.out_dir, cfg, self.dist)
        self._phase = cfg.optimizer.phase_at(0)
        self.optimizer = cfg.optimizer.build(self.model.parameters(), self._phase)
        self.awp = AWP(cfg.awp.gamma, warmup=cfg.awp.warmup, proxy_lr=cfg.awp.proxy_lr) if cfg.awp else None
        augment = augmentation_for(cfg.dataset, translate=cfg.translate) if cfg.augment else None
        self.loader = BatchLoader(
            self._train_data,
            cfg.batch_size // world,
            shuffle=True,
            seed=cfg.seed,
            augment=augment,
            device=self.device,
            num_replicas=world,
            rank=rank,
            channels_last=cfg.accel.channels_last,
        )

    def _parallel_model(self, model: nn.Module) -> nn.Module:
        """The module the training loss runs through: channels-last / compiled as configured,
        wrapped in ``DistributedDataParallel`` when there are several ranks. ``self.model`` stays
        the plain module (checkpoints, validation, AWP, attacks)."""
        from entrobust.accel import prepare_model

        cfg, world = self.config, self.dist.world_size
        if cfg.sync_batchnorm and world > 1:
            if self.device.type != "cuda":
                raise ConfigError(
                    "sync_batchnorm needs CUDA (torch's SyncBatchNorm has no CPU kernel); "
                    "on CPU each rank normalizes with its own shard's statistics"
                )
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            self.model = model
        run = prepare_model(model, cfg.accel)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            run = DistributedDataParallel(run, device_ids=ids)
        return run

    def _build_model(self) -> nn.Module:
        cfg = self.config
        if self._user_model is not None:
            model = self._user_model
        else:
            from entrobust.models import create_model

            model = create_model(cfg.model, dataset=cfg.dataset, **cfg.model_kwargs)
        if cfg.finetune_from:
            self._load_pretrained(model, cfg.finetune_from)
        return model

    @staticmethod
    def _load_pretrained(model: nn.Module, path: str) -> None:
        from entrobust.checkpoint import checkpoint_paths, load_checkpoint, load_foreign_weights

        p = Path(path)
        if p.suffix in (".pt", ".pth") or (
            p.suffix == ".safetensors" and not checkpoint_paths(p)[1].exists()
        ):
            # the model keeps its own normalization, as before (a plain module gets raw pixels);
            # fine-tuning raw-[0, 1] weights ("none") needs a config key, not there yet
            from entrobust.models import NormalizedModel

            keep = "dataset" if isinstance(model, NormalizedModel) else "none"
            load_foreign_weights(p, model, normalization=keep)
        else:
            load_checkpoint(p, model)

    # ------------------------------------------------------------------ loop
    def fit(self, resume: bool = False, *, overwrite: bool = False) -> TrainResult:
        """Train (or resume) to ``config.epochs``; return a :class:`TrainResult`.

        The output folder is checked first (:func:`entrobust.training.outdir.check_out_dir`) and
        nothing is written before the data, model, method and optimizer are built, so a bad folder
        or config leaves no files behind. ``overwrite`` allows replacing another run's files.
        """
        from entrobust.training.outdir import check_out_dir, remove_run_files

        cfg = self.config
        note = None
        if self.out_dir is not None:
            resume, note = check_out_dir(self.out_dir, cfg, resume=resume, overwrite=overwrite)
        self.setup()
        assert self.model is not None
        if resume:
            self._resume()
        main = self.dist.is_main
        if note and self.log is not None and main:
            self.log(note)
        if overwrite and main and self.out_dir is not None:
            remove_run_files(self.out_dir)
        callbacks = self.callbacks if main else []  # rank 0 logs, records and writes
        if self.checkpointer is not None:
            self.checkpointer.write_config(resuming=self._resuming)
        for cb in callbacks:
            cb.on_train_start(self)
        assert self.validator is not None
        while self.epoch < cfg.epochs and not self.best.stopped_early:
            metrics = self.run_epoch(self.epoch)
            self.epoch += 1
            self.history.append(metrics)
            improved = self.best.update(metrics, validated=self.validator.enabled)
            if self.checkpointer is not None:
                self.checkpointer.write(
                    epoch=self.epoch,
                    final=self.epoch >= cfg.epochs or self.best.stopped_early,
                    improved=improved,
                    metrics=metrics,
                    model=self.model,
                    history=self.history,
                    state=self._state,
                )
            if self.log is not None and main:
                self.log(self._format(metrics))
            for cb in callbacks:
                cb.on_epoch_end(dict(metrics))
        result = self._result()
        for cb in callbacks:
            cb.on_train_end(result)
        return result

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        """Train one (0-based) epoch and validate; return its metrics row."""
        cfg = self.config
        assert self.model is not None and self.optimizer is not None and self.train_model is not None
        assert self.ramp is not None and self.validator is not None
        model, awp, run_model, ramp = self.model, self.awp, self.train_model, self.ramp
        world, rank = self.dist.world_size, self.dist.rank
        phase = cfg.optimizer.phase_at(epoch)
        if phase != self._phase:
            self.optimizer = cfg.optimizer.build(model.parameters(), phase)
            self._phase = phase
        optimizer = self.optimizer
        lr = cfg.optimizer.base_lr(phase) * cfg.schedule.factor_at(epoch, cfg.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        self.loader.set_epoch(epoch)
        stream = _Stream(self.loader)
        calls = closure_calls(optimizer)
        n_steps = math.ceil(len(self.loader) / calls)
        awp_on = awp is not None and awp.active(epoch)
        inner_restore = calls > 1  # multi-closure optimizers: AWP around each gradient
        stats: dict[str, list[tuple[float, int]]] = {}
        run_model.train()
        start = time.perf_counter()

        n_batches = len(self.loader)
        first_step = self.step
        latest: list[tuple[Any, Tensor, int]] = []  # the latest closure's (method, batch, step)

        def closure() -> Tensor:
            x, y = next(stream)
            step = self.step
            self.step += 1
            use = ramp.method_at(epoch + (step - first_step + 1) / n_batches)
            latest[:] = [(use, x, step)]
            with distributed.batch_shard(world, rank):  # noise of the global batch, this rank's rows
                if awp_on:
                    assert awp is not None
                    use = perturb_weights(use, model, awp, x, y, step)
                optimizer.zero_grad(set_to_none=True)
                loss, batch_stats = use.backward(run_model, x, y, step)
            if awp_on and inner_restore:
                assert awp is not None
                awp.restore(model)
            n = int(y.shape[0])
            for k, v in {"loss": float(loss), **batch_stats}.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    stats.setdefault(k, []).append((float(v), n))
            return torch.tensor(float(loss))

        bar = None
        if self.progress and self.dist.is_main:
            bar = Progress("train", f"epoch {epoch + 1}/{cfg.epochs}", n_steps, unit="steps")
        try:
            for _ in range(n_steps):
                optimizer.step(closure)  # type: ignore[arg-type]  # closures may return tensors
                if awp_on and awp is not None and awp.perturbed:
                    awp.restore(model)
                if latest:  # bn_passes = "reference": the AWP script's clean logging forward
                    use, x_last, step_last = latest[0]
                    with distributed.batch_shard(world, rank):
                        use.after_step(run_model, x_last, step_last)
                if bar is not None:
                    loss_so_far = _mean({"loss": stats.get("loss", [])})["loss"]
                    bar.set_postfix(f"loss {loss_so_far:.4f}")
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
            if awp is not None and awp.perturbed:
                awp.restore(model)
        train_time = time.perf_counter() - start
        means = _mean(_gather_stats(stats))
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": lr,
            "optimizer": cfg.optimizer.phase_name(self._phase),
            "awp": bool(awp_on),
            "train_loss": means.pop("loss", float("nan")),
            "train_clean_acc": means.pop("clean_acc", float("nan")),
            "train_robust_acc": means.pop("adv_acc", float("nan")),  # batch statistics
            **{f"train_{k}": v for k, v in means.items()},
            "train_time_s": train_time,
        }
        # absent, not NaN, when a statistic does not apply (e.g. no adversary): JSON has no NaN
        metrics = {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}
        if self.validator.due(epoch):
            metrics.update(self.validate())
        return metrics

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict[str, Any]:
        """Clean and robust accuracy on the validation split (:class:`Validator`; mode restored)."""
        assert self.model is not None and self.validator is not None, "call setup() first"
        return self.validator(self.model)

    # ------------------------------------------------------------------ best / checkpoints
    def selection_metric(self) -> str:
        """History key that picks the best epoch (``validation.metric``, resolved)."""
        return self.best.metric()

    def _state(self) -> dict[str, Any]:
        assert self.model is not None and self.optimizer is not None
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "config": json.dumps(self.config.to_dict()),
            "epoch": self.epoch,
            "step": self.step,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "optimizer_phase": self._phase,
            "awp": self.awp.state_dict() if self.awp is not None else None,
            "rng": rng_state(),
            **self.best.state_dict(),
            "history": json.dumps(self.history),
        }

    def _resume(self) -> None:
        if self.out_dir is None:
            raise ConfigError("resume needs an output directory")
        self._resuming = True
        assert self.checkpointer is not None and self.model is not None
        state = self.checkpointer.load_state()
        self.model.load_state_dict(state["model"])
        self._phase = int(state["optimizer_phase"])
        self.optimizer = self.config.optimizer.build(self.model.parameters(), self._phase)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.awp is not None and state.get("awp") is not None:
            self.awp.load_state_dict(state["awp"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.best.load_state_dict(state)
        self.history = json.loads(state["history"])
        set_rng_state(state["rng"])
        self._resumed_from = self.epoch

    # ------------------------------------------------------------------ result
    def _result(self) -> TrainResult:
        assert self.model is not None
        best = None
        if self.best.best_epoch is not None:
            best = next((h for h in self.history if h["epoch"] == self.best.best_epoch), None)
        out = self.out_dir
        return TrainResult(
            config=self.config,
            history=list(self.history),
            best=best,
            last=self.history[-1] if self.history else None,
            model=self.model,
            out_dir=out,
            best_path=(out / "best.safetensors") if out is not None and best is not None else None,
            last_path=(out / "last.safetensors") if out is not None and self.history else None,
            state_path=(out / STATE_FILE) if out is not None and self.history else None,
            stopped_early=self.best.stopped_early,
            resumed_from_epoch=self._resumed_from,
        )

    @staticmethod
    def _format(m: dict[str, Any]) -> str:
        parts = [f"epoch {m['epoch']}", f"lr {m['lr']:.4g}", f"loss {m['train_loss']:.4f}"]
        for key, label in (
            ("train_clean_acc", "train clean"),
            ("train_robust_acc", "train robust"),
            ("val_clean_acc", "val clean"),
            ("val_robust_acc", "val robust"),
        ):
            value = m.get(key)
            if isinstance(value, float) and not math.isnan(value):
                parts.append(f"{label} {100 * value:.2f}%")
        parts.append(f"{m.get('train_time_s', 0.0):.1f}s")
        return " | ".join(parts)


def train(
    config: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[CallbackLike] = (),
    model: nn.Module | None = None,
    progress: bool | None = None,
    log: Callable[[str], Any] | None = None,
) -> TrainResult:
    """Train ``config`` into ``out_dir`` (or resume it); see :class:`Trainer` and :meth:`Trainer.fit`."""
    trainer = Trainer(config, out_dir, model=model, callbacks=callbacks, progress=progress, log=log)
    return trainer.fit(resume=resume, overwrite=overwrite)
