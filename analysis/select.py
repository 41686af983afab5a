"""Select each method's config the paper's way: the best mean MLP-probe accuracy across datasets.

``python analysis/select.py --space simvae_J`` (or ``--all``): group a sweep's child runs by
config (``config_hash``: everything but dataset and seed), average the final ``acc_mlp`` over
seeds per dataset, then over datasets (every dataset weighs the same), and rank. Only runs that
trained the full budget are eligible (FINISHED and not stopped early by ASHA); a config missing a
dataset is listed as incomplete and never ranked. Ties (equal scores) are broken by the number of
runs behind the score (more first), then by config hash, and marked '='. Whether the winner's
lead over the runner-up decides the ranking -- beyond two standard errors of the difference, with
two or more seeds -- is said in words (sweeps/ranking.py), with the seeds that would decide a
near-tie. The winner per method is written to the selection file (default
<repo>/results/selection.yaml, read by the ``table1`` space), keeping other methods' entries,
unless it comes from an incomplete sweep or one run at a custom budget (--force); the ranking
goes to results/tables/selection_<sweep>.md.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from analysis.records import (CONFIG, AnalysisError, NoUsableSweep, Records, add_source_args, config_keys, config_of,
                              dedupe, load_from_args, main_guard, method_key, present,
                              paper_scores, results_dir, spaces_in_store)
from sweeps import ranking, schema
from sweeps.spaces import SPACES

TIE_TOL = 1e-12


@dataclass
class ConfigScore:
    """One config of one method: per-dataset means over seeds and the across-dataset score."""

    method: str
    config_hash: str
    config: dict[str, Any]  # the method's hyperparameters (what the selection file gets)
    means: dict[str, float]  # dataset -> mean over seeds
    seeds: dict[str, int]  # dataset -> seed runs behind the mean
    missing: list[str]  # datasets of the sweep this config has no eligible run on
    trial_ids: list[str]
    score: float | None = None  # mean over datasets; None when a dataset is missing
    se: float = math.nan  # the score's standard error over seeds (sweeps.ranking.score_se; NaN with one seed)
    rank: int | None = None
    tie: bool = False  # score equal to the config ranked just above
    few_seeds: list[str] = field(default_factory=list)  # datasets with fewer seeds than the best-covered config

    @property
    def n_runs(self) -> int:
        return sum(self.seeds.values())

    def ranked(self) -> ranking.Score:
        """This config as sweeps/ranking.py weighs a lead."""
        return ranking.Score(_fmt_config(self.config), self.score, self.se, min(self.seeds.values()))


def hyper_keys(records: Records, method: str) -> list[str]:
    """The keys that make up a method's choice: the sweep's searched keys and the space's fixed
    method keys (budget keys excluded); without parent info, the keys that differ across configs
    (within a dataset)."""
    keys = set(records.searched())
    space = SPACES.get(records.space)
    if space is not None:
        keys |= set(space.fixed)
        keys -= set(space.helpers)
    keys -= schema.BUDGET_KEYS
    if not keys:
        mine = records.df[records.df["method"] == method]
        keys = {k for k in config_keys(mine) if mine.groupby("dataset")[CONFIG + k].agg(
            lambda s: len({repr(v) for v in s if present(v)})).gt(1).any()} - schema.BUDGET_KEYS
    return sorted(keys)


def score_configs(records: Records, metric: str = "acc_mlp") -> list[ConfigScore]:
    """Every config's per-dataset means over seeds and its across-dataset mean (each dataset
    weighing the same), ranked per method (complete configs only; see the module docstring for
    eligibility and ties)."""
    datasets = records.datasets
    runs = dedupe(records.eligible(metric))
    if runs.empty:
        return []
    config = ["method", "config_hash"]
    keys = {m: hyper_keys(records, m) for m in set(runs["method"])}
    per_dataset, across = paper_scores(runs, config, metric, datasets)
    per_dataset["few"] = per_dataset["n"] < per_dataset.groupby(["method", "dataset"])["n"].transform("max")
    score = dict(zip(zip(across["method"], across["config_hash"]), across["mean"].tolist()))
    scores = []
    for (method, chash), rows in runs.groupby(config, sort=False):
        mine = per_dataset[(per_dataset["method"] == method) & (per_dataset["config_hash"] == chash)]
        have = mine["dataset"].tolist()
        scores.append(ConfigScore(
            method, chash, config_of(rows.iloc[0], keys[method]), means=dict(zip(have, mine["mean"].tolist())),
            seeds=dict(zip(have, mine["n"].tolist())), missing=[d for d in datasets if d not in have],
            trial_ids=sorted(set(rows["trial_id"])), score=score.get((method, chash)),
            se=ranking.score_se(mine["se"].tolist()) if (method, chash) in score else math.nan,
            few_seeds=mine.loc[mine["few"], "dataset"].tolist()))
    for method in {s.method for s in scores}:
        ranked = rank_with_ties([s for s in scores if s.method == method and s.score is not None])
        for i, s in enumerate(ranked):
            s.rank = i + 1
            s.tie = i > 0 and abs(s.score - ranked[i - 1].score) <= TIE_TOL
    return sorted(scores, key=lambda s: (method_key(s.method), s.rank is None, s.rank or 0, s.config_hash))


def rank_with_ties(scores: list[ConfigScore]) -> list[ConfigScore]:
    """Best score first; scores within TIE_TOL of each other (float noise of equal means) form a
    tie group, ordered by runs behind the score (more first), then config hash."""
    by_score = sorted(scores, key=lambda s: -s.score)
    groups: list[list[ConfigScore]] = []
    for s in by_score:
        if groups and abs(groups[-1][0].score - s.score) <= TIE_TOL:
            groups[-1].append(s)
        else:
            groups.append([s])
    return [s for g in groups for s in sorted(g, key=lambda s: (-s.n_runs, s.config_hash))]


def winners(scores: list[ConfigScore]) -> dict[str, ConfigScore]:
    return {s.method: s for s in scores if s.rank == 1}


def leads(scores: list[ConfigScore]) -> dict[str, ranking.Lead]:
    """Per method, the winner's lead over the runner-up against the noise (sweeps/ranking.py)."""
    out = {}
    for method in {s.method for s in scores}:
        ranked = sorted((s for s in scores if s.method == method and s.rank is not None), key=lambda s: s.rank)
        if len(ranked) >= 2:
            out[method] = ranking.Lead(ranked[0].ranked(), ranked[1].ranked())
    return out


def lead_sentence(lead: ranking.Lead | None) -> str:
    """'Decided: ...' or 'Not decided: ...' (empty without a runner-up)."""
    return "" if lead is None else f"{'Decided' if lead.decided else 'Not decided'}: {lead.words()}."


def eligibility_note(records: Records, metric: str) -> str:
    """The stated rule and what it excluded."""
    c = records.trial_counts()
    used = len(records.eligible(metric))
    return (f"eligible: runs that trained the full budget (FINISHED, not stopped early by ASHA) with a final "
            f"{metric}: {used} of {len(records.df)} runs; trials: {c['trials']} ({c['completed']} completed, "
            f"{c['stopped_early']} stopped early by ASHA -- excluded, {c['failed']} failed, "
            f"{c['unfinished']} unfinished)")


def _fmt_config(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items()) or "(defaults)"


def ranking_markdown(records: Records, scores: list[ConfigScore], metric: str, top: int) -> str:
    """The ranking as Markdown: per method the top configs with per-dataset means (%) and seeds."""
    datasets = records.datasets
    lines = [f"# Selection: {records.space}", "", records.caption(), "",
             eligibility_note(records, metric), "",
             f"score = mean over datasets ({', '.join(datasets)}) of the mean {metric} over seeds (%); "
             f"(n) = seed runs behind each number; '=' marks a tie (broken by runs behind the score, then "
             f"config hash); configs missing a dataset are not ranked.", ""]
    for method in sorted({s.method for s in scores}, key=method_key):
        mine = [s for s in scores if s.method == method]
        lines += [f"## {method}", "", "| rank | score | " + " | ".join(datasets) + " | config | hash |",
                  "|---" * (len(datasets) + 4) + "|"]
        for s in [s for s in mine if s.rank is not None][:top]:
            cells = [f"{100 * s.means[d]:.2f} ({s.seeds[d]}{'*' if d in s.few_seeds else ''})" for d in datasets]
            lines.append(f"| {s.rank}{'=' if s.tie else ''} | {100 * s.score:.2f} | " + " | ".join(cells)
                         + f" | {_fmt_config(s.config)} | {s.config_hash} |")
        incomplete = [s for s in mine if s.rank is None]
        sentence = lead_sentence(leads(mine).get(method))
        if sentence:
            lines += ["", sentence]
        if any(s.few_seeds for s in mine if s.rank is not None):
            lines += ["", "\\* fewer seeds than the best-covered config on that dataset"]
        if incomplete:
            lines += ["", f"incomplete, not ranked ({len(incomplete)}):"]
            for s in incomplete:
                have = ", ".join(f"{d} {100 * s.means[d]:.2f} ({s.seeds[d]})" for d in s.means)
                lines.append(f"- {_fmt_config(s.config)} [{s.config_hash}]: missing {', '.join(s.missing)}; has {have}")
        lines.append("")
    return "\n".join(lines)


def selection_entry(records: Records, s: ConfigScore, metric: str, lead: ranking.Lead | None = None) -> dict[str, Any]:
    """What the selection file holds for one method (plain YAML types)."""
    return {
        "config": {k: v for k, v in s.config.items() if k not in schema.BUDGET_KEYS},
        "score": float(s.score), "metric": metric,
        "datasets": {d: {"mean": float(s.means[d]), "n_seeds": int(s.seeds[d])} for d in s.means},
        "space": records.space, "sweeps": [w.name for w in records.sweeps],
        "profile": ", ".join(sorted({w.profile for w in records.sweeps})),
        "budget": "; ".join(sorted({w.budget for w in records.sweeps})), "config_hash": s.config_hash,
        "trial_ids": list(s.trial_ids), "source": records.caption(),
        "lead": lead_sentence(lead) or "the only config ranked",
        "selected_at": datetime.now().isoformat(timespec="seconds"),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="analysis/select.py", description=__doc__.split("\n\n")[0],
                                epilog="Examples: --space simvae_J | --all | --space betavae_beta --top 10 --dry-run")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--space", help="the space (MLflow experiment ssl-sweeps/<space>) to select from")
    g.add_argument("--all", action="store_true", help="every space in the store except table1; per method "
                   "the best winner (most datasets, then score)")
    p.add_argument("--metric", default="acc_mlp", help="final metric to rank by (default acc_mlp, the paper's rule)")
    p.add_argument("--top", type=int, default=5, help="configs shown per method (default 5)")
    p.add_argument("--selection", help="selection file (default <repo>/results/selection.yaml)")
    p.add_argument("--dry-run", action="store_true", help="rank and print; write nothing")
    p.add_argument("--force", action="store_true", help="write even a winner from an incomplete sweep or one run "
                   "at a custom budget, or one backed by fewer datasets or seed runs than the entry it replaces")
    add_source_args(p)
    return p


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.all:
        if args.source in ("files", "csv"):
            raise AnalysisError("--all reads the MLflow store; use --space with --source files")
        spaces = [s for s in spaces_in_store(args.tracking_uri or schema.default_tracking_uri()) if s != "table1"]
        if not spaces:
            raise AnalysisError("no sweeps in the store to select from")
    else:
        spaces = [args.space]
    out = results_dir(args.out)
    chosen: dict[str, tuple[Records, ConfigScore, ranking.Lead | None]] = {}
    partial: dict[str, list[str]] = {}
    for space in spaces:
        try:
            records = load_from_args(args, space)
        except NoUsableSweep as e:
            if not args.all:
                raise
            print(f"skipped {space}: {e}", file=sys.stderr)
            continue
        records.require_metric(args.metric)
        if records.incomplete():
            partial[space] = records.incomplete()
            print(f"warning: {space}: an incomplete sweep ({'; '.join(partial[space])}): the ranking covers only "
                  f"the configs that finished", file=sys.stderr)
        scores = score_configs(records, args.metric)
        text = ranking_markdown(records, scores, args.metric, args.top)
        print(text)
        if not args.dry_run:
            (out / "tables").mkdir(parents=True, exist_ok=True)
            (out / "tables" / f"selection_{records.label}.md").write_text(text + "\n")
        by_method = leads(scores)
        for method, s in winners(scores).items():
            prev = chosen.get(method)
            if prev is None or (len(s.means), s.score) > (len(prev[1].means), prev[1].score):
                chosen[method] = (records, s, by_method.get(method))
    if not chosen:
        raise AnalysisError("no config has a full-budget run on every dataset: nothing to select")
    for method, (records, s, lead) in chosen.items():
        print(f"selected {method}: {_fmt_config(s.config)}  score {100 * s.score:.2f}% ({records.label}, "
              f"{s.config_hash})" + (f"\n  {lead_sentence(lead)}" if lead else ""))
    if args.dry_run:
        return 0
    path = Path(args.selection).expanduser().resolve() if args.selection else (
        out / "selection.yaml" if args.out else schema.selection_path())
    try:
        previous = schema.read_selection_file(path)
    except schema.SelectionError as e:
        raise AnalysisError(f"{e} (fix or move it; --selection FILE writes elsewhere)") from None
    entries = {}
    for method, (records, s, lead) in chosen.items():
        why = refusal(previous.get(method), s, partial.get(records.space), records)
        if why and not args.force:
            print(f"not written: {method}: {why}; --force to write it anyway", file=sys.stderr)
            continue
        entries[method] = selection_entry(records, s, args.metric, lead)
    if not entries:
        print(f"{path} unchanged", file=sys.stderr)
        return 0
    unwritable = selection_unwritable(path)
    if unwritable:
        raise AnalysisError(f"cannot write the selection file: {unwritable} (--selection FILE writes elsewhere)")
    backup = keep_previous(path)
    try:
        replaced, kept = schema.write_selection_file(path, entries, order=method_key)
    except OSError as e:  # written whole or not at all: the file is as it was, so no copy of it is kept either
        if backup is not None:
            backup.unlink(missing_ok=True)
        raise AnalysisError(f"cannot write the selection file {path}: {e.strerror or e}; it is unchanged") from None
    print(f"wrote {path}" + (f" (replaced {', '.join(replaced)})" if replaced else "")
          + (f" (kept {', '.join(kept)})" if kept else "") + (f"; the previous file is {backup}" if backup else ""))
    return 0


def refusal(old: dict[str, Any] | None, new: ConfigScore, incomplete: list[str] | None,
            records: Records | None = None) -> str | None:
    """Why a new winner must not replace the selection file's entry without --force, or None."""
    if incomplete:
        return f"it comes from an incomplete sweep ({'; '.join(incomplete)})"
    custom = [w for w in (records.sweeps if records is not None else []) if not w.full]
    if custom:
        return (f"it comes from sweep {custom[0].name}, run at a {custom[0].budget or 'budget not recorded'}; "
                f"a selection holds winners at a profile's full budget")
    if not old:
        return None
    old_sets = old.get("datasets") or {}
    old_runs = sum(int(v.get("n_seeds", 0)) for v in old_sets.values() if isinstance(v, dict))
    if len(new.means) < len(old_sets) or (len(new.means) == len(old_sets) and new.n_runs < old_runs):
        return (f"it is backed by {len(new.means)} dataset(s) and {new.n_runs} seed run(s), the entry it would "
                f"replace by {len(old_sets)} and {old_runs}")
    return None


def selection_unwritable(path: Path) -> str | None:
    """Why the selection file ``path`` cannot be written (a folder, on a special file system, its
    folder not writable), or None."""
    special = schema.special_filesystem(path)
    if special:
        return special
    if path.is_dir():
        return f"{path} is a folder"
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable"
    return None


def keep_previous(path: Path) -> Path | None:
    """Copy the selection file to selection_history/ beside it before it changes."""
    if not path.exists():
        return None
    history = path.parent / "selection_history"
    history.mkdir(parents=True, exist_ok=True)
    backup = history / f"{path.stem}-{datetime.now():%Y%m%d-%H%M%S-%f}{path.suffix}"
    shutil.copy2(path, backup)
    return backup


def main(argv: list[str] | None = None) -> int:
    return main_guard("select.py", run, argv)


if __name__ == "__main__":
    sys.exit(main())
