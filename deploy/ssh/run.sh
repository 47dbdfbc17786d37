#!/usr/bin/env bash
# Starts one pspc worker per line of a hosts file over ssh (placement INDEX/N/R, a fresh token sent over ssh),
# runs one coordinator command here against them, and stops every worker when the command ends, fails or is
# interrupted (closing a worker's ssh session stops it too).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
    cat <<'USAGE'
usage: deploy/ssh/run.sh --hosts FILE --data REMOTE_DIR [options] -- COMMAND [ARGS...]

FILE lists one worker per line, [user@]host[:port] ([user@][v6addr]:port for IPv6; # comments and blank
lines are skipped); the same host may appear several times with different ports. Worker i (line i, from 0)
runs `ssh host PSPC worker --listen LISTEN_HOST:port --data REMOTE_DIR --placement i/N/R ...`; the
coordinator runs here as `pspc COMMAND ARGS... --cluster FILE` with the workers at host:port.

  --hosts FILE          the hosts file (required)
  --data DIR            dataset directory on the worker hosts (required)
  --replication R       copies of each shard across the workers (default 1, at most N)
  --pspc PATH           pspc binary on the worker hosts (default: pspc, found on their PATH)
  --local-pspc PATH     pspc binary here, for the coordinator (default: $PSPC, else pspc on PATH,
                        else .build/release/pspc of this checkout)
  --port P              port for lines without one (default 7070; 0: a free port, taken from the worker's line)
  --listen-host HOST    address the workers bind (default 0.0.0.0)
  --threads T           kernel threads per worker (default: the worker's, all cores)
  --deadline S          deadlineSeconds of the cluster file (default 120)
  --start-timeout S     seconds to wait for every worker to announce itself (default 180)
  --keep DIR            keep the cluster file, token and worker logs in DIR instead of a temp dir

ssh options come from PSPC_SSH_OPTS (default: -o BatchMode=yes -o ConnectTimeout=10), split on spaces.
--xflip on|off in ARGS is given to the workers too.
USAGE
}

die() {
    echo "pspc ssh: $*" >&2
    exit 2
}

# Quotes one word for a POSIX shell.
q() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

hosts_file="" data="" replication=1 remote_pspc=pspc local_pspc="${PSPC:-}" port=7070 listen_host=0.0.0.0
threads="" deadline=120 start_timeout=180 keep=""
while [ $# -gt 0 ]; do
    case "$1" in
    --hosts) hosts_file="${2:?--hosts needs a value}"; shift 2 ;;
    --data) data="${2:?--data needs a value}"; shift 2 ;;
    --replication) replication="${2:?--replication needs a value}"; shift 2 ;;
    --pspc) remote_pspc="${2:?--pspc needs a value}"; shift 2 ;;
    --local-pspc) local_pspc="${2:?--local-pspc needs a value}"; shift 2 ;;
    --port) port="${2:?--port needs a value}"; shift 2 ;;
    --listen-host) listen_host="${2:?--listen-host needs a value}"; shift 2 ;;
    --threads) threads="${2:?--threads needs a value}"; shift 2 ;;
    --deadline) deadline="${2:?--deadline needs a value}"; shift 2 ;;
    --start-timeout) start_timeout="${2:?--start-timeout needs a value}"; shift 2 ;;
    --keep) keep="${2:?--keep needs a value}"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) usage >&2; die "unknown option '$1' (the pspc command goes after --)" ;;
    esac
done
[ $# -gt 0 ] || { usage >&2; die "no pspc command after --"; }
[ -n "$hosts_file" ] || die "--hosts FILE is required"
[ -r "$hosts_file" ] || die "cannot read the hosts file '$hosts_file'"
[ -n "$data" ] || die "--data DIR (on the worker hosts) is required"
[[ "$replication" =~ ^[1-9][0-9]*$ ]] || die "--replication must be a positive integer, got '$replication'"
[[ "$port" =~ ^[0-9]+$ ]] || die "--port must be a number, got '$port'"
[[ "$start_timeout" =~ ^[0-9]+$ ]] || die "--start-timeout must be a whole number of seconds"
if [ -z "$local_pspc" ]; then
    if command -v pspc >/dev/null 2>&1; then
        local_pspc="$(command -v pspc)"
    else
        local_pspc="$here/../../.build/release/pspc"
    fi
fi
[ -x "$local_pspc" ] || die "pspc binary '$local_pspc' is not executable (give --local-pspc PATH or set PSPC)"
read -r -a ssh_opts <<<"${PSPC_SSH_OPTS--o BatchMode=yes -o ConnectTimeout=10}"

# Hosts: ssh target ([user@]host) and the address the coordinator dials (host:port).
targets=() hosts=() ports=()
while IFS= read -r line || [ -n "$line" ]; do
    line="${line%%#*}"
    line="$(printf '%s' "$line" | tr -d '[:space:]')"
    [ -n "$line" ] || continue
    user=""
    if [[ "$line" == *@* ]]; then
        user="${line%%@*}@"
        line="${line#*@}"
    fi
    if [[ "$line" =~ ^\[([^]]+)\](:([0-9]+))?$ ]]; then
        host="${BASH_REMATCH[1]}" p="${BASH_REMATCH[3]:-$port}" dial="[${BASH_REMATCH[1]}]"
    elif [[ "$line" =~ ^([^:]+)(:([0-9]+))?$ ]]; then
        host="${BASH_REMATCH[1]}" p="${BASH_REMATCH[3]:-$port}" dial="${BASH_REMATCH[1]}"
    else
        die "$hosts_file: cannot read '$line' as [user@]host[:port]"
    fi
    targets+=("$user$host")
    hosts+=("$dial")
    ports+=("$p")
done <"$hosts_file"
workers=${#targets[@]}
[ "$workers" -gt 0 ] || die "$hosts_file lists no hosts"
[ "$replication" -le "$workers" ] || die "--replication $replication is more than the $workers hosts"

command=("$@")
xflip=on
for ((a = 0; a < ${#command[@]}; a++)); do
    case "${command[a]}" in
    --xflip) xflip="${command[a + 1]:-on}" ;;
    --xflip=*) xflip="${command[a]#--xflip=}" ;;
    esac
done

pids=() fds=()
coordinator=""
if [ -n "$keep" ]; then
    mkdir -p "$keep"
    dir="$(cd "$keep" && pwd)"
else
    dir="$(mktemp -d "${TMPDIR:-/tmp}/pspc-ssh.XXXXXX")"
fi

# Closes the write ends of the workers' stdin fifos.
close_fds() {
    local fd
    for fd in "${fds[@]}"; do exec {fd}>&-; done
}

# Closing a worker's stdin makes its remote shell stop the worker (TERM); the ssh clients that do not end
# within 15 s are killed, which closes their sessions.
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ -n "$coordinator" ]; then kill -TERM "$coordinator" 2>/dev/null || true; fi
    local pid
    close_fds 2>/dev/null || true
    local waited=0
    for pid in "${pids[@]}" $coordinator; do
        while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 150 ]; do
            sleep 0.1
            waited=$((waited + 1))
        done
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -z "$keep" ]; then rm -rf "$dir"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/token")
token="$(cat "$dir/token")"

# On the worker host (any POSIX sh): the first line of stdin is the token, kept in a private temp dir; the
# worker runs in the background; when stdin closes (launcher done or gone) it gets TERM (KILL 10 s later); the
# shell ends with it.
remote_script() {
    local i=$1 args
    args="worker --listen $(q "$listen_host:${ports[i]}") --data $(q "$data") --placement $i/$workers/$replication"
    args+=" --xflip $(q "$xflip")"
    if [ -n "$threads" ]; then args+=" --threads $(q "$threads")"; fi
    cat <<SCRIPT
umask 077
d=\$(mktemp -d) || exit 1
trap 'rm -rf "\$d"' EXIT
IFS= read -r t || exit 1
printf '%s\n' "\$t" > "\$d/token"
exec 3<&0
$(q "$remote_pspc") $args --token-file "\$d/token" &
p=\$!
{
    cat <&3 >/dev/null
    kill -TERM \$p 2>/dev/null
    n=0
    while kill -0 \$p 2>/dev/null && [ \$n -lt 10 ]; do sleep 1; n=\$((n + 1)); done
    kill -KILL \$p 2>/dev/null
} </dev/null >/dev/null 2>&1 &
exec 3<&-
wait \$p
SCRIPT
}

for ((i = 0; i < workers; i++)); do
    rm -f "$dir/stdin-$i"
    mkfifo "$dir/stdin-$i"
    script="$(remote_script "$i")"
    # Not holding the other workers' stdin open, so that closing one reaches its worker.
    (
        close_fds
        exec ssh "${ssh_opts[@]}" "${targets[i]}" "exec sh -c $(q "$script")"
    ) <"$dir/stdin-$i" >"$dir/worker-$i.out" 2>"$dir/worker-$i.log" &
    pids+=($!)
    exec {fd}>"$dir/stdin-$i"
    fds+=("$fd")
    printf '%s\n' "$token" >&"$fd"
done

addresses=()
start=$SECONDS
for ((i = 0; i < workers; i++)); do
    while :; do
        line="$(grep -m1 '^pspc worker listening on ' "$dir/worker-$i.out" 2>/dev/null | tr -d '\r' || true)"
        if [ -n "$line" ]; then
            # The worker names the address it binds (e.g. 0.0.0.0); the coordinator dials the host of the file.
            announced="${line#pspc worker listening on }"
            addresses+=("${hosts[i]}:${announced##*:}")
            break
        fi
        if ! kill -0 "${pids[i]}" 2>/dev/null; then
            echo "pspc ssh: the worker on ${targets[i]} (line $((i + 1))) exited before serving; its log:" >&2
            sed 's/^/  /' "$dir/worker-$i.log" >&2
            exit 1
        fi
        if [ $((SECONDS - start)) -ge "$start_timeout" ]; then
            echo "pspc ssh: the worker on ${targets[i]} did not announce itself within $start_timeout s; its log:" >&2
            sed 's/^/  /' "$dir/worker-$i.log" >&2
            exit 1
        fi
        sleep 0.2
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
echo "pspc ssh: $workers workers (replication $replication): ${addresses[*]}" >&2

(
    close_fds
    exec "$local_pspc" "${command[@]}" --cluster "$dir/cluster.json"
) &
coordinator=$!
set +e
wait "$coordinator"
status=$?
set -e
coordinator=""
exit "$status"
