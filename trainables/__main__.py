"""python -m trainables --method METHOD --dataset DATASET [--set KEY=VALUE ...]

Trains one method on one dataset under one config, prints progress to stderr and, last, one
JSON line of final metrics to stdout. Exit codes: 0 done, 2 bad input (unknown method, dataset
or key; a value out of range; missing data), 1 the run failed (e.g. a NaN loss).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from trainables.config import HELP_WIDTH, hyperparameter_help

    p = argparse.ArgumentParser(
        prog="python -m trainables",
        description=textwrap.fill(
            "Train one self-supervised method on one dataset under one config, then evaluate its frozen "
            "representations (MLP/linear probes, kNN, GMM clustering, reconstruction, style probes). Unset "
            "values take the paper/official defaults for the method and dataset.", HELP_WIDTH),
        epilog=hyperparameter_help()
        + "\n\nexample:\n  python -m trainables --method simvae --dataset digits --epochs 20 --set J=4 sigma2=0.15",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--method", required=True, help="method name (listed below)")
    p.add_argument("--dataset", required=True, help="dataset name (listed below)")
    p.add_argument("--epochs", type=int, help="training epochs (default: per dataset, see the table below)")
    p.add_argument("--seed", type=int, help="seed (default 0)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default: per dataset, see the table below)")
    p.add_argument("--batch-size", type=int, help="views per optimiser step (default: per dataset, see the "
                   "table below)")
    p.add_argument("--data-dir", help="dataset folder (default $SSL_SWEEPS_DATA or ~/.cache/ssl-sweeps/data)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="any other config key or method hyperparameter, e.g. --set J=4 sigma2=0.15")
    p.add_argument("--checkpoint", type=Path,
                   help="checkpoint file: written as training goes, resumed from if it exists")
    p.add_argument("--out", type=Path,
                   help="folder for config.json, metrics.json, recon_grid.png, learning_curve.png "
                        "(written only when the run completes)")
    return p


OUT_MARK = ".ssl-train-out"  # in an --out folder: this command wrote it, and the files it lists


def writable(path: Path, what: str, folder: bool) -> str | None:
    """Why ``path`` cannot be written as a ``folder`` (or a file), or None when it can."""
    from trainables.recording import special_filesystem

    special = special_filesystem(path)
    if special:
        return f"{what} {special}"
    if path.exists():
        if folder != path.is_dir():
            return f"{what} {path} is {'a file' if folder else 'a folder'}"
        target = path if folder else path.parent
        if not os.access(target, os.W_OK | os.X_OK) or (not folder and not os.access(path, os.R_OK | os.W_OK)):
            return f"{what} {path} is not writable"
        return foreign_files(path) if folder else None
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return f"{what} {path}: {parent} is not a writable folder"
    return None


def foreign_files(out: Path) -> str | None:
    """Why the existing folder ``out`` may not be replaced -- it holds something this command did
    not write there (``OUT_MARK`` lists what it wrote) -- or None (empty, or a previous run's)."""
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return None
    try:
        ours = set(json.loads((out / OUT_MARK).read_text())["files"]) | {OUT_MARK}
    except (OSError, ValueError, KeyError, TypeError):
        ours = set()
    foreign = [name for name in entries if name not in ours]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        return (f"--out {out} holds files that are not a previous run's outputs ({shown}); it would be replaced "
                f"whole: choose a new or empty folder")
    return None


def replace_folder(out: Path, write) -> list[Path]:
    """Write a run's outputs into a fresh folder beside ``out`` and swap it in, so no file of
    an earlier run in ``out`` survives and a failure leaves the old folder whole. The new folder
    is marked (``OUT_MARK``, listing its files): only such a folder, or an empty one, is replaced."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.new-"))
    try:
        written = write(fresh)
        (fresh / OUT_MARK).write_text(json.dumps({"files": sorted(p.name for p in written)}))
        old = None
        if out.exists():
            problem = foreign_files(out)  # checked before training too; someone may have added files since
            if problem:
                raise OSError(problem)
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, old / out.name)
        os.replace(fresh, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return [out / p.name for p in written]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from trainables.config import ConfigError, parse_pairs
    from trainables.datasets import DatasetError, DatasetUnavailable, UnknownDataset, resolve_data_dir
    from trainables.driver import CheckpointError, ConsoleHooks, NonFiniteLoss, train

    class Hooks(ConsoleHooks):
        def finished(self, run, row):
            if args.out is not None:
                from trainables.artifacts import write_run_files

                written = replace_folder(args.out, lambda d: write_run_files(
                    d, run.method, run.splits, run.cfg, run.history, row))
                self.log("wrote " + ", ".join(str(p) for p in written))

    for path, what, folder in ((args.out, "--out", True), (args.checkpoint, "--checkpoint", False)):
        problem = writable(path.expanduser().absolute(), what, folder) if path is not None else None
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    try:
        config = parse_pairs(args.set)
        config.update({"method": args.method, "dataset": args.dataset})
        for key, value in (("epochs", args.epochs), ("seed", args.seed), ("lr", args.lr),
                           ("batch_size", args.batch_size), ("data_dir", args.data_dir),
                           ("device", args.device)):
            if value is not None:
                config[key] = value
        if config.get("data_dir"):
            config["data_dir"] = resolve_data_dir(config["data_dir"])
        run = train(config, Hooks(args.checkpoint)).runs[0]
    except (ConfigError, DatasetUnavailable, DatasetError, UnknownDataset, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLoss as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the outputs could not be written (a full disk, --out changed meanwhile)
        print(f"error: {e.strerror and f'{e.filename or args.out}: {e.strerror}' or e}", file=sys.stderr)
        return 1
    print(json.dumps({**run.final, "epochs_trained": run.epoch}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
