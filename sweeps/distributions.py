"""Search-space distributions: plain data, no Ray and no Optuna import.

Each distribution knows the points the sweep validates before it starts (``first`` /
``corners``), a line of ``--show`` (``describe``), a record in ``sweep.json`` (``to_dict`` /
``dist_from_dict``) and how to draw itself from an Optuna trial it is handed (``suggest``, for
the define-by-run space of sweeps/search.py). ``Grid`` values become Tune's grid search in
``sweeps.search.param_space``: Ray stays in the modules that run the sweep.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


class _Dist:
    """What every distribution answers (the defaults suit the plain ones)."""

    def resolve(self, drawn: dict[str, Any]) -> "_Dist":
        """The distribution in force given the values drawn so far (a Switch picks its case)."""
        return self

    def first(self, drawn: dict[str, Any]) -> Any:
        """A value to validate the space with (its first corner)."""
        return self.corners()[0]

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, **asdict(self)}


@dataclass(frozen=True)
class LogUniform(_Dist):
    """Continuous, uniform in log space on [low, high]."""

    low: float
    high: float

    def corners(self) -> list:
        return [self.low, self.high]

    def check(self) -> str | None:
        if not (0 < self.low < self.high and math.isfinite(self.high)):
            return f"log-uniform bounds must satisfy 0 < low < high (got {self.low}, {self.high})"
        return None

    def describe(self) -> str:
        return f"log-uniform [{self.low:g}, {self.high:g}]"

    def suggest(self, trial, name: str, drawn: dict[str, Any]) -> Any:
        return trial.suggest_float(name, self.low, self.high, log=True)


@dataclass(frozen=True)
class Uniform(_Dist):
    """Continuous, uniform on [low, high]."""

    low: float
    high: float

    def corners(self) -> list:
        return [self.low, self.high]

    def check(self) -> str | None:
        if not (self.low < self.high and math.isfinite(self.low) and math.isfinite(self.high)):
            return f"uniform bounds must satisfy low < high (got {self.low}, {self.high})"
        return None

    def describe(self) -> str:
        return f"uniform [{self.low:g}, {self.high:g}]"

    def suggest(self, trial, name: str, drawn: dict[str, Any]) -> Any:
        return trial.suggest_float(name, self.low, self.high)


@dataclass(frozen=True)
class IntUniform(_Dist):
    """Integer in [low, high] (inclusive), optionally log-spaced."""

    low: int
    high: int
    log: bool = False

    def corners(self) -> list:
        return [self.low, self.high]

    def check(self) -> str | None:
        if not self.low < self.high or (self.log and self.low < 1):
            return f"integer bounds must satisfy {'1 <= ' if self.log else ''}low < high (got {self.low}, {self.high})"
        return None

    def describe(self) -> str:
        return f"integer{' log' if self.log else ''} [{self.low}, {self.high}]"

    def suggest(self, trial, name: str, drawn: dict[str, Any]) -> Any:
        return trial.suggest_int(name, self.low, self.high, log=self.log)


@dataclass(frozen=True)
class Categorical(_Dist):
    """One of ``choices``."""

    choices: tuple

    def corners(self) -> list:
        return list(self.choices)

    def check(self) -> str | None:
        return None if len(self.choices) >= 1 else "categorical needs at least one choice"

    def describe(self) -> str:
        return f"one of {list(self.choices)}"

    def suggest(self, trial, name: str, drawn: dict[str, Any]) -> Any:
        return trial.suggest_categorical(name, list(self.choices))


@dataclass(frozen=True)
class Same(_Dist):
    """Tied: takes the value sampled for ``key`` (e.g. VICReg's mu = lambda)."""

    key: str

    def corners(self) -> list:
        return []

    def first(self, drawn: dict[str, Any]) -> Any:
        return drawn[self.key]

    def check(self) -> str | None:
        return None

    def describe(self) -> str:
        return f"same as {self.key}"

    def suggest(self, trial, name: str, drawn: dict[str, Any]) -> Any:
        return drawn[self.key]


@dataclass(frozen=True)
class Switch(_Dist):
    """Conditional: the distribution of this key depends on the value drawn for ``on``
    (``cases`` maps that value to a distribution). Drawn by define-by-run after ``on``."""

    on: str
    cases: tuple[tuple[Any, Any], ...]  # ((value of `on`, distribution), ...)

    def resolve(self, drawn: dict[str, Any]) -> _Dist:
        return dict(self.cases).get(drawn.get(self.on), self.cases[0][1]).resolve(drawn)

    def first(self, drawn: dict[str, Any]) -> Any:
        return self.resolve(drawn).first(drawn)

    def corners(self) -> list:
        return [c for _, d in self.cases for c in d.corners()]

    def check(self) -> str | None:
        return None if self.cases else "a switch needs at least one case"

    def describe(self) -> str:
        return "; ".join(f"if {self.on}={v!r}: {d.describe()}" for v, d in self.cases)

    def suggest(self, trial, name: str, drawn: dict[str, Any]) -> Any:
        return self.resolve(drawn).suggest(trial, name, drawn)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "Switch", "on": self.on, "cases": [[v, d.to_dict()] for v, d in self.cases]}


@dataclass(frozen=True)
class Grid(_Dist):
    """Every value, each its own trial (Tune's grid search)."""

    values: tuple

    def corners(self) -> list:
        return list(self.values)

    def check(self) -> str | None:
        return None if len(self.values) >= 1 else "a grid needs at least one value"

    def describe(self) -> str:
        return f"grid {list(self.values)}"


Dist = LogUniform | Uniform | IntUniform | Categorical | Same | Switch | Grid
_TYPES = {cls.__name__: cls for cls in (LogUniform, Uniform, IntUniform, Categorical, Same, Switch, Grid)}


def dist_from_dict(d: dict[str, Any]) -> Dist:
    """The inverse of ``to_dict`` (sweep.json stores the expanded plan)."""
    d = dict(d)
    cls = _TYPES[d.pop("type")]
    if cls is Switch:
        return Switch(d["on"], tuple((v, dist_from_dict(c)) for v, c in d["cases"]))
    for key in ("choices", "values"):
        if key in d:
            d[key] = tuple(d[key])
    return cls(**d)
