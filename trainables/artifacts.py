"""Files a person looks at after a run: the config, the metrics, a reconstruction grid and the
learning curve, each written whole or not at all. Written by the standalone CLI (``--out``) and
by sweeps as MLflow artifacts."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from trainables.recording import write_atomic, write_text_atomic


def reconstruction_grid(method, x: torch.Tensor, n: int = 8) -> torch.Tensor | None:
    """A (2, n, C, H, W) tensor in [0, 1]: the first ``n`` test images and their reconstructions;
    None when the method cannot reconstruct."""
    x = x[:n]
    method.eval()
    with torch.no_grad():
        rec = method.reconstruct(x)
    if rec is None:
        return None
    return torch.stack([x.float(), rec.to(x.dtype).float()]).cpu().clamp(0, 1)


def save_reconstruction_grid(method, x: torch.Tensor, path: Path, n: int = 8, title: str = "",
                             cell_px: int = 112) -> Path | None:
    """Originals (top row) above their reconstructions (bottom row), labelled, each image
    upscaled with nearest-neighbour interpolation to about ``cell_px`` pixels (a 28x28 digit
    becomes 112x112: the pixels a probe sees, not a blur)."""
    grid = reconstruction_grid(method, x, n)
    if grid is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = grid.shape[0], grid.shape[1]
    dpi = 100
    cell = cell_px / dpi
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 + cols * cell, 0.5 + rows * cell), dpi=dpi, squeeze=False)
    grey = grid.shape[2] == 1
    for r, label in enumerate(("original", "reconstruction")):
        for c in range(cols):
            ax = axes[r][c]
            img = grid[r, c]
            img = img[0].numpy() if grey else img.permute(1, 2, 0).numpy()
            ax.imshow(img, cmap="gray" if grey else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        axes[r][0].set_ylabel(label, fontsize=10, rotation=90, labelpad=6)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=1.0 / (1.3 + cols * cell), right=0.995, bottom=0.02,
                        top=1 - 0.45 / (0.5 + rows * cell), wspace=0.04, hspace=0.04)
    save_figure(fig, path, dpi=dpi)
    return path


def save_learning_curve(history: list[dict[str, Any]], path: Path, title: str = "",
                        eval_every: int = 1) -> Path | None:
    """Loss and validation kNN accuracy against epoch, two panels (validation only at the
    epochs where it was computed: 1, every ``eval_every``, and the last)."""
    if not history:
        return None
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax1.plot(epochs, [r["loss"] for r in history], marker=".")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss")
    last = epochs[-1]
    evaluated = [r for r in history if r["epoch"] in (1, last) or r["epoch"] % eval_every == 0]
    ax2.plot([r["epoch"] for r in evaluated], [100 * r["val_acc_knn"] for r in evaluated], marker=".",
             color="tab:green")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation kNN accuracy (%)")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return path


def save_figure(fig, path: Path, **kwargs) -> None:
    """Save and close a matplotlib figure, written whole or not at all (its format from the
    file's suffix)."""
    import matplotlib.pyplot as plt

    try:
        write_atomic(Path(path), lambda tmp: fig.savefig(tmp, format=Path(path).suffix.lstrip("."), **kwargs))
    finally:
        plt.close(fig)


def write_run_files(out: Path, method, splits, cfg: dict, history: list[dict], metrics: dict) -> list[Path]:
    """config.json, metrics.json, recon_grid.png and learning_curve.png under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    write_text_atomic(out / "config.json", json.dumps(cfg, indent=2, sort_keys=True, default=str))
    written.append(out / "config.json")
    write_text_atomic(out / "metrics.json", json.dumps(
        {k: v for k, v in metrics.items() if isinstance(v, (int, float, bool, str))}, indent=2, sort_keys=True))
    written.append(out / "metrics.json")
    p = save_reconstruction_grid(method, splits.test.x, out / "recon_grid.png",
                                 title=f"{cfg['method']} on {cfg['dataset']}: test images and reconstructions")
    if p:
        written.append(p)
    p = save_learning_curve(history, out / "learning_curve.png", f"{cfg['method']} on {cfg['dataset']}",
                            eval_every=cfg.get("eval_every") or 1)
    if p:
        written.append(p)
    return written
