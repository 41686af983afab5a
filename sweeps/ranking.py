"""How sure a ranking is: the winner's lead over the runner-up against the noise between seeds.

Every place that names a winner -- the end-of-sweep summary, the parent run in MLflow,
analysis/select.py and the report -- says in words whether the lead decides the ranking:

- with two or more seeds per dataset on both sides, the lead is *decided* when it exceeds ``Z``
  standard errors of the difference (sqrt(se_a² + se_b²), each the standard error of a score:
  ``score_se``); otherwise it is a near-tie, and the words say about how many seeds would
  decide a lead that size (standard errors shrink as 1/sqrt(seeds));
- with one seed the noise is not measured at all: the same quick sweep has given J = 2/4/8 =
  82.8/90.3/90.35 on one run and 86.3/87.0/92.8 on another, so a one-seed ranking is never
  called decided, and the words say to run seeds.

Scores are fractions (accuracies); the words use percent and points. Plain Python: the console,
the ledger and the analysis import it alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

Z = 2.0  # a lead is decided beyond about two standard errors of the difference (~95%)
SEEDS_TO_MEASURE = "--seeds 0,1,2"  # what to run when one seed leaves the noise unmeasured


@dataclass(frozen=True)
class Score:
    """One ranked config: its name as people read it (``J=8``), its score (a fraction), the
    score's standard error over seeds (NaN with one seed) and the seeds behind it (per dataset,
    the fewest)."""

    name: str
    mean: float
    se: float = math.nan
    seeds: int = 1


def score_se(dataset_ses: list[float]) -> float:
    """The standard error of a score that is the mean over D datasets of per-dataset means over
    seeds: sqrt(sum of the per-dataset squared standard errors) / D (datasets are independent);
    NaN when any dataset has fewer than two seeds."""
    if not dataset_ses or not all(math.isfinite(s) for s in dataset_ses):
        return math.nan
    return math.sqrt(sum(s * s for s in dataset_ses)) / len(dataset_ses)


@dataclass(frozen=True)
class Lead:
    """The winner's lead over the runner-up."""

    best: Score
    runner: Score

    @property
    def points(self) -> float:
        return 100 * (self.best.mean - self.runner.mean)

    @property
    def measured(self) -> bool:
        """Both scores have a standard error (two or more seeds each)."""
        return math.isfinite(self.best.se) and math.isfinite(self.runner.se)

    @property
    def se_points(self) -> float:
        """The standard error of the difference, in points."""
        return 100 * math.hypot(self.best.se, self.runner.se) if self.measured else math.nan

    @property
    def decided(self) -> bool:
        return self.measured and self.points > 0 and self.points > Z * self.se_points

    @property
    def seeds_needed(self) -> int | None:
        """About how many seeds per dataset would make a lead of this size decided (None: one
        seed, nothing measured; or no lead at all)."""
        if not self.measured or self.points <= 0:
            return None
        if self.decided:
            return min(self.best.seeds, self.runner.seeds)
        n = min(self.best.seeds, self.runner.seeds)
        return max(n + 1, math.ceil(n * (Z * self.se_points / self.points) ** 2))

    def words(self) -> str:
        """One sentence: the lead and whether it decides the ranking."""
        b, r, d = self.best.name, self.runner.name, self.points
        if d <= 0:
            return f"{b} and {r} tie at {100 * self.best.mean:.2f}%: the ranking between them is not decided"
        lead = f"{b} leads {r} by {d:.2f} points"
        if not self.measured:
            return (f"{lead} with one seed per dataset: not tested against the noise between seeds, which can "
                    f"exceed it; run more seeds ({SEEDS_TO_MEASURE}) to decide")
        n = min(self.best.seeds, self.runner.seeds)
        if self.decided:
            return f"{lead}, more than {Z:g} standard errors of the difference ({self.se_points:.2f} points, {n} seeds)"
        return (f"{lead}, within the noise ({Z:g} standard errors of the difference: {Z * self.se_points:.2f} points "
                f"over {n} seeds): a near-tie; about {self.seeds_needed} seeds would decide a lead this size")


def lead(scores: list[Score]) -> Lead | None:
    """The lead of the best of ``scores`` over the second best (None with fewer than two)."""
    ranked = sorted(scores, key=lambda s: -s.mean)
    return Lead(ranked[0], ranked[1]) if len(ranked) >= 2 else None


def percents(values: list[float], least: int = 1, most: int = 3) -> list[str]:
    """Fractions as percentages with the fewest decimals (``least`` to ``most``) that keep
    different values apart: 0.9035 and 0.903 print as 90.35% and 90.30%, not twice 90.3%."""
    digits = least
    while digits < most:
        shown = {}
        if all(shown.setdefault(f"{100 * v:.{digits}f}", v) == v for v in values):
            break
        digits += 1
    return [f"{100 * v:.{digits}f}%" for v in values]
