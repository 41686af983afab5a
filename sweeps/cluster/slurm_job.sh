#!/usr/bin/env bash
# One sweep in one Slurm allocation. sweeps/slurm.py submits this file with sbatch (its arguments:
# sweeps/run.py's); docs/cluster.md, "Slurm", walks through it.
#
# The batch script (on the allocation's first node):
#   1. Ray on every node: one `srun` step, one task per node, each running this file with
#      --ray-node: Ray's head on the first node (its dashboard on that node's loopback), a worker on
#      every other; each `ray start --block`, on the node's Slurm address (NodeAddr);
#   2. waits until every node has joined (at most $SSL_SWEEPS_SLURM_JOIN_TIMEOUT seconds);
#   3. unless the sweep names a tracking server of its own, an MLflow server on the head's address
#      whose store is $SSL_SWEEPS_HOME/mlflow.db (one writer: this server) and whose artifacts go
#      to $SSL_SWEEPS_HOME/mlflow-artifacts, both on the shared folder;
#   4. sweeps/run.py on the head against that cluster: the sweep, or `--resume` of it when its
#      folder exists already (a requeued or resubmitted job: same --name, same storage);
#   5. stops the driver, MLflow and Ray at the end, whatever happened.
#
# SIGTERM to this shell (Slurm's --signal=B:TERM before the time limit, a preemption that sends the
# job's signal, or `scancel --batch --signal=TERM JOB`) is passed once to the driver, which stops
# gracefully (Tune saves the trials, the MLflow runs are closed, exit 143); then MLflow and Ray
# stop and the job requeues itself (`scontrol requeue`): its next run resumes the sweep.
#
# Settings (environment, from sweeps/slurm.py): SSL_SWEEPS_REPO, SSL_SWEEPS_PYTHON (the venv's
# python on the shared folder), SSL_SWEEPS_HOME, SSL_SWEEPS_SLURM_DIR (this sweep's job folder:
# logs, the Ray token), SSL_SWEEPS_SLURM_CPUS and SSL_SWEEPS_SLURM_GPUS (Ray's per node),
# SSL_SWEEPS_SLURM_JOIN_TIMEOUT, SSL_SWEEPS_SLURM_MLFLOW (1: start the MLflow server).
set -uo pipefail

py=$SSL_SWEEPS_PYTHON
repo=$SSL_SWEEPS_REPO
jobdir=$SSL_SWEEPS_SLURM_DIR
export PATH="$(dirname "$py"):$PATH"
# Every Ray process of the job (nodes, driver, trials) authenticates with the job's token.
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$jobdir/ray_token" RAY_USAGE_STATS_ENABLED=0

say() { printf '[%s] slurm job %s: %s\n' "$(date +%H:%M:%S)" "${SLURM_JOB_ID:-?}" "$*"; }

node_addr() {  # a node's address: its NodeAddr in Slurm (a name is resolved to IPv4)
    local addr
    addr=$(scontrol show node "$1" -o | tr ' ' '\n' | sed -n 's/^NodeAddr=//p')
    [ -n "$addr" ] || addr=$1
    if [[ ! $addr =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
        addr=$(getent ahostsv4 "$addr" | awk 'NR == 1 {print $1}')
    fi
    [ -n "$addr" ] || { echo "slurm_job: cannot resolve the address of node $1" >&2; return 1; }
    echo "$addr"
}

free_port() {  # a port nothing listens on at address $1 (Ray's fixed defaults may be taken by another job)
    "$py" -c 'import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"
}

# -- one node's Ray: `srun ... slurm_job.sh --ray-node` ---------------------------------------------
if [ "${1:-}" = "--ray-node" ]; then
    set -e
    addr=$(node_addr "$SLURMD_NODENAME")
    # SIGTERM (the end of the step) stops the node at once: no draining, the sweep is over or saved.
    export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0
    common=(--block --node-ip-address="$addr" --num-cpus="$SSL_SWEEPS_SLURM_CPUS" --num-gpus="$SSL_SWEEPS_SLURM_GPUS"
            --temp-dir="/tmp/ray-ssl-$SLURM_JOB_ID" --dashboard-agent-listen-port="$(free_port "$addr")"
            --disable-usage-stats)
    if [ "$SLURMD_NODENAME" = "$SSL_SWEEPS_SLURM_HEAD" ]; then
        role=(--head --port="$SSL_SWEEPS_SLURM_RAY_PORT" --dashboard-host=127.0.0.1
              --dashboard-port="$(free_port 127.0.0.1)" --ray-client-server-port="$(free_port 127.0.0.1)")
    else
        role=(--address="$SSL_SWEEPS_SLURM_HEAD_ADDR:$SSL_SWEEPS_SLURM_RAY_PORT")
        for _ in $(seq 1 "$SSL_SWEEPS_SLURM_JOIN_TIMEOUT"); do  # the head's GCS first
            (exec 3<> "/dev/tcp/$SSL_SWEEPS_SLURM_HEAD_ADDR/$SSL_SWEEPS_SLURM_RAY_PORT") 2> /dev/null && break
            sleep 1
        done
    fi
    set +e
    ray start "${role[@]}" "${common[@]}" &
    node=$!
    # The end of the step (SIGTERM): `ray start --block` stops the node's Ray processes; that is
    # this task's normal end (exit 0), not a failure for srun to report.
    trap 'stopping=1; kill -TERM "$node" 2> /dev/null' TERM
    wait "$node"
    rc=$?
    if [ -n "${stopping:-}" ]; then wait "$node"; exit 0; fi
    exit "$rc"
fi

# -- the batch script -------------------------------------------------------------------------------
driver="" ray_step="" mlflow="" stop_requested="" forwarded=""

on_term() {
    stop_requested=1
    if [ -n "$driver" ] && [ -z "$forwarded" ]; then
        forwarded=1
        say "SIGTERM: stopping the sweep gracefully; the job requeues itself and resumes it"
        kill -TERM "$driver" 2> /dev/null
    else
        say "SIGTERM: stopping; the job requeues itself"
    fi
}
trap on_term TERM

gone() {  # wait at most $2 seconds for process $1 to end; true when it has
    local i
    for ((i = 0; i < $2 * 5; i++)); do kill -0 "$1" 2> /dev/null || return 0; sleep 0.2; done
    ! kill -0 "$1" 2> /dev/null
}

stop() {  # stop process $1 (with its process group when $3 = group) by SIGTERM, SIGKILL after $2 s
    local target=$1
    [ "${3:-}" = group ] && target=-$1
    kill -TERM -- "$target" 2> /dev/null || return 0
    gone "$1" "$2" || kill -KILL -- "$target" 2> /dev/null
    wait "$1" 2> /dev/null
    return 0
}

stop_ray() {  # SIGTERM to the Ray step's tasks (`ray start --block` stops its node's processes);
    # srun itself would answer SIGTERM with SIGKILL to the step, the fallback after 60 s
    local step
    step=$(squeue -h -s -j "$SLURM_JOB_ID" -o '%i %j' | awk '$2 == "ssl-ray-nodes" {print $1; exit}')
    [ -z "$step" ] || scancel --signal=TERM "$step"
    gone "$ray_step" 60 || stop "$ray_step" 30
    wait "$ray_step" 2> /dev/null
}

cleanup() {  # idempotent: the driver, then MLflow, then Ray on every node
    if [ -n "$driver" ]; then stop "$driver" 120; driver=""; fi
    if [ -n "$mlflow" ]; then stop "$mlflow" 15 group; mlflow=""; say "MLflow server stopped"; fi
    if [ -n "$ray_step" ]; then stop_ray; ray_step=""; say "Ray stopped on every node"; fi
    rm -f "$jobdir/ray_token"
}
trap cleanup EXIT

mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
head=${nodes[0]}
head_addr=$(node_addr "$head") || exit 1
say "run $((${SLURM_RESTART_COUNT:-0} + 1)) on ${#nodes[@]} node(s): ${nodes[*]}; head $head ($head_addr)"

umask 077
"$py" -c 'import secrets; print(secrets.token_hex(32))' > "$jobdir/ray_token"  # a new token per run of the job
port=$(free_port "$head_addr")
export SSL_SWEEPS_SLURM_HEAD=$head SSL_SWEEPS_SLURM_HEAD_ADDR=$head_addr SSL_SWEEPS_SLURM_RAY_PORT=$port
gres=()
if [ "${SSL_SWEEPS_SLURM_GPUS:-0}" != 0 ]; then gres=(--gres="gpu:$SSL_SWEEPS_SLURM_GPUS"); fi
srun --job-name=ssl-ray-nodes --nodes="${#nodes[@]}" --ntasks="${#nodes[@]}" --ntasks-per-node=1 \
    --cpus-per-task="$SSL_SWEEPS_SLURM_CPUS" "${gres[@]}" --kill-on-bad-exit=0 \
    --output="$jobdir/ray-%N.log" --open-mode=append bash "$repo/sweeps/cluster/slurm_job.sh" --ray-node &
ray_step=$!
say "Ray starting: head $head_addr:$port, one worker on each other node (logs: $jobdir/ray-<node>.log)"

"$py" "$repo/sweeps/slurm.py" _job wait-nodes --address "$head_addr:$port" --nodes "${#nodes[@]}" \
    --timeout "$SSL_SWEEPS_SLURM_JOIN_TIMEOUT" &
wait $! || { rc=$?; [ -n "$stop_requested" ] || { say "Ray did not come up; ending the job"; exit 1; }; }

uri_args=()
if [ "${SSL_SWEEPS_SLURM_MLFLOW:-0}" = 1 ] && [ -z "$stop_requested" ]; then
    mlport=$(free_port "$head_addr")
    # (No MLflow job runner: its seven huey consumers serve GenAI features a sweep never asks for.)
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid mlflow server --host "$head_addr" --port "$mlport" --workers 1 \
        --backend-store-uri "sqlite:///$SSL_SWEEPS_HOME/mlflow.db" \
        --default-artifact-root "$SSL_SWEEPS_HOME/mlflow-artifacts" --no-serve-artifacts \
        >> "$jobdir/mlflow.log" 2>&1 < /dev/null &
    mlflow=$!
    "$py" "$repo/sweeps/slurm.py" _job wait-mlflow --uri "http://$head_addr:$mlport" --pid "$mlflow" --timeout 180 &
    wait $! || { [ -n "$stop_requested" ] || { say "MLflow did not start (log: $jobdir/mlflow.log)"; exit 1; }; }
    uri_args=(--mlflow "http://$head_addr:$mlport")
    say "MLflow serving http://$head_addr:$mlport (store: sqlite:///$SSL_SWEEPS_HOME/mlflow.db)"
fi

rc=143
if [ -z "$stop_requested" ]; then
    # run.py's arguments: the submitted ones, plus --resume when the sweep exists (a requeued job)
    mapfile -d '' -t args < <("$py" "$repo/sweeps/slurm.py" _job driver-args "${uri_args[@]}" -- "$@")
    [ ${#args[@]} -gt 0 ] || { say "cannot prepare the sweep's arguments"; exit 1; }
    say "sweep: python sweeps/run.py ${args[*]} --address $head_addr:$port"
    # Its own session: a signal for this shell's process group never reaches it; on_term forwards one.
    setsid "$py" "$repo/sweeps/run.py" "${args[@]}" --address "$head_addr:$port" &
    driver=$!
    [ -z "$stop_requested" ] || on_term
    while :; do
        wait "$driver"
        rc=$?
        if [ "$rc" -gt 128 ] && kill -0 "$driver" 2> /dev/null; then continue; fi  # a trap interrupted wait
        break
    done
    driver=""
    say "sweep driver exited with code $rc"
fi

cleanup
if [ -n "$stop_requested" ] && [ "$rc" = 143 ]; then
    say "requeueing job $SLURM_JOB_ID: its next run resumes the sweep"
    trap '' TERM  # Slurm ends this run of the job now
    scontrol requeue "$SLURM_JOB_ID" || say "requeue refused (the job was cancelled?)"
fi
exit "$rc"
