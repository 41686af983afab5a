#!/usr/bin/env bash
# The GPU check: one prepared script for the day a GPU machine is lent (under 8 minutes), also
# runnable end to end on a CPU so it is known to work before then.
#
#   bash benchmarks/gpu_check.sh [--device cuda|cpu] [--data-dir DIR] [--python PY] [--logs DIR]
#
# --logs DIR keeps every step's full log there (the working folder is removed at the end).
#
# Steps (each under its own time limit; the figures of a step that fails are null):
#   1. tests    the tests written for a GPU (named *gpu* or *generator_device*; they skip
#               without CUDA): batched augmentation (both pipelines) on the GPU, evaluation
#               on GPU features, the SimVAE loss under bf16 autocast, a bf16 step that
#               trains float32 parameters, fused Adam taking plain Adam's steps.
#   2. speed    training views/s of a full optimiser step (benchmarks/train_step.py) for SimVAE
#               and SimCLR on the MLP (28x28) and the ResNet-18 (32x32, synthetic images), fp32
#               and, on CUDA, bf16 autocast in the same run, with the share of the GPU's matmul
#               peak each reaches. (--data-dir is accepted and unused by this step.)
#   3. cpu      the same benchmark on this machine's CPU (2 threads, fp32 and bf16), with the
#               CPU's native-bf16 flags: where a GPU host's CPU has AVX512-BF16/AMX, this is
#               the bf16 CPU speed-up issue #22 asks about.
#   4. trials   one run each without Ray (python -m trainables), training and the whole
#               evaluation on the device: SimVAE on digits in bf16 for 1 epoch with a
#               checkpoint, resumed to 2 epochs on the device, to 3 on the CPU (a GPU
#               checkpoint read on a CPU) and to 4 on the device again; VAE on digits in
#               fp32; SimCLR with the ResNet-18 on the CIFAR-10 subset when --data-dir holds
#               cifar10/ (bf16).
#   5. sweep    a tiny fractional-GPU sweep: simvae_J (3 trials) on digits, 2 epochs on 200
#               images, --gpus-per-trial 0.5 (two trials share the GPU), bf16; on --device cpu
#               the same with --gpus-per-trial 0. Reports the trials that ran at once (2 when
#               two share the GPU). Needs ray, optuna and mlflow importable: an image with
#               PyTorch alone lacks them, and Ray's wheel (79 MB) is more than a lent GPU
#               machine takes along, so benchmarks/pack_site.sh packs them into one archive
#               (about 42 MB) to unpack there first. Skipped otherwise.
#
# Progress goes to stderr; the last line on stdout is one JSON object of the figures. Exit 0
# when every step passed, 1 when one failed, 2 on bad arguments or no CUDA (a sweep skipped for want
# of Ray is reported as skipped, not failed).
set -u
DEVICE=cuda
DATA_DIR=""
PY=""
LOGS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="${2:-}"; shift 2 ;;
        --data-dir) DATA_DIR="${2:-}"; shift 2 ;;
        --python) PY="${2:-}"; shift 2 ;;
        --logs) LOGS="${2:-}"; shift 2 ;;
        -h|--help) sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_check: --device must be cuda or cpu, got '$DEVICE'" >&2; exit 2 ;; esac

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO" || exit 2
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
trap '[ -n "$LOGS" ] && mkdir -p "$LOGS" && cp "$WORK"/*.log "$LOGS"/ 2>/dev/null; rm -rf "$WORK"' EXIT
T0=$(date +%s)
log() { echo "gpu_check [$(( $(date +%s) - T0 )) s] $*" >&2; }

# -- 0. the device --------------------------------------------------------------------------
"$PY" - "$DEVICE" > "$WORK/env.json" <<'EOF' || { cat "$WORK/env.json"; exit 2; }
import json, sys
import torch
device = sys.argv[1]
env = {"device": device, "python": sys.version.split()[0], "torch": torch.__version__,
       "cuda_available": torch.cuda.is_available(),
       "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
       "bf16_supported": bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())}
if device == "cuda" and not torch.cuda.is_available():
    print(json.dumps({**env, "ok": False, "error": "no CUDA device: run with --device cpu"}))
    sys.exit(2)
print(json.dumps(env))
EOF
log "device $DEVICE, python $PY: $(cat "$WORK/env.json")"

if [ "$DEVICE" = cuda ]; then  # limits (s) sum to under 8 minutes
    STEPS=30; WARMUP=5; IMAGES=128; PRECISIONS="fp32,bf16"; GPUS=0.5; DEV_SET="device=cuda bf16=true"
    T_TESTS=90; T_SPEED=50; T_CPU=60; T_TRIAL=60; T_SWEEP=150; CIFAR_N=1000
else  # a smoke run: as few steps as measure anything, limits for a busy 2-core machine
    STEPS=2; WARMUP=1; IMAGES=8; PRECISIONS="fp32"; GPUS=0; DEV_SET="device=cpu"
    T_TESTS=150; T_SPEED=180; T_CPU=180; T_TRIAL=240; T_SWEEP=300; CIFAR_N=100
    export OMP_NUM_THREADS=1  # one intra-op thread, as a 1-CPU trial: steady on shared cores
fi

# -- 1. the GPU tests -----------------------------------------------------------------------
log "tests"
timeout "$T_TESTS" "$PY" -m pytest -q -p no:cacheprovider -m "not slow" -k "gpu or generator_device" \
    tests/test_augment.py tests/test_evaluate.py tests/test_objectives.py tests/test_precision.py > "$WORK/tests.log" 2>&1
echo $? > "$WORK/tests.rc"
tail -n 3 "$WORK/tests.log" >&2
grep -E '^E ' "$WORK/tests.log" | head -n 12 >&2  # a failure's assertion, where one failed

# -- 2. training throughput, MLP and ResNet, float32 and bfloat16 in one run each -------------
for net in mlp resnet; do
    log "speed $net"
    timeout "$T_SPEED" "$PY" benchmarks/train_step.py --net $net --methods simvae,vae,simclr --device "$DEVICE" \
        --precisions "$PRECISIONS" --steps "$STEPS" --warmup "$WARMUP" --images-per-step "$IMAGES" \
        > "$WORK/speed_${net}.log" 2>&1
    echo $? > "$WORK/speed_${net}.rc"
    tail -n 6 "$WORK/speed_${net}.log" >&2
done

# -- 3. the CPU's own bf16 ------------------------------------------------------------------
log "cpu speed (2 threads; flags: $(grep -o -w -E 'avx512_bf16|amx_bf16|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' '))"
timeout "$T_CPU" "$PY" benchmarks/train_step.py --net mlp --methods simvae,vae,simclr --device cpu \
    --precisions fp32,bf16 --threads 2 --steps 4 --warmup 1 > "$WORK/cpu.log" 2>&1
echo $? > "$WORK/cpu.rc"
tail -n 6 "$WORK/cpu.log" >&2

# -- 4. single runs without Ray: training, evaluation and a checkpoint on the device ---------
TINY="train_size=200 test_size=100 probe_epochs=2 probe_min_steps=50 style_J=1"
trial() {  # name, then python -m trainables arguments
    local name=$1; shift
    log "trial $name"
    local t0; t0=$(date +%s)
    timeout "$T_TRIAL" "$PY" -m trainables "$@" > "$WORK/trial_$name.json" 2> "$WORK/trial_$name.log"
    echo $? > "$WORK/trial_$name.rc"
    echo $(( $(date +%s) - t0 )) > "$WORK/trial_$name.wall"
    tail -n 2 "$WORK/trial_$name.log" >&2
}
CK="$WORK/simvae.ckpt"
trial simvae_1 --method simvae --dataset digits --device "$DEVICE" --epochs 1 --checkpoint "$CK" \
    --set J=4 bf16=$([ "$DEVICE" = cuda ] && echo true || echo false) $TINY
trial simvae_2 --method simvae --dataset digits --device "$DEVICE" --epochs 2 --checkpoint "$CK" \
    --set J=4 bf16=$([ "$DEVICE" = cuda ] && echo true || echo false) $TINY
trial simvae_3_cpu --method simvae --dataset digits --device cpu --epochs 3 --checkpoint "$CK" \
    --set J=4 bf16=$([ "$DEVICE" = cuda ] && echo true || echo false) $TINY
trial simvae_4 --method simvae --dataset digits --device "$DEVICE" --epochs 4 --checkpoint "$CK" \
    --set J=4 bf16=$([ "$DEVICE" = cuda ] && echo true || echo false) $TINY
trial vae --method vae --dataset digits --device "$DEVICE" --epochs 2 --set bf16=false $TINY
if [ -n "$DATA_DIR" ] && [ -d "$DATA_DIR/cifar10" ]; then
    trial simclr_cifar10 --method simclr --dataset cifar10 --data-dir "$DATA_DIR" --device "$DEVICE" --epochs 2 \
        --set train_size=$CIFAR_N test_size=$CIFAR_N probe_epochs=2 probe_min_steps=50 style_J=1 \
        bf16=$([ "$DEVICE" = cuda ] && echo true || echo false)
fi

# -- 5. a tiny fractional-GPU sweep ---------------------------------------------------------
if "$PY" -c "import ray, optuna, mlflow" > /dev/null 2>&1; then
    log "sweep (--gpus-per-trial $GPUS)"
    S0=$(date +%s)
    SSL_SWEEPS_HOME="$WORK/home" MLFLOW_TRACKING_URI="" RAY_ADDRESS="" timeout "$T_SWEEP" "$PY" sweeps/run.py \
        --space simvae_J --profile quick --datasets digits --epochs 2 --seeds 0 \
        --gpus-per-trial "$GPUS" --cpus-per-trial 1 --max-concurrent 2 --name gpu_check \
        --set train_size=200 test_size=100 probe_epochs=2 probe_min_steps=50 style_J=1 $DEV_SET \
        > "$WORK/sweep.log" 2>&1
    echo $? > "$WORK/sweep.rc"
    echo $(( $(date +%s) - S0 )) > "$WORK/sweep.wall"
    tail -n 8 "$WORK/sweep.log" >&2
else
    log "sweep skipped: ray, optuna or mlflow is not importable with $PY"
fi

# -- the figures ----------------------------------------------------------------------------
"$PY" - "$WORK" "$(( $(date +%s) - T0 ))" <<'EOF'
import csv, glob, json, re, sys
from pathlib import Path

work, wall = Path(sys.argv[1]), int(sys.argv[2])
out = json.loads((work / "env.json").read_text())
ok = True

def rc(name):
    f = work / f"{name}.rc"
    return int(f.read_text()) if f.exists() else None

tests_log = (work / "tests.log").read_text() if (work / "tests.log").exists() else ""
counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", tests_log)}
out["gpu_tests"] = {k: counts.get(k, 0) for k in ("passed", "failed", "skipped")}
out["gpu_tests"]["exit"] = rc("tests")
ok &= rc("tests") == 0 and counts.get("failed", 0) == 0

speed = {}
for log in sorted(work.glob("speed_*.log")):
    _, net = log.stem.split("_")
    code = rc(log.stem)
    ok &= code == 0
    lines = [l for l in log.read_text().splitlines() if l.startswith("{")]
    figures = json.loads(lines[-1]) if code == 0 and lines else {}
    for precision in ("fp32", "bf16"):
        for method in ("simvae", "vae", "simclr"):
            v = figures.get(f"train_views_per_s_{method}_{precision}")
            if v is not None:
                speed[f"{net}_{method}_{precision}"] = round(v)
                speed[f"{net}_{method}_{precision}_peak_share"] = figures.get(f"peak_share_{method}_{precision}")
        share = figures.get(f"augment_share_simvae_{precision}")
        if share is not None:
            speed[f"{net}_simvae_{precision}_augment_share"] = share
out["train_views_per_s"] = speed

cpu_code = rc("cpu")
cpu_lines = [l for l in (work / "cpu.log").read_text().splitlines() if l.startswith("{")] \
    if (work / "cpu.log").exists() else []
cpu = json.loads(cpu_lines[-1]) if cpu_code == 0 and cpu_lines else {}
flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
out["cpu"] = {"exit": cpu_code, "native_bf16_flags": sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"}),
              **{k: v for k, v in cpu.items() if k.startswith(("step_ms_", "bf16_speedup_", "peak_gflops_",
                                                               "peak_share_"))}}
ok &= cpu_code == 0

trials = {}
for f in sorted(work.glob("trial_*.rc")):
    name = f.stem[len("trial_"):]
    code = int(f.read_text())
    lines = [l for l in (work / f"trial_{name}.json").read_text().splitlines() if l.startswith("{")]
    metrics = json.loads(lines[-1]) if code == 0 and lines else {}
    log = (work / f"trial_{name}.log").read_text()
    entry = {"exit": code, "wall_s": int((work / f"trial_{name}.wall").read_text()),
             "epochs_trained": metrics.get("epochs_trained"),
             "resumed_from": (re.findall(r"resumed from epoch (\d+)", log) or [None])[-1]}
    for k in ("acc_mlp", "acc_knn", "recon_error"):
        if isinstance(metrics.get(k), (int, float)):
            entry[k] = round(metrics[k], 4)
    if code != 0:
        entry["error"] = (log.strip().splitlines() or [""])[-1][:300]
    trials[name] = entry
    ok &= code == 0
if "simvae_2" in trials:  # the checkpoint carried the run on, on the device and then on the CPU
    ok &= (trials["simvae_2"]["resumed_from"] == "1" and trials.get("simvae_3_cpu", {}).get("resumed_from") == "2"
           and trials.get("simvae_4", {}).get("resumed_from") == "3")
out["trials"] = trials

if rc("sweep") is None:
    out["sweep"] = {"skipped": "ray, optuna or mlflow not importable"}
else:
    sweep = {"exit": rc("sweep"), "wall_s": int((work / "sweep.wall").read_text())}
    rows = []
    for f in glob.glob(str(work / "home" / "tune" / "*" / "trials.csv")):
        with open(f) as fh:
            rows += list(csv.DictReader(fh))
    if rows:
        statuses = [r.get("status", "") for r in rows]
        sweep["trials"] = len(rows)
        sweep["statuses"] = {s: statuses.count(s) for s in sorted(set(statuses))}
        accs = [float(r[k]) for r in rows for k in r if k.endswith("acc_mlp_mean") and r[k] not in ("", None)]
        sweep["acc_mlp_mean_max"] = round(max(accs), 4) if accs else None
    # How many trials ran at once, from the console's lines in the order the driver saw them (Tune's
    # result timestamps are whole seconds: too coarse for trials of a few seconds).
    running = most = 0
    for line in (work / "sweep.log").read_text().splitlines():
        if re.match(r"\[\d+:\d\d\] \S+ .*  started: ", line):
            running += 1
            most = max(most, running)
        elif re.match(r"\[\d+:\d\d\] \S+ .*  (done  acc MLP|.*stopped early by ASHA|FAILED after epoch)", line):
            running -= 1
    sweep["max_concurrent"] = most
    out["sweep"] = sweep
    ok &= sweep["exit"] == 0
out["wall_s"] = wall
out["ok"] = bool(ok)
print(json.dumps(out))
sys.exit(0 if ok else 1)
EOF
