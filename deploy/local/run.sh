#!/usr/bin/env bash
# Runs N pspc workers on this host (free ports, placement INDEX/N/R) and one coordinator command against them,
# through a cluster file in a temporary directory; the workers stop when the command ends, fails or is interrupted.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
    cat <<'USAGE'
usage: deploy/local/run.sh --data DIR [--workers N] [--replication R] [options] -- COMMAND [ARGS...]

Starts N `pspc worker` processes on HOST (port 0: free ports), each with --placement i/N/R, writes a token
and a cluster file in a temporary directory, then runs `pspc COMMAND ARGS... --cluster FILE` (and --data DIR
unless ARGS give it) and stops the workers when it ends.

  --data DIR            dataset directory written by `pspc ingest` (required)
  --workers N           worker processes (default 3)
  --replication R       copies of each shard across the workers (default 1, at most N)
  --host HOST           address the workers listen on (default 127.0.0.1)
  --threads T           kernel threads per worker (default: the worker's, all cores)
  --deadline S          deadlineSeconds of the cluster file (default 120)
  --start-timeout S     seconds to wait for every worker to announce itself (default 120)
  --pspc PATH           the pspc binary (default: $PSPC, else pspc on PATH, else .build/release/pspc)
  --keep DIR            keep the cluster file, token and worker logs in DIR (created) instead of a temp dir
  --metrics             each worker also serves /metrics, /healthz and /readyz over HTTP on a free port of
                        HOST (--metrics-listen HOST:0); their addresses are printed once all serve

--xflip on|off in ARGS is given to the workers too. Example:
  deploy/local/run.sh --workers 3 --replication 2 --data data -- \
      denoise --method empirical --t 1 --input z.npy --output out.npy
USAGE
}

die() {
    echo "pspc local: $*" >&2
    exit 2
}

workers=3 replication=1 data="" host=127.0.0.1 threads="" deadline=120 start_timeout=120 pspc="${PSPC:-}" keep=""
metrics=0
while [ $# -gt 0 ]; do
    case "$1" in
    --workers) workers="${2:?--workers needs a value}"; shift 2 ;;
    --replication) replication="${2:?--replication needs a value}"; shift 2 ;;
    --data) data="${2:?--data needs a value}"; shift 2 ;;
    --host) host="${2:?--host needs a value}"; shift 2 ;;
    --threads) threads="${2:?--threads needs a value}"; shift 2 ;;
    --deadline) deadline="${2:?--deadline needs a value}"; shift 2 ;;
    --start-timeout) start_timeout="${2:?--start-timeout needs a value}"; shift 2 ;;
    --pspc) pspc="${2:?--pspc needs a value}"; shift 2 ;;
    --keep) keep="${2:?--keep needs a value}"; shift 2 ;;
    --metrics) metrics=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) usage >&2; die "unknown option '$1' (the pspc command goes after --)" ;;
    esac
done
[ $# -gt 0 ] || { usage >&2; die "no pspc command after --"; }
[ -n "$data" ] || die "--data DIR is required"
[ -f "$data/manifest.json" ] || die "$data/manifest.json not found: --data must be a directory written by pspc ingest"
[[ "$workers" =~ ^[1-9][0-9]*$ ]] || die "--workers must be a positive integer, got '$workers'"
[[ "$replication" =~ ^[1-9][0-9]*$ ]] || die "--replication must be a positive integer, got '$replication'"
[ "$replication" -le "$workers" ] || die "--replication $replication is more than --workers $workers"
[[ "$start_timeout" =~ ^[0-9]+$ ]] || die "--start-timeout must be a whole number of seconds"
if [ -z "$pspc" ]; then
    if command -v pspc >/dev/null 2>&1; then
        pspc="$(command -v pspc)"
    else
        pspc="$here/../../.build/release/pspc"
    fi
fi
[ -x "$pspc" ] || die "pspc binary '$pspc' is not executable (give --pspc PATH or set PSPC)"

command=("$@")
# The workers must hold the same images as the coordinator expects: follow its --xflip.
xflip=on
for ((a = 0; a < ${#command[@]}; a++)); do
    case "${command[a]}" in
    --xflip) xflip="${command[a + 1]:-on}" ;;
    --xflip=*) xflip="${command[a]#--xflip=}" ;;
    esac
done
has_data=0
for arg in "${command[@]}"; do
    case "$arg" in --data | --data=*) has_data=1 ;; esac
done

pids=()
coordinator=""
if [ -n "$keep" ]; then
    mkdir -p "$keep"
    dir="$(cd "$keep" && pwd)"
else
    dir="$(mktemp -d "${TMPDIR:-/tmp}/pspc-local.XXXXXX")"
fi

# Stops the coordinator and every worker (TERM, then KILL after 10 s) and removes the temporary directory.
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ -n "$coordinator" ]; then kill -TERM "$coordinator" 2>/dev/null || true; fi
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    local waited=0
    for pid in "${pids[@]}" $coordinator; do
        while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 100 ]; do
            sleep 0.1
            waited=$((waited + 1))
        done
        if kill -KILL "$pid" 2>/dev/null; then
            echo "pspc local: process $pid did not stop within 10 s of SIGTERM; killed" >&2
        fi
        wait "$pid" 2>/dev/null || true
    done
    if [ -z "$keep" ]; then rm -rf "$dir"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/token")

for ((i = 0; i < workers; i++)); do
    args=(worker --listen "$host:0" --data "$data" --placement "$i/$workers/$replication"
        --token-file "$dir/token" --xflip "$xflip")
    if [ -n "$threads" ]; then args+=(--threads "$threads"); fi
    if [ "$metrics" = 1 ]; then args+=(--metrics-listen "$host:0"); fi
    "$pspc" "${args[@]}" >"$dir/worker-$i.out" 2>"$dir/worker-$i.log" &
    pids+=($!)
done

# Each worker prints `pspc worker listening on HOST:PORT` once it serves (then, with --metrics, `pspc worker
# metrics on HOST:PORT`).
addresses=()
metrics_addresses=()
start=$SECONDS
for ((i = 0; i < workers; i++)); do
    while :; do
        line="$(grep -m1 '^pspc worker listening on ' "$dir/worker-$i.out" 2>/dev/null || true)"
        metrics_line="$(grep -m1 '^pspc worker metrics on ' "$dir/worker-$i.out" 2>/dev/null || true)"
        if [ -n "$line" ] && { [ "$metrics" = 0 ] || [ -n "$metrics_line" ]; }; then
            addresses+=("${line#pspc worker listening on }")
            if [ "$metrics" = 1 ]; then metrics_addresses+=("http://${metrics_line#pspc worker metrics on }/metrics"); fi
            break
        fi
        if ! kill -0 "${pids[i]}" 2>/dev/null; then
            echo "pspc local: worker $i exited before serving; its log:" >&2
            sed 's/^/  /' "$dir/worker-$i.log" >&2
            exit 1
        fi
        if [ $((SECONDS - start)) -ge "$start_timeout" ]; then
            echo "pspc local: worker $i did not announce itself within $start_timeout s; its log:" >&2
            sed 's/^/  /' "$dir/worker-$i.log" >&2
            exit 1
        fi
        sleep 0.1
    done
done

{
    printf '{\n  "workers": ['
    for ((i = 0; i < workers; i++)); do
        [ "$i" -eq 0 ] || printf ', '
        printf '"%s"' "${addresses[i]}"
    done
    printf '],\n  "tokenFile": "token",\n  "replication": %s,\n  "deadlineSeconds": %s\n}\n' "$replication" "$deadline"
} >"$dir/cluster.json"
echo "pspc local: $workers workers (replication $replication): ${addresses[*]}" >&2
if [ "$metrics" = 1 ]; then echo "pspc local: metrics: ${metrics_addresses[*]}" >&2; fi

run=("${command[@]}" --cluster "$dir/cluster.json")
if [ "$has_data" -eq 0 ]; then run+=(--data "$data"); fi
# In the background, so that a TERM or Ctrl-C reaches the trap at once, not after the command.
"$pspc" "${run[@]}" &
coordinator=$!
set +e
wait "$coordinator"
status=$?
set -e
coordinator=""
exit "$status"
