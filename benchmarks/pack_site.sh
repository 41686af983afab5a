#!/usr/bin/env bash
# Ray, MLflow and Optuna as one archive, for a machine whose Python has PyTorch but not these and
# cannot reach a package index (a lent GPU machine): gpu_check.sh's sweep step needs them.
#
#   bash benchmarks/pack_site.sh --have NAMES_FILE [--python-version 3.12] [--python PY]
#                                [--out .whl/site.tar.xz]
#
# The wheels are those of this checkout's .venv (the same Ray, MLflow and Optuna versions the tests
# run), for the target's Python version and x86-64 Linux, with their dependencies, less every
# project NAMES_FILE names (what the target already has: names separated by commas, spaces or
# newlines). PY (default: pythonX.Y, for --python-version X.Y) installs them into one folder,
# which is pruned of what a local sweep never imports -- Ray's Java jars, RLlib, Serve, its LLM
# library, the dashboard's and MLflow's web UI builds, psycopg (PostgreSQL: a cluster's records)
# -- and packed with xz. Ray's wheel alone (79 MB) is more than a lent machine takes along
# (64 MiB a call); the archive is about 42 MB. A failed download or install stops it (exit 1).
#
# On the target:  mkdir -p /tmp/site && tar -xJf .whl/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site
set -eu
PYVER=3.12
HAVE=""
TARGET_PY=""
OUT=.whl/site.tar.xz
while [ $# -gt 0 ]; do
    case "$1" in
        --have) HAVE="${2:-}"; shift 2 ;;
        --python-version) PYVER="${2:-}"; shift 2 ;;
        --python) TARGET_PY="${2:-}"; shift 2 ;;
        --out) OUT="${2:-}"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "pack_site: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$HAVE" ] && [ -f "$HAVE" ] || { echo "pack_site: --have NAMES_FILE is required (the target's packages)" >&2; exit 2; }
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="$REPO/.venv/bin/python"
[ -x "$PY" ] || { echo "pack_site: no $PY: install the project first (README)" >&2; exit 2; }
TARGET_PY="${TARGET_PY:-python$PYVER}"
[ "$("$TARGET_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$PYVER" ] \
    || { echo "pack_site: a Python $PYVER installs the wheels: --python PY ($TARGET_PY is not one)" >&2; exit 2; }
WORK="$(mktemp -d "${TMPDIR:-/tmp}/pack_site.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

REQS=$("$PY" - <<'EOF'
from importlib.metadata import version
print(f"ray[tune]=={version('ray')} mlflow=={version('mlflow')} optuna=={version('optuna')}")
EOF
)
echo "pack_site: $REQS for Python $PYVER" >&2
PLATFORMS=""
for p in manylinux_2_{17,24,27,28,31,34,35}_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS="$PLATFORMS --platform $p"
done
# pip's output is shown only when it fails (its notes on this machine's local indexes are noise).
pip_or_stop() {  # what, then the command
    local what=$1; shift
    "$@" > "$WORK/pip.log" 2>&1 || { grep -v "^WARNING: " "$WORK/pip.log" >&2; echo "pack_site: $what failed" >&2; exit 1; }
}
# shellcheck disable=SC2086
pip_or_stop "downloading the wheels" "$PY" -m pip download -q --only-binary=:all: --python-version "$PYVER" \
    --implementation cp $PLATFORMS -d "$WORK/wheels" $REQS
"$PY" - "$WORK/wheels" "$HAVE" <<'EOF'
import re, sys
from pathlib import Path

norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
have = {norm(n) for n in re.split(r"[,\s]+", Path(sys.argv[2]).read_text()) if n}
kept = 0
for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    if norm(wheel.name.split("-")[0]) in have:
        wheel.unlink()
    else:
        kept += 1
print(f"pack_site: {kept} wheels the target lacks", file=sys.stderr)
EOF
pip_or_stop "installing the wheels" "$TARGET_PY" -m pip install -q --no-index --no-deps --no-compile \
    --target "$WORK/site" "$WORK"/wheels/*.whl
cd "$WORK/site"
rm -rf bin ray/jars ray/rllib ray/serve ray/llm ray/dashboard/client/build mlflow/server/js/build \
    psycopg psycopg_binary psycopg_binary.libs
find . -name __pycache__ -prune -exec rm -rf {} +
cd "$REPO"
mkdir -p "$(dirname "$OUT")"
tar -cJf "$OUT.part" -C "$WORK/site" . && mv "$OUT.part" "$OUT"
echo "pack_site: $OUT, $(du -m "$OUT" | cut -f1) MB" >&2
