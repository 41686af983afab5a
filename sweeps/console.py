"""What a sweep prints: one compact line per report while it runs, readable at 100-120 columns,
and the summary at its end (``summary``).

Ray Tune's own console output (its 150-column status table, a result box per finished trial, a
TensorBoard hint, "completed" for a trial ASHA stopped) is switched off with ``RunConfig(verbose=0)``
(with ``quiet_tune_output``: Ray's legacy console engine, silent at verbose 0) and replaced by
``ConsoleReporter``, a ``tune.Callback`` that prints, on stdout:

    [0:25] a63fa_00000 J=2       epoch 1/2  val kNN 28.5%  (next: the last epoch, then the final evaluation)
    [1:05] a63fa_00000 J=2       final evaluation running (40 s since epoch 1)
    [1:40] a63fa_00000 J=2       done  acc MLP 20.5% (digits 10.0, shapes 31.0)  kNN 26.5%
    [0:40] 3789b_00001 J=4       epoch 2/4  val kNN 25.0%  stopped early by ASHA

(time since the sweep started, the trial, its searched values, the epoch, the metric ASHA reads
-- ``val_acc_knn_mean`` -- and, at the end, the selection metric ``acc_mlp_mean``; accuracies in
percent). A trial still training its last epoch and evaluating (probes, kNN, GMM, style, the
frozen decoder: minutes on the paper's budgets) gets a line every ``heartbeat_s`` seconds.

The noise of Ray's own libraries stays in Ray's logs, by logger settings rather than by filtering
what is printed: Ray Train's per-checkpoint INFO line ("Checkpoint successfully created at ...")
goes to ``ray-train.log`` in each trial folder (``quiet_trial``), Ray Tune's driver INFO lines to
``tune.log`` in the experiment folder (``route_driver_logs``); warnings and errors still reach
the console. (run.py's ``connect_ray`` quiets Ray's note that it turned token authentication on
for a local cluster: the setting we want, not news.)
"""
from __future__ import annotations

import _thread
import functools
import logging
import math
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

from ray.tune import Callback

from sweeps.ledger import best_trial, count_verdicts, point_of, ranked_completed, winner_lead
from sweeps.mlflow_ui import dashboard_command, searched_keys, ui_command, ui_link
from sweeps.ranking import percents
from sweeps.spaces import budget_words
from sweeps.schema import ASHA_METRIC, SELECTION_METRIC, fmt_value, point_words

WIDTH = 120  # no console line is longer
_HANDLER_MARK = "_ssl_sweeps_handler"


def shorten(line: str, width: int = WIDTH) -> str:
    return line if len(line) <= width else line[:width - 1] + "…"


def pct(v: Any) -> str:
    """An accuracy (a fraction) as a person reads it: percent, one decimal."""
    return f"{100 * float(v):.1f}%" if isinstance(v, (int, float)) else "-"


def point_text(config: dict[str, Any], keys: list[str], width: int = 40) -> str:
    """The trial's searched values, e.g. ``J=8`` or ``sigma2=0.0123`` (table1: the method)."""
    return shorten(point_words(config, keys), width)


class ConsoleReporter(Callback):
    """One line per trial report and per trial event (see the module docstring)."""

    def __init__(self, plan, out: TextIO | None = None, heartbeat_s: float = 60.0, width: int = WIDTH):
        self.keys = searched_keys(plan)
        self.datasets = list(plan.datasets)
        self.epochs = plan.epochs
        self.runs = len(plan.datasets) * len(plan.seeds)
        self.out, self.heartbeat_s, self.width = out, heartbeat_s, width
        self.started = time.monotonic()
        self.pad = min(40, max([8] + [len(point_text({k: v}, [k])) for k in self.keys
                                      for v in getattr(plan.params[k], "values", ())]
                               + [len(k) + 8 for k in self.keys if not hasattr(plan.params[k], "values")]))
        self.evaluating: dict[str, float] = {}  # trial id -> when its last epoch + evaluation began
        self.last_line: dict[str, float] = {}

    # -- formatting ---------------------------------------------------------------------------
    def _print(self, trial, text: str) -> None:
        t = int(time.monotonic() - self.started)
        clock = f"{t // 3600}:{t // 60 % 60:02d}:{t % 60:02d}" if t >= 3600 else f"{t // 60}:{t % 60:02d}"
        point = point_text(trial.config, self.keys)
        self.pad = max(self.pad, len(point))
        line = f"[{clock}] {trial.trial_id} {point:<{self.pad}} {text}"
        print(shorten(line, self.width), file=self.out or sys.stdout, flush=True)
        self.last_line[trial.trial_id] = time.monotonic()

    def _per_dataset(self, result: dict[str, Any], metric: str) -> str:
        vals = [f"{d} {100 * result[f'{d}/{metric}']:.1f}" for d in self.datasets
                if isinstance(result.get(f"{d}/{metric}"), (int, float))]
        return f" ({', '.join(vals)})" if len(vals) > 1 else ""

    def _evaluation_next(self, trial) -> None:
        self.evaluating[trial.trial_id] = time.monotonic()

    # -- Tune's callback hooks ------------------------------------------------------------------
    def setup(self, **info):
        """The experiment starts (or resumes: the reporter is restored with the Tuner)."""
        self.started = time.monotonic()
        self.evaluating.clear()
        self.last_line.clear()

    def on_trial_start(self, iteration, trials, trial, **info):
        self._print(trial, f"started: {self.runs} run{'s' if self.runs != 1 else ''} "
                           f"({', '.join(self.datasets)}), {self.epochs} epoch{'s' if self.epochs != 1 else ''}")
        if self.epochs <= 1:
            self._evaluation_next(trial)

    def on_trial_restore(self, iteration, trials, trial, **info):
        self._print(trial, "continues from its last checkpoint")

    def on_trial_recover(self, iteration, trials, trial, **info):
        failures = getattr(getattr(trial, "run_metadata", None), "num_failures", "?")
        self._print(trial, f"failed (failure {failures}); retrying from its last checkpoint")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        head = f"epoch {epoch}/{self.epochs}"
        if SELECTION_METRIC in result:  # the last report: the final evaluation
            self.evaluating.pop(trial.trial_id, None)
            self._print(trial, f"done  acc MLP {pct(result[SELECTION_METRIC])}{self._per_dataset(result, 'acc_mlp')}"
                               f"  kNN {pct(result.get('acc_knn_mean'))}")
            return
        text = f"{head}  val kNN {pct(result.get(ASHA_METRIC))}"
        if result.get("done"):  # Tune marks a result done when the scheduler stops the trial
            self._print(trial, f"{text}  stopped early by ASHA")
            return
        if epoch == self.epochs - 1:
            self._evaluation_next(trial)
            text += "  (next: the last epoch, then the final evaluation)"
        self._print(trial, text)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.evaluating.pop(trial.trial_id, None)
        epoch = (trial.last_result or {}).get("epoch", 0)
        self._print(trial, f"FAILED after epoch {epoch}: {trial_error(trial)}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.evaluating.pop(trial.trial_id, None)

    def on_step_end(self, iteration, trials, **info):
        now = time.monotonic()
        for trial in trials:
            since = self.evaluating.get(trial.trial_id)
            if since is None or trial.status != "RUNNING":
                continue
            if now - self.last_line.get(trial.trial_id, since) >= self.heartbeat_s:
                self._print(trial, f"last epoch + final evaluation running ({now - since:.0f} s so far; "
                                   f"{self.runs} run{'s' if self.runs != 1 else ''}: probes, kNN, GMM, style)")


def error_file_line(trial) -> str | None:
    """The last line of the trial's error (Ray writes the whole traceback to error.txt in its
    folder): '' when the file says nothing, None when it cannot be read."""
    try:
        text = Path(trial.local_path, "error.txt").read_text().strip().splitlines()
    except (OSError, TypeError, AttributeError):
        return None
    lines = [ln for ln in text if ln and not ln.startswith(" ")]
    return lines[-1] if lines else ""


def trial_error(trial) -> str:
    """The trial's error as the console says it."""
    line = error_file_line(trial)
    return "error (see the trial folder's error.txt)" if line is None else line or "error"


# -- the end of a sweep --------------------------------------------------------------------------


def summary(plan, rows: list[dict[str, Any]], wall_s: float, folder: Path, ledger=None) -> str:
    """The end-of-sweep summary (printed, and summary.txt on the parent run): the sweep with its
    profile and budget, counts, the winner's per-dataset accuracies in percent, the ranking and
    whether the winner's lead decides it (sweeps/ranking.py), the disk the sweep holds, and
    where the trials, the MLflow runs and the Optuna study are, with the commands that serve
    them. ``rows``: the trials.csv rows; ``ledger``: the sweep's (sweeps/ledger.py)."""
    counts, budget = count_verdicts(rows), budget_words(plan.budget_changes())
    lines = ["", f"== sweep {plan.space} ({plan.profile}, {budget.split(':')[0]}){f': {ledger.name}' if ledger else ''} =="]
    if plan.budget_changes():
        lines += _wrapped(f"{budget}: analysis reads this sweep only when named (--sweep)", "")
    lines.append(f"trials: {len(rows)} run, {counts['completed']} completed, {counts['stopped_early']} stopped "
                 f"early by ASHA, {counts['failed']} failed; wall time {wall_s:.0f} s")
    best = best_trial(rows)
    if best is not None:
        keys = searched_keys(plan)
        point = {k[len("config/"):]: v for k, v in best.items() if k.startswith("config/")}
        lines.append(f"best config (mean MLP-probe accuracy across datasets): trial {best['trial_id']}  "
                     + ", ".join(f"{k}={_fmt(v)}" for k, v in point.items() if k not in plan.helpers))
        lines.append(f"  {'dataset':<14} {'MLP probe':>9} {'kNN':>8}")
        for d in plan.datasets:
            lines.append(f"  {d:<14} {_fmt(best.get(f'{d}/acc_mlp'), True):>9} {_fmt(best.get(f'{d}/acc_knn'), True):>8}")
        done = ranked_completed(rows)
        scores = percents([t[SELECTION_METRIC] for t in done])
        lines.append(f"  {'mean':<14} {scores[0]:>9} {_fmt(best.get('acc_knn_mean'), True):>8}")
        if len(done) > 1:
            shown = [f"{point_of(t, keys)} {p}" for t, p in zip(done[:5], scores)]
            lines.append(shorten(f"ranking: {', '.join(shown)}" + (f", ... ({len(done) - 5} more)" if len(done) > 5 else "")
                                 + " (mean MLP probe)"))
            lead = winner_lead(rows, plan)
            lines += _wrapped(f"{'decided' if lead.decided else 'not decided'}: {lead.words()}", "  ")
        lines += _best_learned(rows, best)
    else:
        lines.append("no trial completed its full budget: no best config")
    lines.append(f"all trials, ranked: {folder / 'trials.csv'}")
    if ledger is not None:
        lines += _disk_lines(ledger, rows)
        command = ui_command(ledger.uri)
        if command:
            lines += ["MLflow UI: serve the store with", f"  {command}", "and open the runs table at"]
        else:
            lines.append("MLflow UI: the runs table at")
        lines.append(f"  {ui_link(ledger.uri, ledger.experiment_id)}")
        if ledger.info.get("optuna_storage"):
            lines += [f"Optuna study {ledger.info.get('optuna_study') or ledger.name} (Optuna's dashboard):",
                      f"  {dashboard_command(ledger.info['optuna_storage'])}"]
    return "\n".join(lines)


def _wrapped(text: str, indent: str, width: int = WIDTH) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent + "  ", break_on_hyphens=False,
                         break_long_words=False)  # flags and paths stay whole


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _disk_lines(ledger, rows: list[dict[str, Any]]) -> list[str]:
    """What the sweep holds on disk: its folder (checkpoints of unfinished trials, or every
    trial's with --keep-checkpoints; run files) and its MLflow artifacts."""
    use = ledger.disk_use()
    if use["checkpoints"]:
        kept = f"{_megabytes(use['checkpoints'])} of it checkpoints, kept for --resume or --keep-checkpoints"
    else:
        kept = "no checkpoint: each is removed when its trial ends, unless --keep-checkpoints"
    return _wrapped(f"disk: {_megabytes(use['folder'] + use['artifacts'])} -- the sweep's folder "
                    f"{_megabytes(use['folder'])} ({kept}), MLflow artifacts {_megabytes(use['artifacts'])}", "")


def _best_learned(rows: list[dict[str, Any]], best: dict[str, Any]) -> list[str]:
    """When the winner is a baseline (the random encoder, the raw pixels: a method that does not
    train), the line that names the best method that learns, so that a reader does not take the
    baseline for a method's result."""
    from models import METHODS

    def learns(t):
        method = METHODS.get(str(t.get("config/method", "")))
        return method is None or method.trainable

    if learns(best):
        return []
    learned = best_trial([t for t in rows if learns(t)])
    said = f"  ({best['config/method']} is a baseline, not a learned representation"
    if learned is None:
        return [said + "; no learned method completed)"]
    return [said + f"; the best learned method: {learned['config/method']}, "
                   f"mean MLP probe {_fmt(learned[SELECTION_METRIC], True)})"]


def _fmt(v, percent: bool = False) -> str:
    """A value for the summary; ``percent``: an accuracy (a fraction) as e.g. ``93.2%``."""
    if isinstance(v, float) and percent and math.isfinite(v):
        return f"{100 * v:.1f}%"
    if isinstance(v, float):
        return fmt_value(v)
    return "-" if v is None else str(v)


# -- keeping Ray's INFO lines in Ray's logs ----------------------------------------------------------


class _LogFile(logging.FileHandler):
    """A log file that stops, silently, once it cannot be written (a full disk): Python's logging
    would print a traceback for every record after that."""

    def handleError(self, record: logging.LogRecord) -> None:
        self.setLevel(logging.CRITICAL + 1)


class _OneLine(logging.Formatter):
    """A console line per record: an exception as its last line, not its traceback (the trial's
    folder keeps the whole of it, in error.txt)."""

    def formatException(self, ei) -> str:
        return "".join(traceback.format_exception_only(ei[0], ei[1])).strip().splitlines()[-1]

    def format(self, record: logging.LogRecord) -> str:
        cached, record.exc_text = record.exc_text, None  # the file handler's whole traceback
        try:
            text = super().format(record)
        finally:
            record.exc_text = cached
        return text.replace("\n", " ") if record.exc_info else text


def _route(logger_name: str, path: Path, console_level: int = logging.WARNING) -> None:
    """Send ``logger_name``'s records to ``path`` (everything) and the console (``console_level``
    and above, one line each), instead of the console alone."""
    log = logging.getLogger(logger_name)
    for h in [h for h in log.handlers if getattr(h, _HANDLER_MARK, False)]:
        log.removeHandler(h)
        h.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    to_file = _LogFile(path, delay=True)
    to_file.setFormatter(logging.Formatter(fmt))
    to_console = logging.StreamHandler(sys.stderr)
    to_console.setLevel(console_level)
    to_console.setFormatter(_OneLine(fmt))
    for h in (to_file, to_console):
        setattr(h, _HANDLER_MARK, True)
        log.addHandler(h)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    log.propagate = False


def quiet_trial(trainable):
    """``trainable`` (a Tune function trainable) with Ray Train's INFO lines -- one "Checkpoint
    successfully created at ..." per checkpoint -- written to ``ray-train.log`` in the trial folder."""
    @functools.wraps(trainable)
    def trial(config, **kwargs):
        from sweeps.trial import trial_folder

        _route("ray.train", trial_folder() / "ray-train.log")
        return trainable(config, **kwargs)

    return trial


def quiet_workers() -> None:
    """A local Ray's ``worker_process_setup_hook``: a trial restored from its checkpoint (every
    trial of a ``--resume``) logs "Restored on 127.0.0.1 from checkpoint: Checkpoint(...)" at INFO
    from its actor before the trial function runs, and Ray copies it, coloured, to the driver's
    console: noise beside the sweep's own progress lines, which say where each trial stands."""
    logging.getLogger("ray.tune.trainable.trainable").setLevel(logging.WARNING)
    exit_outside_finalizers()


EXIT_REDELIVERY_S = 0.1


def exit_outside_finalizers() -> None:
    """A Ray worker's SIGTERM handler exits by raising ``SystemExit`` wherever the main thread
    stands, and when Ray stops a sweep's workers (``ray.shutdown`` after Ctrl-C or SIGTERM) it
    can stand in a weakref callback or a ``__del__``, where Python cannot raise: it prints
    "Exception ignored in: <function WeakSet...>" with the handler's traceback -- copied to the
    user's console by Ray -- and carries on as if the signal never came. This unraisable hook
    takes such an exit off the console and delivers the SIGTERM again a moment later, once the
    finalizer has returned, so the worker exits as asked (with Ray's exit code). Every other
    exception a finalizer raises is still printed. Installed once per process, by the local
    Ray's worker setup hook (``quiet_workers``) and by every trial (``sweeps.trial``), which a
    cluster's workers run."""
    if getattr(sys.unraisablehook, "exits_outside_finalizers", False):
        return
    default = sys.unraisablehook

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, SystemExit):
            default(unraisable)
        elif not sys.is_finalizing():  # (an interpreter that is finalizing exits anyway)
            # Not at once: a signal handled while this hook still runs would land in the hook.
            again = threading.Timer(EXIT_REDELIVERY_S, _thread.interrupt_main, (signal.SIGTERM,))
            again.daemon = True
            again.start()

    hook.exits_outside_finalizers = True
    sys.unraisablehook = hook


def route_driver_logs(folder: Path) -> None:
    """Ray Tune's driver INFO lines (experiment state written, ...) to ``folder/tune.log``. Its
    warning that experiment snapshots come often (every epoch checkpoints on the quick profile's
    second-long epochs) goes there only."""
    _route("ray.tune", Path(folder) / "tune.log")
    _route("ray.tune.execution.experiment_state", Path(folder) / "tune.log", console_level=logging.ERROR)


def quiet_tune_output() -> None:
    """Ray Tune 2.60's default console engine prints a configuration box, the results path and a
    TensorBoard hint even at ``verbose=0``; its legacy engine (``RAY_AIR_NEW_OUTPUT=0``, a
    documented Ray setting) prints nothing at ``verbose=0``, leaving the console to
    ``ConsoleReporter``. Read by ``Tuner.fit`` in the driver."""
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"


