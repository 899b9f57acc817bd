"""The trainer's handlers: what happens around the loop, one small object per concern.

:class:`~entrobust.training.trainer.Trainer` runs epochs of ``optimizer.step(closure)`` and calls
these, in this order (the pattern of PyTorch-Ignite's engine and event handlers,
``ignite/engine/__init__.py``; AWP as ``csdongxian/AWP`` AT_AWP/utils_awp.py):

* per batch — :class:`EpsRamp` picks the method at the ramped ε, :func:`perturb_weights` applies
  AWP to it;
* per epoch — :class:`Validator` measures clean and robust accuracy on the held-out split,
  :class:`BestTracker` picks the best epoch and stops early, the
  :class:`~entrobust.training.checkpointing.Checkpointer` writes the epoch's files.

None of them knows an adversary: what depends on one (how ε scales, whether examples can be
replayed under AWP) is the :class:`~entrobust.training.method.Method`'s business.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn

from entrobust import distributed
from entrobust.accel import autocast
from entrobust.distributed import DistInfo
from entrobust.training.config import ScheduleConfig, TrainConfig, ValidationConfig
from entrobust.training.method import Method
from entrobust.training.optim import AWP

__all__ = ["BestTracker", "EpsRamp", "Validator", "perturb_weights"]


# ----------------------------------------------------------------------------------- per batch
class EpsRamp:
    """The method at the ramped ε (``schedule.eps_warmup_epochs``), one cached copy per factor."""

    def __init__(self, method: Method, schedule: ScheduleConfig) -> None:
        self.method = method
        self.schedule = schedule
        self._ramped: dict[float, Method] = {}

    def method_at(self, progress: float) -> Method:
        """The method to train with ``progress`` epochs into the run (:meth:`Method.scaled`)."""
        factor = self.schedule.eps_factor(progress)
        if factor >= 1.0 or self.method.adversary is None:
            return self.method
        cached = self._ramped.get(factor)
        if cached is None:
            cached = self._ramped[factor] = self.method.scaled(factor)
        return cached


def perturb_weights(method: Method, model: nn.Module, awp: AWP, x: Tensor, y: Tensor, step: int) -> Method:
    """Apply AWP for this batch; return the method to train with at the perturbed weights.

    The proxy ascends the loss of :meth:`Method.replaying` (the examples crafted once at the
    unperturbed weights, where the adversary allows it); that same method trains the batch.
    """
    chosen = method.replaying(model, x, y, step)

    def loss_fn(proxy: nn.Module) -> Tensor:
        with chosen.autocast():
            loss, _ = chosen.loss(proxy, x, y, step)
        return loss

    awp.perturb(model, loss_fn)
    return chosen


# ----------------------------------------------------------------------------------- per epoch
class Validator:
    """Clean and robust accuracy on the validation split (never the test set).

    Robust accuracy uses ``validation.attack`` in the method's training threat model, or the
    dataset's (:func:`entrobust.data.default_threat`) for methods without an adversary; the
    ``validation`` section overrides either. Under data parallelism the batches go round-robin
    over the ranks and the counts are summed, so every rank gets a single process's numbers.
    """

    def __init__(self, config: TrainConfig, data: Any, dist: DistInfo, device: torch.device) -> None:
        self.config = config
        self.data = data
        self.dist = dist
        self.device = device

    @property
    def enabled(self) -> bool:
        """Whether there is a validation split."""
        return self.data is not None and len(self.data) > 0

    def due(self, epoch: int) -> bool:
        """Whether (0-based) ``epoch`` validates: every ``validation.every`` epochs and the last."""
        cfg = self.config
        return self.enabled and (epoch + 1 == cfg.epochs or (epoch + 1) % cfg.validation.every == 0)

    def threat(self) -> tuple[str, float]:
        """``(norm, ε)`` of the robust accuracy."""
        from entrobust.data.info import default_threat

        v, adv = self.config.validation, self.config.method.adversary
        if adv.kind != "none":
            norm, eps = adv.norm, float(adv.eps)
        else:
            norm, eps = default_threat(self.config.dataset)
        return (v.norm or norm), (v.eps if v.eps is not None else eps)

    def __call__(self, model: nn.Module) -> dict[str, Any]:
        """``val_clean_acc``, ``val_robust_acc``, ``val_attack``, ``val_time_s`` (mode restored)."""
        from entrobust.attacks import ThreatModel, build_attack
        from entrobust.data import BatchLoader
        from entrobust.evaluation.robust import correct

        cfg, v, data = self.config, self.config.validation, self.data
        norm, eps = self.threat()
        kwargs: dict[str, Any] = {"steps": v.steps, "seed": cfg.seed}
        if v.step_size is not None:
            kwargs["step_size"] = v.step_size
        attack = build_attack(v.attack, ThreatModel(norm, eps), **kwargs)
        was_training = model.training
        model.eval()
        clean = robust = attacked = 0
        limit = v.robust_examples if v.robust_examples is not None else len(data)
        world, rank = self.dist.world_size, self.dist.rank
        start = time.perf_counter()
        try:
            # batches round-robin over ranks; a seeded attack gives each example the same result
            # in any batch, so the counts equal a single process's
            for b, (x, y) in enumerate(BatchLoader(data, v.batch_size, device=self.device)):
                take = min(max(0, limit - b * v.batch_size), int(y.shape[0]))
                if b % world != rank:
                    continue
                with autocast(self.device, cfg.accel.amp):
                    clean += int(correct(model, x, y).sum())
                    if take > 0:
                        xa = attack(model, x[:take], y[:take])
                        robust += int(correct(model, xa, y[:take]).sum())
                        attacked += take
        finally:
            model.train(was_training)
        clean, robust, attacked = (round(c) for c in distributed.reduce_sums([clean, robust, attacked]))
        out: dict[str, Any] = {"val_clean_acc": clean / len(data)}
        if attacked:
            out["val_robust_acc"] = robust / attacked
            out["val_attack"] = f"{v.attack}-{v.steps} {norm} eps={eps:.4g}"
        out["val_time_s"] = time.perf_counter() - start
        return out


class BestTracker:
    """The best epoch by the validation metric, and early stopping (Rice et al. 2020).

    Without a validation split the best epoch is the last. ``patience`` validations without
    improvement set :attr:`stopped_early` (and ``early_stop`` in that epoch's metrics).
    """

    def __init__(self, validation: ValidationConfig, adversarial: bool) -> None:
        self.validation = validation
        self.adversarial = adversarial
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.bad_validations = 0
        self.stopped_early = False

    def metric(self) -> str:
        """History key that picks the best epoch (``validation.metric``, resolved)."""
        metric = self.validation.metric
        if metric == "auto":
            metric = "robust" if self.adversarial else "clean"
        return f"val_{metric}_acc"

    def update(self, metrics: dict[str, Any], validated: bool) -> bool:
        """Record an epoch's ``metrics``; return whether it is the new best. ``validated``: the run
        has a validation split (so an epoch without the metric was just not validated)."""
        value = metrics.get(self.metric())
        if value is None:
            if not validated:
                self.best_epoch = metrics["epoch"]  # no validation split: best = last
                return True
            return False  # not validated this epoch
        if self.best_metric is None or value > self.best_metric:
            self.best_metric, self.best_epoch = float(value), int(metrics["epoch"])
            self.bad_validations = 0
            return True
        self.bad_validations += 1
        patience = self.validation.patience
        if patience is not None and self.bad_validations >= patience:
            self.stopped_early = True
            metrics["early_stop"] = True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "bad_validations": self.bad_validations,
            "stopped_early": self.stopped_early,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_metric = state["best_metric"]
        self.best_epoch = state["best_epoch"]
        self.bad_validations = int(state["bad_validations"])
        self.stopped_early = bool(state["stopped_early"])
