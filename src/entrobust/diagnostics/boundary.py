"""Decision-boundary picture of a 2-class problem (ATENT, Jagatap et al. 2021, Fig. 1).

ATENT Fig. 1 shows a 3-layer MLP trained on MNIST 5 vs 8 with different defenses, drawn in a 2-D
t-SNE embedding. t-SNE has no inverse map, so its "regions" can only be interpolated from the
predictions at the data points. The default here is exact instead: PCA fitted on the images
gives a 2-D affine plane through the data mean; every grid point of that plane is mapped back to
image space (``inverse_transform``, clamped to [0, 1]) and classified by the model, so the colored
regions are the classifier's true decisions on that slice of input space. ``embedding="tsne"``
reproduces the paper's look, with regions from a nearest-neighbour vote over the points'
predicted classes (an interpolation, stated on the plot).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from entrobust.attacks.base import frozen
from entrobust.diagnostics._util import model_device, pyplot
from entrobust.errors import ConfigError


@dataclass
class BoundaryPicture:
    """Embedded points, their labels and predictions, and the predicted class on a grid [iy, ix]."""

    method: str
    points: np.ndarray  # (N, 2)
    labels: np.ndarray  # (N,) dataset labels
    predictions: np.ndarray  # (N,) predicted dataset labels
    grid_x: np.ndarray
    grid_y: np.ndarray
    grid_pred: np.ndarray  # (len(grid_y), len(grid_x)) predicted dataset labels
    classes: list[int]
    explained_variance: list[float] | None = None

    @property
    def accuracy(self) -> float:
        return float((self.labels == self.predictions).mean()) if self.labels.size else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "classes": self.classes,
            "accuracy": self.accuracy,
            "explained_variance": self.explained_variance,
            "points": self.points.tolist(),
            "labels": self.labels.tolist(),
            "predictions": self.predictions.tolist(),
            "grid_x": self.grid_x.tolist(),
            "grid_y": self.grid_y.tolist(),
            "grid_pred": self.grid_pred.tolist(),
        }


def _predict(model: nn.Module, x: Tensor, classes: Sequence[int], batch_size: int) -> np.ndarray:
    """Predicted dataset labels restricted to ``classes`` (see :func:`decision_boundary`)."""
    dev = model_device(model)
    out = []
    with frozen(model, "eval"), torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            logits = model(x[i : i + batch_size].to(dev))
            c = logits.shape[1]
            if c == len(classes):
                idx = logits.argmax(1).cpu().numpy()
                out.append(np.asarray(classes)[idx])
            else:
                if max(classes) >= c:
                    raise ConfigError(f"classes {list(classes)} do not fit a model with {c} outputs")
                sub = logits[:, list(classes)]
                out.append(np.asarray(classes)[sub.argmax(1).cpu().numpy()])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def decision_boundary(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    classes: Sequence[int] | None = None,
    embedding: Literal["pca", "tsne"] = "pca",
    resolution: int = 150,
    pad: float = 0.1,
    max_points: int = 1000,
    batch_size: int = 500,
    seed: int = 0,
) -> BoundaryPicture:
    """Embed the examples of ``classes`` (default: the two labels present) in 2-D with the
    classifier's regions.

    ``classes`` are dataset labels. A model with exactly ``len(classes)`` outputs is read as
    output i ↔ ``classes[i]`` (e.g. an MLP trained on 5-vs-8 relabelled 0/1); a model with more
    outputs is restricted to the outputs indexed by ``classes`` (argmax among them).
    """
    if resolution < 2:
        raise ConfigError(f"resolution must be >= 2, got {resolution}")
    yn = y.detach().cpu().numpy()
    present = sorted({int(v) for v in yn})
    cls = list(classes) if classes is not None else present
    if len(cls) < 2:
        raise ConfigError(f"a decision-boundary picture needs at least 2 classes, got {cls}")
    keep = np.isin(yn, cls)
    if not keep.any():
        raise ConfigError(f"no examples of classes {cls} in the data")
    idx = np.nonzero(keep)[0][:max_points]
    xs, ys = x.detach().cpu()[idx].float(), yn[idx]
    if xs.dtype == torch.uint8:
        xs = xs.float() / 255
    flat = xs.reshape(xs.shape[0], -1).numpy().astype(np.float64)
    preds = _predict(model, xs, cls, batch_size)

    if embedding == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed).fit(flat)
        pts = pca.transform(flat)
        evr: list[float] | None = [float(v) for v in pca.explained_variance_ratio_]
    elif embedding == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (flat.shape[0] - 1) / 3)))
        pts = TSNE(n_components=2, random_state=seed, init="pca", perplexity=perplexity).fit_transform(flat)
        evr = None
    else:
        raise ConfigError(f"unknown embedding {embedding!r}; valid: pca, tsne")

    lo, hi = pts.min(0), pts.max(0)
    span = np.maximum(hi - lo, 1e-9)
    gx = np.linspace(lo[0] - pad * span[0], hi[0] + pad * span[0], resolution)
    gy = np.linspace(lo[1] - pad * span[1], hi[1] + pad * span[1], resolution)
    mx, my = np.meshgrid(gx, gy)
    grid = np.stack([mx.reshape(-1), my.reshape(-1)], axis=1)
    if embedding == "pca":
        imgs = pca.inverse_transform(grid).clip(0.0, 1.0)
        gt = torch.as_tensor(imgs, dtype=torch.float32).reshape(-1, *xs.shape[1:])
        gp = _predict(model, gt, cls, batch_size)
    else:
        from sklearn.neighbors import KNeighborsClassifier

        knn = KNeighborsClassifier(n_neighbors=min(5, pts.shape[0])).fit(pts, preds)
        gp = knn.predict(grid)
    return BoundaryPicture(
        method=embedding,
        points=pts,
        labels=ys,
        predictions=preds,
        grid_x=gx,
        grid_y=gy,
        grid_pred=gp.reshape(resolution, resolution),
        classes=[int(c) for c in cls],
        explained_variance=evr,
    )


def plot_boundary(pictures: dict[str, BoundaryPicture], path: str | Path) -> Path:
    """One panel per model: colored regions, points colored by true class, misclassified ringed."""
    if not pictures:
        raise ConfigError("plot_boundary needs at least one picture")
    plt = pyplot()
    from matplotlib.colors import ListedColormap

    n = len(pictures)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.4), dpi=110, squeeze=False)
    base = plt.get_cmap("tab10")
    for ax, (name, pic) in zip(axes[0], pictures.items(), strict=False):
        k = len(pic.classes)
        lookup = {c: i for i, c in enumerate(pic.classes)}
        region = np.vectorize(lookup.get)(pic.grid_pred)
        light = ListedColormap([tuple(0.55 + 0.45 * np.asarray(base(i % 10))[:3]) for i in range(k)])
        ax.pcolormesh(pic.grid_x, pic.grid_y, region, cmap=light, shading="auto", vmin=-0.5, vmax=k - 0.5)
        ax.contour(pic.grid_x, pic.grid_y, region, levels=np.arange(k - 1) + 0.5, colors="k", linewidths=0.8)
        for c in pic.classes:
            m = pic.labels == c
            ax.scatter(
                pic.points[m, 0], pic.points[m, 1], s=9, color=base(lookup[c] % 10), label=f"class {c}"
            )
        wrong = pic.labels != pic.predictions
        ax.scatter(
            pic.points[wrong, 0],
            pic.points[wrong, 1],
            s=30,
            facecolors="none",
            edgecolors="k",
            linewidths=0.8,
            label="misclassified",
        )
        axis = "PC" if pic.method == "pca" else "t-SNE "
        ax.set_xlabel(f"{axis}1")
        ax.set_ylabel(f"{axis}2")
        note = "" if pic.method == "pca" else " (regions: 5-NN of predictions)"
        ax.set_title(f"{name}: acc {pic.accuracy:.3f}{note}", fontsize=10)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("Decision regions in a 2-D embedding (ATENT Fig. 1)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
