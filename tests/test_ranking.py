"""sweeps/ranking.py: a winner's lead against the noise between seeds, in words; and the
places that name a winner -- the end-of-sweep summary, the parent run -- saying so."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from sweeps.ranking import Lead, Score, lead, percents, score_se

NAN = math.nan


@pytest.mark.parametrize("best, runner, decided, needed, words", [
    # one seed: never decided, whatever the lead -- the noise between seeds is not measured
    (Score("J=8", 0.9035), Score("J=4", 0.9030), False, None,
     "J=8 leads J=4 by 0.05 points with one seed per dataset: not tested against the noise between seeds"),
    (Score("J=8", 0.90), Score("J=2", 0.60), False, None, "J=8 leads J=2 by 30.00 points with one seed per dataset"),
    # three seeds, a lead inside two standard errors of the difference: a near-tie, and the seeds
    # that would decide it: 3 * (2 * hypot(0.5, 0.5) / 0.4)² = 37.5 -> 38
    (Score("J=8", 0.904, 0.005, 3), Score("J=4", 0.900, 0.005, 3), False, 38,
     "J=8 leads J=4 by 0.40 points, within the noise (2 standard errors of the difference: 1.41 points over 3 "
     "seeds): a near-tie; about 38 seeds would decide a lead this size"),
    # three seeds, a lead well outside the noise
    (Score("J=8", 0.93, 0.004, 3), Score("J=4", 0.90, 0.003, 3), True, 3,
     "J=8 leads J=4 by 3.00 points, more than 2 standard errors of the difference (0.50 points, 3 seeds)"),
    # a seed-less runner-up counts as unmeasured
    (Score("a", 0.93, 0.004, 3), Score("b", 0.90), False, None, "with one seed per dataset"),
    # equal scores: a tie, never decided
    (Score("J=8", 0.9, 0.01, 2), Score("J=4", 0.9, 0.01, 2), False, None, "J=8 and J=4 tie at 90.00%"),
])
def test_a_lead_is_decided_only_beyond_the_noise(best, runner, decided, needed, words):
    result = Lead(best, runner)
    assert result.decided is decided and result.seeds_needed == needed
    assert words in result.words()
    assert ("not decided" in result.words() or "near-tie" in result.words() or "not tested" in result.words()
            or "tie at" in result.words()) is (not decided)


def test_the_lead_is_the_best_over_the_second_best():
    scores = [Score("a", 0.5), Score("b", 0.9), Score("c", 0.8)]
    found = lead(scores)
    assert (found.best.name, found.runner.name) == ("b", "c") and found.points == pytest.approx(10.0)
    assert lead(scores[:1]) is None


def test_a_score_standard_error_combines_the_datasets():
    assert score_se([0.03, 0.04]) == pytest.approx(0.025)  # sqrt(0.03² + 0.04²) / 2
    assert math.isnan(score_se([0.03, NAN])) and math.isnan(score_se([]))


@pytest.mark.parametrize("values, shown", [
    ([0.9035, 0.9030, 0.8285], ["90.35%", "90.30%", "82.85%"]),  # one decimal would show 90.3% twice
    ([0.9, 0.8], ["90.0%", "80.0%"]),
    ([0.9, 0.9], ["90.0%", "90.0%"]),  # a true tie prints as one
    ([0.90001, 0.90002], ["90.001%", "90.002%"]),  # three decimals at most
])
def test_percentages_keep_different_scores_apart(values, shown):
    assert percents(values) == shown


def _rows(*scores):
    return [{"trial_id": f"t{i}", "status": "completed", "epochs": 20, "config/J": J, "acc_mlp_mean": v,
             "digits/acc_mlp": v, "shapes/acc_mlp": v, **({"acc_mlp_mean_se": se} if se else {})}
            for i, (J, v, se) in enumerate(scores)]


@pytest.mark.parametrize("rows, seeds, said", [
    (_rows((8, 0.9035, None), (4, 0.9030, None), (2, 0.8285, None)), (0,),
     ["ranking: J=8 90.35%, J=4 90.30%, J=2 82.85%", "not decided: J=8 leads J=4 by 0.05 points with one seed"]),
    (_rows((8, 0.904, 0.005), (4, 0.900, 0.005)), (0, 1, 2),
     ["not decided: J=8 leads J=4 by 0.40 points, within the noise", "about 38 seeds would decide"]),
    (_rows((8, 0.93, 0.004), (4, 0.90, 0.003)), (0, 1, 2), ["decided: J=8 leads J=4 by 3.00 points"]),
])
def test_the_summary_and_the_parent_run_say_whether_the_lead_decides(rows, seeds, said):
    from sweeps import console, mlflow_ui
    from sweeps.ledger import count_verdicts, winner_lead
    from sweeps.spaces import expand

    plan = expand("simvae_J", "quick", seeds=list(seeds))
    text = console.summary(plan, rows, 60.0, Path("/x"))
    flat = " ".join(line.strip() for line in text.splitlines())
    for phrase in said:
        assert phrase in flat, text
    assert all(len(line) <= console.WIDTH for line in text.splitlines())
    note = mlflow_ui.winner_line(rows[0], plan, count_verdicts(rows), winner_lead(rows, plan))
    sentence = next(s for s in said if "decided: " in s).split(": ", 1)[1]
    assert sentence in note and ("**Not decided**" in note) is said[-1].startswith(("not decided", "about"))
