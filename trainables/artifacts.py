"""Files a person looks at after a run: the config, the metrics, a reconstruction grid and the
learning curve. Written by the standalone CLI (``--out``) and by sweeps as MLflow artifacts."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def reconstruction_grid(method, x: torch.Tensor, n: int = 8) -> torch.Tensor | None:
    """A (C, H', W') image: the first ``n`` test images (top row) above their reconstructions
    (bottom row); None when the method cannot reconstruct."""
    from torchvision.utils import make_grid

    x = x[:n]
    method.eval()
    rec = method.reconstruct(x)
    if rec is None:
        return None
    return make_grid(torch.cat([x, rec.to(x.dtype)]).float().cpu().clamp(0, 1), nrow=len(x), padding=1)


def save_reconstruction_grid(method, x: torch.Tensor, path: Path, n: int = 8) -> Path | None:
    from torchvision.utils import save_image

    grid = reconstruction_grid(method, x, n)
    if grid is None:
        return None
    save_image(grid, path)
    return path


def save_learning_curve(history: list[dict[str, Any]], path: Path, title: str = "",
                        eval_every: int = 1) -> Path | None:
    """Loss and validation kNN accuracy against epoch, two panels (validation only at the
    epochs where it was computed: 1, every ``eval_every``, and the last)."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax1.plot(epochs, [r["loss"] for r in history], marker=".")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss")
    last = epochs[-1]
    evaluated = [r for r in history if r["epoch"] in (1, last) or r["epoch"] % eval_every == 0]
    ax2.plot([r["epoch"] for r in evaluated], [r["val_acc_knn"] for r in evaluated], marker=".",
             color="tab:green")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation kNN accuracy")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_run_files(out: Path, method, splits, cfg: dict, history: list[dict], metrics: dict) -> list[Path]:
    """config.json, metrics.json, recon_grid.png and learning_curve.png under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str))
    written.append(out / "config.json")
    (out / "metrics.json").write_text(json.dumps(
        {k: v for k, v in metrics.items() if isinstance(v, (int, float, bool, str))}, indent=2, sort_keys=True))
    written.append(out / "metrics.json")
    p = save_reconstruction_grid(method, splits.test.x, out / "recon_grid.png")
    if p:
        written.append(p)
    p = save_learning_curve(history, out / "learning_curve.png", f"{cfg['method']} on {cfg['dataset']}",
                            eval_every=cfg.get("eval_every") or 1)
    if p:
        written.append(p)
    return written
