"""How every figure of a sweep looks, and the one figure the sweep itself draws.

One house style for the figures a person puts in a draft -- the learning curves logged to a
sweep's parent run, and analysis/'s ablation, importance, history, style and report figures --
so that ours and the ones drawn from Optuna's studies read alike: a title in words (method and
parameter display names), a subtitle naming the sweep, its profile, budget and seeds, integer
epoch and trial axes, a log2 axis for J, accuracy axes that do not blow a one-point range up to
the full height, and a legend wherever lines differ.

matplotlib only (Agg); importing this module loads neither Ray nor Optuna.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

PARAM_LABELS = {"J": "J (augmented views per image)", "sigma2": "σ² of p(z|y)", "beta": "β", "gamma": "γ",
                "temperature": "temperature τ", "lr": "learning rate", "likelihood_scale": "likelihood scale 1/σ²ₓ",
                "momentum": "momentum m", "queue_size": "queue size K", "lambda_inv": "λ (invariance)",
                "mu_var": "μ (variance)", "prior": "prior p(y)", "method": "method"}
METRIC_LABELS = {"acc_mlp": "Acc-MP (%)", "acc_knn": "Acc-KNN (%)", "acc_linear": "linear-probe accuracy (%)",
                 "acc_knn_best": "Acc-KNN, best k (%)", "acc_gmm": "GMM clustering accuracy (%)",
                 "val_acc_knn": "validation kNN accuracy (%)", "recon_error": "reconstruction error (SSE / image)"}
METRIC_WORDS = {"acc_mlp": "Acc-MP", "acc_knn": "Acc-KNN", "acc_linear": "linear-probe accuracy",
                "acc_knn_best": "Acc-KNN (best k)", "acc_gmm": "GMM clustering accuracy",
                "val_acc_knn": "validation kNN accuracy", "recon_error": "reconstruction error"}
LOG2_PARAMS = frozenset({"J"})  # counts that double: 2, 4, 8 evenly spaced
MIN_PERCENT_SPAN = 10.0  # an accuracy axis spans at least this many points
STYLE = {
    "figure.facecolor": "white", "axes.facecolor": "white", "savefig.facecolor": "white",
    "font.size": 9.5, "axes.titlesize": 9, "axes.labelsize": 10, "figure.titlesize": 11.5,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linestyle": "-", "axes.spines.top": False,
    "axes.spines.right": False, "legend.frameon": False, "legend.fontsize": 8.5, "lines.linewidth": 1.6,
    "axes.titlelocation": "left", "axes.titlecolor": "0.3", "savefig.dpi": 150, "figure.dpi": 150,
}


def param_label(param: str) -> str:
    return PARAM_LABELS.get(param, param)


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def is_percent(metric: str) -> bool:
    return metric.startswith("acc_") or metric.startswith("val_acc")


def method_display(name: str) -> str:
    from models import METHODS

    cls = METHODS.get(name)
    return (cls.display if cls is not None else "") or name


def dataset_display(name: str) -> str:
    from trainables.datasets import DATASETS

    return getattr(DATASETS.get(name), "display", "") or name


def sweep_caption(name: str, profile: str, budget: str, datasets: Sequence[str], epochs: Any, seeds: int) -> str:
    """The sweep a figure or table shows, in one line: ``sweep simvae_J-quick-...: profile quick,
    full budget (Digits, Shapes; 20 epochs), 1 seed``."""
    where = ", ".join(dataset_display(d) for d in datasets)
    epochs = f"; {epochs} epochs" if epochs not in (None, "") else ""
    return f"sweep {name}: profile {profile}, {budget} ({where}{epochs}), {seeds} seed{'s' * (seeds != 1)}"


@contextlib.contextmanager
def house_style() -> Iterator[Any]:
    """matplotlib (Agg) in the house style for the block; yields pyplot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.style.context("default"), matplotlib.rc_context(STYLE):
        yield plt


def new_figure(plt, title: str, subtitle: str, size: tuple[float, float] = (6.6, 4.2), ncols: int = 1):
    """A figure with its title in words and a subtitle (the sweep); returns (fig, axes)."""
    import textwrap

    fig, axes = plt.subplots(1, ncols, figsize=size, layout="constrained", squeeze=False)
    fig.suptitle(title, x=0.02, ha="left", fontweight="bold")
    axes[0][0].set_title(textwrap.fill(subtitle, int(size[0] * 15)), fontsize=8)
    return fig, (axes[0][0] if ncols == 1 else list(axes[0]))


def save(fig, stem: Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """PNG and PDF (``formats``) beside each other; closes the figure; returns the paths."""
    import matplotlib.pyplot as plt

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(f".{f}") for f in formats]
    for p in paths:
        fig.savefig(p)
    plt.close(fig)
    return paths


def percent_axis(ax, values: Sequence[float], axis: str = "y", lo: float = 0.0, hi: float = 100.0) -> None:
    """An accuracy axis (values in percent) spanning at least MIN_PERCENT_SPAN points around the
    data, within [lo, hi] where the data allow, so that a one-point spread is not drawn as the
    figure's full height."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return
    a, b = min(finite), max(finite)
    pad = max((b - a) * 0.12, (MIN_PERCENT_SPAN - (b - a)) / 2, 0.5)
    low, high = a - pad, b + pad
    if low < lo:
        low, high = lo, max(high, lo + MIN_PERCENT_SPAN)
    if high > hi and b <= hi:
        low, high = min(low, hi - MIN_PERCENT_SPAN), hi
    (ax.set_ylim if axis == "y" else ax.set_xlim)(low, high)


def integer_axis(ax, axis: str = "x") -> None:
    """Whole-number ticks only (epochs, trials)."""
    from matplotlib.ticker import MaxNLocator

    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


def value_axis(ax, param: str, values: Sequence[Any], log: bool) -> None:
    """The x axis of a parameter: log2 for J (ticks at its values), log10 for scale parameters
    when ``log``; ticks at the values of a short grid, labelled as written."""
    from matplotlib.ticker import NullLocator, ScalarFormatter

    numeric = sorted({float(v) for v in values})
    if param in LOG2_PARAMS and numeric and min(numeric) > 0:
        ax.set_xscale("log", base=2)
        log = True
    elif log:
        ax.set_xscale("log")
    if len(numeric) <= 12:
        ax.set_xticks(numeric, [f"{v:g}" for v in numeric])
        ax.xaxis.set_minor_locator(NullLocator())
    elif log and param in LOG2_PARAMS:
        ax.xaxis.set_major_formatter(ScalarFormatter())


def learning_curves(curves: dict[str, list[tuple[int, float]]], labels: dict[str, str], outcomes: dict[str, str],
                    title: str, subtitle: str, stem: Path, colour_by: dict[str, float] | None = None,
                    formats: Sequence[str] = ("png",)) -> list[Path]:
    """Validation kNN accuracy (fractions) per epoch, one line per trial ({trial: [(epoch,
    value)]}), named by ``labels`` (its searched values), solid when the trial completed its
    budget, dashed when ASHA stopped it, dotted when it failed or did not finish; coloured along
    a colour map by ``colour_by`` (a single numeric parameter) or one colour each; with more
    than 16 trials the legend says what the line styles mean. Writes ``stem`` in ``formats``
    (the sweep's parent run, analysis/report.py, analysis/importance.py from an Optuna study);
    [] when there is no curve."""
    curves = {t: sorted(c) for t, c in curves.items() if c}
    if not curves:
        return []
    styles = {"completed": "-", "stopped_early": "--", "failed": ":", "unfinished": ":", "interrupted": ":"}
    order = sorted(curves, key=lambda t: (colour_by or {}).get(t, 0) if colour_by else labels.get(t, t))
    with house_style() as plt:
        import matplotlib

        if colour_by and len({colour_by[t] for t in order if t in colour_by}) > 1:
            vals = [colour_by[t] for t in order if t in colour_by]
            lo, hi = min(vals), max(vals)
            norm = (matplotlib.colors.LogNorm if lo > 0 and hi / lo >= 4 else matplotlib.colors.Normalize)(lo, hi)
            cmap = matplotlib.colormaps["viridis"]
            colour = {t: cmap(0.9 * norm(colour_by[t])) for t in order if t in colour_by}
        else:
            cmap = matplotlib.colormaps["tab10" if len(order) <= 10 else "tab20"]
            colour = {t: cmap(i % cmap.N) for i, t in enumerate(order)}
        fig, ax = new_figure(plt, title, subtitle, size=(7.2, 4.2))
        values = []
        many = len(order) > 16
        for t in order:
            epochs, ys = [e for e, _ in curves[t]], [100 * v for _, v in curves[t]]
            values += ys
            outcome = outcomes.get(t, "completed")
            label = labels.get(t, t) + ("" if outcome == "completed" else f" ({outcome.replace('_', ' ')})")
            ax.plot(epochs, ys, ls=styles.get(outcome, ":"), marker="." if len(epochs) <= 40 else None,
                    color=colour.get(t, "grey"), label=None if many else label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation kNN accuracy (%)\nmean over datasets and seeds")
        integer_axis(ax)
        percent_axis(ax, values)
        if many:
            from matplotlib.lines import Line2D

            ax.legend(handles=[Line2D([], [], color="black", ls=ls, label=o.replace("_", " "))
                               for o, ls in styles.items() if o in set(outcomes.values())])
        else:
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
        return save(fig, stem, formats)
