#!/usr/bin/env bash
# The records of a cluster, on its head: a PostgreSQL server (on the head's loopback) holding the
# MLflow store and every searched sweep's Optuna study, and the MLflow tracking server (on the
# head's address, for the workers' trials and SSH tunnels). cluster.onprem.yaml runs `start` on
# every `ray up`; it is idempotent: what runs already is left running, what exists is kept.
#
#   head_services.sh start     # PostgreSQL + MLflow up; exports MLFLOW_TRACKING_URI and
#                              # SSL_SWEEPS_OPTUNA_STORAGE into ~/.ssl-sweeps.env
#   head_services.sh stop      # both down (the data stays)
#   head_services.sh status    # one line each
#   head_services.sh head-ip   # the head's address: provider.head_ip of ~/ray_bootstrap_config.yaml
#
# Settings (environment, from ~/.ssl-sweeps.env): SSL_SWEEPS_DB_URL (a database server of your own,
# e.g. postgresql://USER@RDS-HOST:5432, with databases mlflow and optuna and the password in the
# head's ~/.pgpass: then no local PostgreSQL is run), SSL_SWEEPS_HOME (the shared folder: MLflow's
# artifacts go to $SSL_SWEEPS_HOME/mlflow-artifacts), SSL_SWEEPS_VENV (mlflow), SSL_SWEEPS_DB_DIR
# (the database's folder on the head's own disk; default ~/ssl-sweeps-db, or
# /var/lib/ssl-sweeps/db when run as root, since PostgreSQL never runs as root: it then runs as
# the `postgres` user), SSL_SWEEPS_DB_PORT (5433), SSL_SWEEPS_MLFLOW_PORT (5000).
# No password appears in a URL or on a command line: it is generated once and kept in ~/.pgpass.
# Needs PostgreSQL's server binaries (Debian/Ubuntu: apt-get install postgresql).
set -euo pipefail

DB_PORT=${SSL_SWEEPS_DB_PORT:-5433}
MLFLOW_PORT=${SSL_SWEEPS_MLFLOW_PORT:-5000}
ROLE=sslsweeps
STATE=$HOME/.ssl-sweeps-head          # pid and log files of the MLflow server
if [ "$(id -u)" = 0 ]; then
    DB_DIR=${SSL_SWEEPS_DB_DIR:-/var/lib/ssl-sweeps/db}
    as_db() { runuser -u postgres -- "$@"; }
else
    DB_DIR=${SSL_SWEEPS_DB_DIR:-$HOME/ssl-sweeps-db}
    as_db() { "$@"; }
fi

say() { echo "head_services: $*"; }
die() { echo "head_services: error: $*" >&2; exit 1; }

head_ip() {  # $SSL_SWEEPS_HEAD_IP, else the on-prem config's provider.head_ip, else (a cloud
    # head) the first address of `hostname -I`, its private one
    if [ -n "${SSL_SWEEPS_HEAD_IP:-}" ]; then echo "$SSL_SWEEPS_HEAD_IP"; return; fi
    local config=$HOME/ray_bootstrap_config.yaml ip=""
    if [ -f "$config" ]; then
        ip=$("${SSL_SWEEPS_VENV:?}/bin/python" -c 'import sys, yaml
print(yaml.safe_load(open(sys.argv[1]))["provider"].get("head_ip") or "")' "$config")
    fi
    [ -n "$ip" ] || ip=$(hostname -I | awk '{print $1}')
    [ -n "$ip" ] || die "cannot tell the head's address: set SSL_SWEEPS_HEAD_IP"
    echo "$ip"
}

pg_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$dir" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; return; fi
    command -v pg_ctl >/dev/null && { dirname "$(command -v pg_ctl)"; return; }
    die "PostgreSQL's server is not installed on the head (Debian/Ubuntu: sudo apt-get install postgresql)"
}

# -- PostgreSQL -------------------------------------------------------------------------------
db_url() {
    if [ -n "${SSL_SWEEPS_DB_URL:-}" ]; then echo "${SSL_SWEEPS_DB_URL%/}/$1"; else echo "postgresql://$ROLE@127.0.0.1:$DB_PORT/$1"; fi
}

start_db() {
    if [ -n "${SSL_SWEEPS_DB_URL:-}" ]; then
        psql "$(db_url mlflow)" -qtAc "SELECT 1" > /dev/null && psql "$(db_url optuna)" -qtAc "SELECT 1" > /dev/null \
            || die "cannot reach databases mlflow and optuna at $SSL_SWEEPS_DB_URL (password in ~/.pgpass?)"
        say "PostgreSQL: using $SSL_SWEEPS_DB_URL"
        return
    fi
    local bin; bin=$(pg_bin)
    mkdir -p "$STATE"
    if [ ! -s "$DB_DIR/PG_VERSION" ]; then
        say "creating the database cluster in $DB_DIR"
        local pw; pw=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
        mkdir -p "$(dirname "$DB_DIR")"
        umask 077
        mkdir -p "$DB_DIR"
        if [ "$(id -u)" = 0 ]; then chown postgres: "$DB_DIR"; fi
        local pwfile; pwfile=$(mktemp)
        echo "$pw" > "$pwfile"
        if [ "$(id -u)" = 0 ]; then chown postgres: "$pwfile"; fi
        as_db "$bin/initdb" -D "$DB_DIR" -U "$ROLE" --pwfile="$pwfile" --auth-local=scram-sha-256 \
            --auth-host=scram-sha-256 -E UTF8 > "$STATE/initdb.log" 2>&1 \
            || { rm -f "$pwfile"; die "initdb failed: $(tail -n 1 "$STATE/initdb.log")"; }
        rm -f "$pwfile"
        # The password, for every client on the head (MLflow, the sweep drivers, psql).
        touch ~/.pgpass && chmod 600 ~/.pgpass
        grep -v "^127.0.0.1:$DB_PORT:\*:$ROLE:" ~/.pgpass > ~/.pgpass.new || true
        echo "127.0.0.1:$DB_PORT:*:$ROLE:$pw" >> ~/.pgpass.new && mv ~/.pgpass.new ~/.pgpass
        umask 022
    fi
    if as_db "$bin/pg_ctl" -D "$DB_DIR" status > /dev/null 2>&1; then
        say "PostgreSQL is running ($DB_DIR, 127.0.0.1:$DB_PORT)"
    else
        as_db "$bin/pg_ctl" -D "$DB_DIR" -l "$DB_DIR/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $DB_PORT -k $DB_DIR" start > /dev/null \
            || die "PostgreSQL did not start: $(tail -n 3 "$DB_DIR/server.log" 2>/dev/null | tr '\n' ' ')"
        say "PostgreSQL started ($DB_DIR, 127.0.0.1:$DB_PORT)"
    fi
    local db
    for db in mlflow optuna; do
        if [ "$(psql "$(db_url postgres)" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
            psql "$(db_url postgres)" -qc "CREATE DATABASE $db" && say "database $db created"
        fi
    done
}

stop_db() {
    [ -z "${SSL_SWEEPS_DB_URL:-}" ] || return 0
    local bin; bin=$(pg_bin)
    if [ -s "$DB_DIR/PG_VERSION" ] && as_db "$bin/pg_ctl" -D "$DB_DIR" status > /dev/null 2>&1; then
        as_db "$bin/pg_ctl" -D "$DB_DIR" -m fast -w -t 60 stop > /dev/null && say "PostgreSQL stopped"
    fi
}

# -- MLflow -----------------------------------------------------------------------------------
mlflow_answers() {  # the server answers on its REST API
    "${SSL_SWEEPS_VENV:?}/bin/python" - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(f"http://{sys.argv[1]}/health", timeout=3).read()
EOF
}

start_mlflow() {
    local ip; ip=$(head_ip)
    local where="$ip:$MLFLOW_PORT"
    if mlflow_answers "$where"; then
        say "MLflow is serving http://$where"
    else
        mkdir -p "$STATE" "${SSL_SWEEPS_HOME:?}/mlflow-artifacts"
        nohup "${SSL_SWEEPS_VENV:?}/bin/mlflow" server --host "$ip" --port "$MLFLOW_PORT" --workers 2 \
            --backend-store-uri "$(db_url mlflow)" --artifacts-destination "$SSL_SWEEPS_HOME/mlflow-artifacts" \
            > "$STATE/mlflow.log" 2>&1 < /dev/null &
        echo $! > "$STATE/mlflow.pid"
        local i
        for i in $(seq 1 120); do  # its first start creates MLflow's tables: up to a minute
            mlflow_answers "$where" && break
            kill -0 "$(cat "$STATE/mlflow.pid")" 2>/dev/null || die "MLflow did not start: $(tail -n 3 "$STATE/mlflow.log" | tr '\n' ' ')"
            sleep 1
        done
        mlflow_answers "$where" || die "MLflow does not answer on http://$where after 120 s (log: $STATE/mlflow.log)"
        say "MLflow serving http://$where (store: $(db_url mlflow), artifacts: $SSL_SWEEPS_HOME/mlflow-artifacts)"
    fi
    # Every process on the head (the sweep drivers) logs there and keeps its studies here.
    local env=$HOME/.ssl-sweeps.env
    grep -v -e '^export MLFLOW_TRACKING_URI=' -e '^export SSL_SWEEPS_OPTUNA_STORAGE=' "$env" > "$env.new" 2>/dev/null || true
    { echo "export MLFLOW_TRACKING_URI=http://$where"; echo "export SSL_SWEEPS_OPTUNA_STORAGE=$(db_url optuna)"; } >> "$env.new"
    mv "$env.new" "$env"
}

stop_mlflow() {
    if [ -s "$STATE/mlflow.pid" ] && kill "$(cat "$STATE/mlflow.pid")" 2>/dev/null; then
        say "MLflow stopped"
    fi
    rm -f "$STATE/mlflow.pid"
}

case "${1:-}" in
    start) start_db; start_mlflow ;;
    stop) stop_mlflow; stop_db ;;
    status)
        if as_db "$(pg_bin)/pg_ctl" -D "$DB_DIR" status > /dev/null 2>&1; then say "PostgreSQL: running ($DB_DIR)"; else say "PostgreSQL: stopped"; fi
        if mlflow_answers "$(head_ip):$MLFLOW_PORT"; then say "MLflow: http://$(head_ip):$MLFLOW_PORT"; else say "MLflow: not answering"; fi ;;
    head-ip) head_ip ;;
    *) echo "usage: head_services.sh start|stop|status|head-ip" >&2; exit 2 ;;
esac
