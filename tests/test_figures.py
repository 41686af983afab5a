"""sweeps/figures.py and the figures drawn with it, read as a person reads a draft's figure:
titles in words, the sweep (profile, budget, seeds) in the subtitle, J on a log2 axis, accuracy
axes that do not blow a one-point spread up to the full height, legends wherever lines differ,
error bands only where there are seeds to draw them from."""
from __future__ import annotations

import math

import pytest


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots()


@pytest.mark.parametrize("param, values, scale, ticks", [
    ("J", [2, 4, 8], "log", [2, 4, 8]),  # doublings evenly spaced, labelled as written
    ("J", [2, 4, 6, 8, 10, 12, 16, 20], "log", [2, 4, 6, 8, 10, 12, 16, 20]),
    ("sigma2", [0.001, 0.01, 0.1], "log", [0.001, 0.01, 0.1]),
    ("lambda_inv", [5, 25, 50], "linear", [5, 25, 50]),
])
def test_a_parameter_axis_has_its_scale_and_its_values_as_ticks(param, values, scale, ticks):
    from sweeps.figures import value_axis

    fig, ax = _figure()
    value_axis(ax, param, values, log=param == "sigma2")
    assert ax.get_xscale() == scale and list(ax.get_xticks()) == pytest.approx(ticks)
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"{v:g}" for v in ticks]
    if param == "J":
        assert ax.xaxis.get_transform().base == 2


@pytest.mark.parametrize("values", [[90.30, 90.35], [82.8, 90.3, 90.35], [0.5, 1.2], [99.5, 99.9], [20.0, 95.0]])
def test_an_accuracy_axis_spans_at_least_ten_points_and_stays_in_range(values):
    from sweeps.figures import MIN_PERCENT_SPAN, percent_axis

    fig, ax = _figure()
    percent_axis(ax, values)
    lo, hi = ax.get_ylim()
    assert hi - lo >= MIN_PERCENT_SPAN - 1e-9 and lo <= min(values) and hi >= max(values)
    assert lo >= 0 and hi <= 100


def _records(datasets, seeds, name="simvae_J-quick-20250101-120000-ab12"):
    from analysis.records import Records, SweepRecord, make_frame

    acc = {2: 0.806, 4: 0.866, 8: 0.868}
    runs = make_frame(({"run_id": f"r{J}{d}{s}", "parent_id": "p", "sweep": name, "trial_id": f"t{J}",
                        "method": "simvae", "dataset": d, "seed": s, "config_hash": f"h{J}", "status": "FINISHED",
                        "start_time": s},
                       {"J": J}, {"acc_mlp": acc[J] + 0.01 * s + (0.05 if d == "shapes" else 0)})
                      for J in acc for d in datasets for s in seeds)
    sweep = SweepRecord("p", name, 0, "FINISHED", {"datasets": ",".join(datasets), "seeds": ",".join(map(str, seeds)),
                                                   "params": {"J": "grid [2, 4, 8]"}, "fixed.epochs": 20},
                        "quick", "full budget")
    return Records("simvae_J", "memory", [sweep], runs)


@pytest.mark.parametrize("datasets, seeds, legend, bands", [
    (("digits",), (0,), ["Digits"], False),  # one dataset: it is the mean, no second line over it
    (("digits", "shapes"), (0,), ["Digits", "Shapes", "mean over datasets"], False),  # one seed: no band
    (("digits", "shapes"), (0, 1, 2), ["Digits", "Digits ± s.e.", "Shapes", "Shapes ± s.e.", "mean over datasets"],
     True),
])
def test_the_ablation_figure_reads_as_a_draft(datasets, seeds, legend, bands, tmp_path, monkeypatch):
    import analysis.ablation as ablation

    drawn = {}

    def keep(fig, stem, formats=("png", "pdf")):
        ax = fig.axes[0]
        drawn.update(title=fig._suptitle.get_text(), subtitle=ax.get_title(loc="left"), scale=ax.get_xscale(),
                     legend=sorted(t.get_text() for t in ax.get_legend().get_texts()), ylim=ax.get_ylim())
        return [stem.with_suffix(".png")]

    monkeypatch.setattr(ablation, "save", keep)
    ab = ablation.make_ablation(_records(datasets, seeds), "J", "acc_mlp", tmp_path)
    assert ab.figures[0].name == "ablation_simvae_J-quick-20250101-120000-ab12_J.png"  # the sweep's name
    assert drawn["title"] == "SimVAE: Acc-MP against J"
    subtitle = drawn["subtitle"].replace("\n", " ")
    assert "sweep simvae_J-quick-20250101-120000-ab12: profile quick, full budget" in subtitle
    assert f"{len(seeds)} seed" in subtitle and ("one seed: no error bands" in subtitle) is (not bands)
    assert drawn["scale"] == "log" and drawn["legend"] == sorted(legend)
    assert drawn["ylim"][1] - drawn["ylim"][0] >= 10


def test_learning_curves_have_a_legend_and_tell_outcomes_apart(tmp_path, monkeypatch):
    from sweeps import figures

    drawn = {}

    def keep(fig, stem, formats=("png",)):
        ax = fig.axes[0]
        drawn.update(legend=[t.get_text() for t in ax.get_legend().get_texts()],
                     styles={line.get_label(): line.get_linestyle() for line in ax.get_lines()},
                     last={line.get_label(): max(line.get_xdata()) for line in ax.get_lines()})
        return [stem.with_suffix(".png")]

    monkeypatch.setattr(figures, "save", keep)
    curves = {"a": [(e, 0.1 * e) for e in range(1, 9)], "b": [(e, 0.05 * e) for e in range(1, 5)]}
    figures.learning_curves(curves, {"a": "J=8", "b": "J=2"}, {"a": "completed", "b": "stopped_early"},
                            "SimVAE", "sweep x", tmp_path / "c", {"a": 8, "b": 2})
    assert drawn["legend"] == ["J=2 (stopped early)", "J=8"]
    assert drawn["styles"] == {"J=8": "-", "J=2 (stopped early)": "--"}
    assert drawn["last"] == {"J=8": 8, "J=2 (stopped early)": 4}  # every epoch reported, the last included
    assert not math.isnan(drawn["last"]["J=8"])
