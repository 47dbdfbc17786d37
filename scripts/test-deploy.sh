#!/usr/bin/env bash
# Tests of the launchers under deploy/: the local and ssh launchers and the Slurm batch script each run a
# real cluster on this host and must reproduce the in-process result; the Kubernetes manifests are validated
# against the API schemas (strict) and the systemd unit with systemd-analyze. Installs what is missing
# (apt-get, pip), prints one PASS/FAIL line per check and `N passed, M failed`, exits non-zero on a failure,
# and stops every process it started, whatever happens.
#   PSPC_BIN=path   use this pspc binary instead of building one (`swift build -c release --product pspc`)
#   KEEP=1          keep the work directory (logs, outputs)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"

work="$(mktemp -d "${TMPDIR:-/tmp}/pspc-test-deploy.XXXXXX")"
mkdir -p "$work/logs" "$work/pids" "$work/tmp"
: >"$work/results"
: >"$work/timings"
# PASS/FAIL lines go to the terminal (fd 3) while each part's own output goes to its log.
exec 3>&1

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

pass() {
    echo "PASS $*" | tee -a "$work/results" >&3
}
fail() {
    echo "FAIL $*" | tee -a "$work/results" >&3
}

# Every daemon or launcher a part starts in the background records its pid in $work/pids/NAME, and
# stop_pid stops it (TERM, KILL after 10 s); cleanup stops whatever is left.
stop_pid() {
    local file="$work/pids/$1" pid n=0
    [ -f "$file" ] || return 0
    pid="$(cat "$file")"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null && [ "$n" -lt 100 ]; do
            sleep 0.1
            n=$((n + 1))
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

# Cancels the jobs of the test's Slurm cluster (KillWait=5), stops its daemons, then kills any step daemon
# left in its spool directory.
slurm_stop() {
    local conf="$work/slurm/slurm.conf" jobs n=0 pid
    if [ -f "$work/pids/slurmctld" ] && [ -f "$conf" ]; then
        jobs="$(SLURM_CONF="$conf" squeue -h -o %i 2>/dev/null || true)"
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086 # one job id per word
            SLURM_CONF="$conf" scancel $jobs 2>/dev/null || true
            while [ -n "$(SLURM_CONF="$conf" squeue -h -o %i 2>/dev/null || true)" ] && [ "$n" -lt 100 ]; do
                sleep 0.2
                n=$((n + 1))
            done
        fi
    fi
    stop_pid slurmctld
    stop_pid slurmd
    for pid in $(pgrep -x slurmstepd || true); do
        case "$(readlink "/proc/$pid/cwd" 2>/dev/null || true)" in
        "$work"/*) kill -KILL "$pid" 2>/dev/null || true ;;
        esac
    done
}

summary_done=0
total_start="$(now)"
# Timings and the closing `N passed, M failed` line (also when interrupted).
summary() {
    summary_done=1
    echo "== timings" >&3
    cat "$work/timings" >&3
    printf '%-12s %8s s\n' total "$(elapsed "$total_start")" >&3
    echo "$(grep -c '^PASS' "$work/results" || true) passed, $(grep -c '^FAIL' "$work/results" || true) failed" >&3
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ "$summary_done" -eq 0 ]; then
        if [ "$status" -eq 130 ] || [ "$status" -eq 143 ]; then fail "interrupted (exit $status)"; fi
        summary
    fi
    local file
    # Slurm first (its jobs' workers go with it), munged last.
    slurm_stop
    for file in sshd local-term; do stop_pid "$file"; done
    for file in "$work"/pids/*; do
        [ -e "$file" ] || continue
        [ "$(basename "$file")" = munged ] && continue
        stop_pid "$(basename "$file")"
    done
    stop_pid munged
    # Any worker still serving this run's dataset was started by this run.
    pkill -KILL -f -- "--data $work/data" 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then
        echo "work directory kept: $work" >&3
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs part NAME (function part_NAME) in a subshell with errexit, its output in logs/NAME.log; an unexpected
# error fails the part and shows the end of its log.
run_part() {
    local name=$1 start status
    start="$(now)"
    echo "== $name" >&3
    set +e
    (
        set -e
        trap 'exit 130' INT
        trap 'exit 143' TERM
        "part_$name"
    ) >"$work/logs/$name.log" 2>&1
    status=$?
    set -e
    if [ "$status" -eq 130 ] || [ "$status" -eq 143 ]; then
        fail "$name: interrupted"
        exit "$status"
    fi
    if [ "$status" -ne 0 ]; then
        fail "$name: stopped by an error (exit $status); end of its log:"
        tail -n 25 "$work/logs/$name.log" | tr '\r' '\n' | grep -v '^ *$' | tail -n 15 | sed 's/^/    /' >&3
    fi
    local took
    took="$(elapsed "$start")"
    echo "   ($name: $took s)" >&3
    printf '%-12s %8s s\n' "$name" "$took" >>"$work/timings"
    return 0
}

apt_updated=0
# Installs the Debian packages that are not installed yet.
apt_ensure() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    if [ "$apt_updated" -eq 0 ]; then
        apt-get update -q
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# compare LABEL OUT: OUT must equal the in-process reference (same shape, max abs diff <= 1e-5).
compare() {
    local label=$1 out=$2 verdict
    if [ ! -f "$out" ]; then
        fail "$label: no output $out"
        return 0
    fi
    if verdict="$(python3 - "$work/ref.npy" "$out" <<'PY'
import sys
import numpy as np
ref, out = np.load(sys.argv[1]), np.load(sys.argv[2])
if ref.shape != out.shape:
    print(f"shape {out.shape}, reference {ref.shape}")
    sys.exit(1)
diff = float(np.max(np.abs(ref.astype(np.float64) - out.astype(np.float64))))
print(f"max abs diff {diff:.3g} over {out.shape}")
sys.exit(0 if diff <= 1e-5 else 1)
PY
    )"; then
        pass "$label: output equals the in-process reference ($verdict)"
    else
        fail "$label: output differs from the in-process reference ($verdict)"
    fi
}

# no_workers_left LABEL [PATTERN]: no process serving this run's dataset (or matching PATTERN) is left, 15 s
# after the launcher ended.
no_workers_left() {
    local label=$1 pattern=${2:---data $work/data} n=0
    while pgrep -f -- "$pattern" >/dev/null && [ "$n" -lt 150 ]; do
        sleep 0.1
        n=$((n + 1))
    done
    if pgrep -af -- "$pattern"; then
        fail "$label: workers still running after the launcher ended"
    else
        pass "$label: every worker stopped"
    fi
}

denoise_args=(denoise --method pspc-square --patch-size 7 --t 1.09 --input "$work/q/z.npy")

part_setup() {
    apt_ensure dataset-fashion-mnist
    python3 -c 'import numpy' 2>/dev/null || python3 -m pip install -q numpy
    if [ -n "${PSPC_BIN:-}" ]; then
        cp "$PSPC_BIN" "$work/pspc"
    else
        swift build -c release --product pspc
        # A copy, so that a rebuild in this tree during the test does not swap the binary under it.
        cp "$(swift build -c release --show-bin-path)/pspc" "$work/pspc"
    fi
    "$work/pspc" ingest --source fashion-mnist:train --limit 1000 --shards 7 --out "$work/data"
    "$work/pspc" queries --source fashion-mnist:test --t 1.09 --count 16 --out "$work/q"
    "$work/pspc" "${denoise_args[@]}" --data "$work/data" --output "$work/ref.npy"
    pass "setup: built pspc, ingested 1000 images as 7 shards, 16 queries at t = 1.09, in-process reference"
}

part_lint() {
    local scripts=(deploy/local/run.sh deploy/ssh/run.sh deploy/slurm/pspc.sbatch deploy/slurm/pspc-gpu.sbatch
        scripts/test-deploy.sh)
    local s ok=1
    for s in "${scripts[@]}"; do bash -n "$s" || ok=0; done
    if apt_ensure shellcheck && command -v shellcheck >/dev/null; then
        if shellcheck -S warning "${scripts[@]}"; then
            pass "lint: bash -n and shellcheck (warnings and errors) clean on the launchers and this script"
        else
            fail "lint: shellcheck reports warnings (see logs/lint.log)"
        fi
    elif [ "$ok" -eq 1 ]; then
        pass "lint: bash -n clean (shellcheck not available)"
    fi
    [ "$ok" -eq 1 ] || fail "lint: bash -n finds syntax errors"
}

part_local() {
    local status=0
    TMPDIR="$work/tmp" deploy/local/run.sh --workers 3 --replication 2 --data "$work/data" --pspc "$work/pspc" \
        --metrics -- "${denoise_args[@]}" --output "$work/local.npy" 2>"$work/local.err" || status=$?
    cat "$work/local.err"
    [ "$status" -eq 0 ] || fail "local: the launcher ended with status $status"
    compare "local (3 workers, replication 2)" "$work/local.npy"
    if [ "$(grep '^pspc local: metrics: ' "$work/local.err" | grep -o 'http://127.0.0.1:[0-9]*/metrics' | wc -l)" -eq 3 ]; then
        pass "local: --metrics lists the 3 workers' metrics addresses"
    else
        fail "local: --metrics did not list 3 metrics addresses"
    fi
    no_workers_left "local"

    # A long job stopped by SIGTERM once its workers serve: the launcher must end and take its workers along.
    TMPDIR="$work/tmp" deploy/local/run.sh --workers 2 --data "$work/data" --pspc "$work/pspc" \
        --keep "$work/local-term" -- sample --method empirical --steps 400 --count 64 --out "$work/local-samples" \
        >"$work/logs/local-term.log" 2>&1 &
    echo $! >"$work/pids/local-term"
    local n=0
    until [ -s "$work/local-term/cluster.json" ] || [ "$n" -ge 300 ]; do
        sleep 0.1
        n=$((n + 1))
    done
    sleep 1
    local start
    start="$(now)"
    kill -TERM "$(cat "$work/pids/local-term")"
    local status=0
    wait "$(cat "$work/pids/local-term")" || status=$?
    rm -f "$work/pids/local-term"
    if grep -q 'did not stop within' "$work/logs/local-term.log"; then
        grep 'did not stop within' "$work/logs/local-term.log"
        echo "   note: a worker did not exit within 10 s of SIGTERM and was killed (a pspc worker exit hang)" >&3
    fi
    if [ "$status" -eq 143 ]; then
        pass "local: SIGTERM ends the launcher (exit 143) in $(elapsed "$start") s"
    else
        fail "local: SIGTERM to the launcher gave exit $status, not 143"
    fi
    no_workers_left "local after SIGTERM"
}

part_slurm() {
    apt_ensure slurm-wlm munge
    local d="$work/slurm"
    mkdir -p "$d/state" "$d/spool"
    # munged: reuse a running one, else start one (stopped by cleanup).
    if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        install -d -o munge -g munge /run/munge
        runuser -u munge -- munged
        local n=0
        until [ -s /run/munge/munged.pid ] || [ "$n" -ge 50 ]; do
            sleep 0.1
            n=$((n + 1))
        done
        cp /run/munge/munged.pid "$work/pids/munged"
    fi
    local node
    node="$(slurmd -C | head -n 1)"
    cat >"$d/slurm.conf" <<EOF
ClusterName=pspctest
SlurmctldHost=$(hostname -s)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool
SlurmctldPidFile=$d/slurmctld.pid
SlurmdPidFile=$d/slurmd.pid
SlurmctldLogFile=$d/slurmctld.log
SlurmdLogFile=$d/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
KillWait=5
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$d/slurm.conf"
    slurmctld
    slurmd
    n=0
    until [ -s "$d/slurmctld.pid" ] && [ -s "$d/slurmd.pid" ] || [ "$n" -ge 100 ]; do
        sleep 0.1
        n=$((n + 1))
    done
    cp "$d/slurmctld.pid" "$work/pids/slurmctld"
    cp "$d/slurmd.pid" "$work/pids/slurmd"
    n=0
    until [ "$(sinfo -h -o %T 2>/dev/null)" = idle ]; do
        [ "$n" -lt 60 ] || { cat "$d/slurmctld.log" "$d/slurmd.log"; false; }
        sleep 1
        n=$((n + 1))
    done
    pass "slurm: slurmctld and slurmd up, node idle ($(sinfo -h -o '%N %c CPUs'))"

    # 3 tasks on a 2-core node: --overcommit. In the background, so that Ctrl-C (which does not reach
    # timeout's process group) interrupts the wait.
    local status=0
    (cd "$work" && PSPC="$work/pspc" PSPC_DATA="$work/data" PSPC_REPLICATION=2 PSPC_START_TIMEOUT=120 \
        PSPC_METRICS_PORT=0 \
        exec timeout 300 sbatch --wait --ntasks=3 --overcommit --output="$d/job-%j.out" \
        "$root/deploy/slurm/pspc.sbatch" "${denoise_args[@]}" --output "$work/slurm.npy") &
    echo $! >"$work/pids/sbatch"
    wait "$(cat "$work/pids/sbatch")" || status=$?
    rm -f "$work/pids/sbatch"
    cat "$d"/job-*.out
    if [ "$status" -eq 0 ]; then
        pass "slurm: sbatch --wait --ntasks=3 deploy/slurm/pspc.sbatch ended with status 0"
    else
        fail "slurm: the batch job ended with status $status"
    fi
    compare "slurm (3 tasks, replication 2)" "$work/slurm.npy"
    if [ "$(cat "$d"/job-*.out | grep -c '^pspc slurm: worker [0-9] metrics on http://.*:[0-9]*/metrics$')" -eq 3 ]; then
        pass "slurm: PSPC_METRICS_PORT=0 gives each of the 3 workers a metrics address in the job output"
    else
        fail "slurm: the job output does not list 3 workers' metrics addresses"
    fi
    no_workers_left "slurm"

    # The GPU variant: torch workers through pspc-gpu.sbatch. This node has no GPU, so the gres request is
    # cleared on the command line and the workers run on the CPU (PSPC_DEVICE=cpu); the rest is what a GPU node
    # runs. Its directives must ask for one GPU per task.
    if grep -q '^#SBATCH --gres=gpu:1$' deploy/slurm/pspc-gpu.sbatch; then
        pass "slurm gpu: pspc-gpu.sbatch asks for --gres=gpu:1 per task"
    else
        fail "slurm gpu: pspc-gpu.sbatch lacks #SBATCH --gres=gpu:1"
    fi
    local python="${PSPC_VENV:-$root/.venv}/bin/python"
    status=0
    (cd "$work" && PSPC="$work/pspc" PSPC_DATA="$work/data" PSPC_REPLICATION=2 PSPC_START_TIMEOUT=120 \
        PSPC_DEVICE=cpu PSPC_PYTHON="$python" PSPC_SCRIPTS="$root/scripts" PSPC_THREADS=1 \
        PSPC_SBATCH="$root/deploy/slurm/pspc.sbatch" \
        exec timeout 300 sbatch --wait --ntasks=2 --ntasks-per-node=2 --gres=none --overcommit \
        --output="$d/gpu-job-%j.out" "$root/deploy/slurm/pspc-gpu.sbatch" "${denoise_args[@]}" \
        --output "$work/slurm-gpu.npy") &
    echo $! >"$work/pids/sbatch"
    wait "$(cat "$work/pids/sbatch")" || status=$?
    rm -f "$work/pids/sbatch"
    cat "$d"/gpu-job-*.out
    if [ "$status" -eq 0 ] && grep -q '^pspc slurm: 2 torch workers' "$d"/gpu-job-*.out; then
        pass "slurm gpu: sbatch --wait --ntasks=2 deploy/slurm/pspc-gpu.sbatch ran 2 torch workers, status 0"
    else
        fail "slurm gpu: the batch job ended with status $status (or ran no torch workers)"
    fi
    compare "slurm gpu (2 torch workers, replication 2)" "$work/slurm-gpu.npy"
    no_workers_left "slurm gpu" "pspc_net.worker"
    if ls -d "$work"/.pspc-* >/dev/null 2>&1; then
        fail "slurm: the shared directory was left behind"
    else
        pass "slurm: the shared directory was removed"
    fi
    slurm_stop
    stop_pid munged
}

part_kubernetes() {
    python3 -m kubernetes_validate --version >/dev/null 2>&1 || python3 -m pip install -q kubernetes-validate
    local dir=deploy/kubernetes f ok=1
    for f in "$dir"/*.yaml; do
        [ "$(basename "$f")" = kustomization.yaml ] && continue
        if python3 -m kubernetes_validate --strict "$f"; then
            pass "kubernetes: $f is valid (kubernetes-validate --strict)"
        else
            fail "kubernetes: $f does not validate"
            ok=0
        fi
    done
    if command -v kubectl >/dev/null; then
        if kubectl kustomize "$dir" >"$work/kustomized.yaml" &&
            python3 -m kubernetes_validate --strict "$work/kustomized.yaml"; then
            pass "kubernetes: kubectl kustomize $dir builds, and its output is valid (strict)"
        else
            fail "kubernetes: kubectl kustomize $dir fails or its output does not validate"
        fi
    fi
    # The settings that must agree, and the shell snippets the pods run.
    if python3 - "$dir" <<'PY'; then
import json, shlex, subprocess, sys, yaml
d = sys.argv[1]
docs = {}
for name in ["configmap", "statefulset", "job", "service", "kustomization"]:
    for doc in yaml.safe_load_all(open(f"{d}/{name}.yaml")):
        docs[(doc["kind"], doc["metadata"]["name"] if "metadata" in doc else name)] = doc
settings = docs[("ConfigMap", "pspc-settings")]["data"]
cluster = json.loads(docs[("ConfigMap", "pspc-cluster")]["data"]["cluster.json"])
sts = docs[("StatefulSet", "pspc-worker")]
n = sts["spec"]["replicas"]
expected = [f"pspc-worker-{i}.pspc-workers:7070" for i in range(n)]
problems = []
if int(settings["PSPC_WORKERS"]) != n:
    problems.append(f"PSPC_WORKERS {settings['PSPC_WORKERS']} != replicas {n}")
if cluster["workers"] != expected:
    problems.append(f"cluster.json workers {cluster['workers']} != {expected}")
if cluster.get("replication") != int(settings["PSPC_REPLICATION"]):
    problems.append("cluster.json replication != PSPC_REPLICATION")
if sts["spec"]["serviceName"] != "pspc-workers" or sts["metadata"]["name"] != "pspc-worker":
    problems.append("StatefulSet names do not give pspc-worker-I.pspc-workers")
worker = sts["spec"]["template"]["spec"]["containers"][0]
script = worker["args"][0]
if "--listen 0.0.0.0:7070" not in script or "${HOSTNAME##*-}" not in script:
    problems.append("worker command lacks --listen 0.0.0.0:7070 or the ordinal from the hostname")
# Metrics: the port, its probes, the Service port and the scrape annotations.
ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
if "--metrics-listen 0.0.0.0:9090" not in script or ports.get("metrics") != 9090:
    problems.append("worker lacks --metrics-listen 0.0.0.0:9090 or the container port metrics: 9090")
for probe, path in [("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
    get = worker.get(probe, {}).get("httpGet", {})
    if get.get("path") != path or get.get("port") != "metrics":
        problems.append(f"{probe} is not httpGet {path} on port metrics: {worker.get(probe)}")
service_ports = {p["name"]: p for p in docs[("Service", "pspc-workers")]["spec"]["ports"]}
if service_ports.get("metrics", {}).get("port") != 9090 or service_ports["metrics"].get("targetPort") != "metrics":
    problems.append("the Service lacks port metrics 9090 -> metrics")
annotations = sts["spec"]["template"]["metadata"].get("annotations", {})
if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/port") != "9090":
    problems.append(f"pod annotations lack prometheus.io/scrape and port 9090: {annotations}")
for shell, code in [("sh", script), ("bash", docs[("Job", "pspc-denoise")]["spec"]["template"]["spec"]["initContainers"][0]["args"][0])]:
    r = subprocess.run([shell, "-n", "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        problems.append(f"{shell} -n: {r.stderr.strip()}")
# The placement the worker command gives pod 2 of 3.
out = subprocess.run(["sh", "-c", script.replace("exec pspc", "echo pspc")],
                     env={"HOSTNAME": "pspc-worker-2", "PSPC_DATA": "/data", "PSPC_WORKERS": str(n),
                          "PSPC_REPLICATION": settings["PSPC_REPLICATION"], "PSPC_THREADS": "4"},
                     capture_output=True, text=True).stdout
if f"--placement 2/{n}/{settings['PSPC_REPLICATION']}" not in out:
    problems.append(f"pod pspc-worker-2 would run: {out.strip()}")
print("\n".join(problems) or f"consistent: {n} workers, replication {settings['PSPC_REPLICATION']}; {out.strip()}")
sys.exit(1 if problems else 0)
PY
        pass "kubernetes: replicas, PSPC_WORKERS and cluster.json agree; pod scripts parse; pod 2 gets placement 2/N/R; metrics port, HTTP probes and scrape annotations"
    else
        fail "kubernetes: manifests disagree (see logs/kubernetes.log)"
    fi
    # The GPU StatefulSet takes the CPU one's place: same names and replicas, a torch worker on one GPU.
    if python3 - "$dir" <<'PY'; then
import subprocess, sys, yaml
d = sys.argv[1]
cpu = yaml.safe_load(open(f"{d}/statefulset.yaml"))
gpu = yaml.safe_load(open(f"{d}/statefulset-gpu.yaml"))
settings = next(doc for doc in yaml.safe_load_all(open(f"{d}/configmap.yaml")) if doc["metadata"]["name"] == "pspc-settings")["data"]
problems = []
for key in ("name",):
    if gpu["metadata"][key] != cpu["metadata"][key]:
        problems.append(f"metadata.{key} differs from statefulset.yaml")
for key in ("serviceName", "replicas", "selector"):
    if gpu["spec"][key] != cpu["spec"][key]:
        problems.append(f"spec.{key} differs from statefulset.yaml")
worker = gpu["spec"]["template"]["spec"]["containers"][0]
script = worker["args"][0]
for words in ("-m pspc_net.worker", "--device cuda", "--listen 0.0.0.0:7070", "${HOSTNAME##*-}", "--token-file /etc/pspc/token"):
    if words not in script:
        problems.append(f"the worker command lacks {words!r}")
if str(worker["resources"]["limits"].get("nvidia.com/gpu")) != "1":
    problems.append("limits lack nvidia.com/gpu: 1")
for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
    if worker.get(probe, {}).get("tcpSocket", {}).get("port") != "pspc":
        problems.append(f"{probe} is not a tcpSocket probe of port pspc")
if {p["name"]: p["containerPort"] for p in worker["ports"]}.get("pspc") != 7070:
    problems.append("no container port pspc: 7070")
if subprocess.run(["sh", "-n", "-c", script]).returncode != 0:
    problems.append("the worker command does not parse")
out = subprocess.run(["sh", "-c", script.replace("exec python3", "echo python3")],
                     env={"HOSTNAME": "pspc-worker-2", "PSPC_DATA": "/data", "PSPC_WORKERS": settings["PSPC_WORKERS"],
                          "PSPC_REPLICATION": settings["PSPC_REPLICATION"], "PSPC_THREADS": "8"},
                     capture_output=True, text=True).stdout
if f"--placement 2/{settings['PSPC_WORKERS']}/{settings['PSPC_REPLICATION']}" not in out:
    problems.append(f"pod pspc-worker-2 would run: {out.strip()}")
print("\n".join(problems) or f"gpu: {out.strip()}")
sys.exit(1 if problems else 0)
PY
        pass "kubernetes gpu: statefulset-gpu.yaml replaces the CPU workers (same names, replicas, placement) with torch workers on nvidia.com/gpu: 1, TCP probes"
    else
        fail "kubernetes gpu: statefulset-gpu.yaml disagrees (see logs/kubernetes.log)"
    fi
    [ "$ok" -eq 1 ]
}

part_ssh() {
    apt_ensure openssh-server openssh-client
    local d="$work/ssh"
    mkdir -p "$d"
    chmod 700 "$d"
    install -d /run/sshd
    ssh-keygen -q -t ed25519 -N '' -f "$d/host_key"
    ssh-keygen -q -t ed25519 -N '' -f "$d/client_key"
    cp "$d/client_key.pub" "$d/authorized_keys"
    local port
    port="$(free_port)"
    cat >"$d/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $d/host_key
AuthorizedKeysFile $d/authorized_keys
PidFile $d/sshd.pid
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
EOF
    /usr/sbin/sshd -D -f "$d/sshd_config" -E "$d/sshd.log" &
    echo $! >"$work/pids/sshd"
    export PSPC_SSH_OPTS="-p $port -i $d/client_key -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no \
-o BatchMode=yes -o LogLevel=ERROR"
    local n=0
    # shellcheck disable=SC2086 # PSPC_SSH_OPTS is a list of options.
    until ssh $PSPC_SSH_OPTS localhost true 2>/dev/null; do
        [ "$n" -lt 50 ] || { cat "$d/sshd.log"; false; }
        sleep 0.2
        n=$((n + 1))
    done
    pass "ssh: sshd on 127.0.0.1:$port accepts the test key"

    printf 'localhost:%s\nlocalhost:%s\n' "$(free_port)" "$(free_port)" >"$d/hosts"
    cat "$d/hosts"
    deploy/ssh/run.sh --hosts "$d/hosts" --replication 2 --data "$work/data" --pspc "$work/pspc" \
        --local-pspc "$work/pspc" -- "${denoise_args[@]}" --output "$work/ssh.npy"
    compare "ssh (2 workers on localhost, replication 2)" "$work/ssh.npy"
    # The remote shells and their stdin watchers name the binary too.
    no_workers_left "ssh" "$work/pspc"
    stop_pid sshd
}

part_systemd() {
    local unit=deploy/systemd/pspc-worker@.service
    if command -v systemd-analyze >/dev/null; then
        # As instance 0, with ExecStart on the pspc just built (verify checks that the command exists).
        mkdir -p "$work/systemd"
        sed "s|/usr/local/bin/pspc|$work/pspc|" "$unit" >"$work/systemd/pspc-worker@.service"
        local out status=0
        out="$(cd "$work/systemd" && systemd-analyze verify --man=no ./pspc-worker@0.service 2>&1)" || status=$?
        echo "$out"
        if [ "$status" -eq 0 ] && [ -z "$out" ]; then
            pass "systemd: systemd-analyze verify pspc-worker@0.service: no errors or warnings"
        else
            fail "systemd: systemd-analyze verify (exit $status): $out"
        fi
    else
        # No systemd-analyze: sections and Key=Value lines only.
        if awk '/^[[:space:]]*(#|;|$)/ { next } /^\[(Unit|Service|Install)\]$/ { next } /^[A-Za-z]+=/ { next }
                { print "line " NR ": " $0; bad = 1 } END { exit bad }' "$unit"; then
            pass "systemd: syntax check (sections, Key=Value lines; systemd-analyze not available)"
        else
            fail "systemd: syntax errors in $unit"
        fi
    fi
    local key
    for key in DATA COUNT REPLICATION TOKEN_FILE LISTEN; do
        grep -q "^$key=" deploy/systemd/worker.env.example || fail "systemd: worker.env.example lacks $key"
        grep -q "\${$key}" "$unit" || fail "systemd: the unit does not use \${$key}"
    done
    # Optional metrics: $METRICS_ARGS (unbraced: split into words, nothing when unset).
    if grep -q '^METRICS_ARGS=--metrics-listen ' deploy/systemd/worker.env.example && grep -q ' \$METRICS_ARGS$' "$unit"; then
        pass "systemd: METRICS_ARGS in worker.env.example is passed to the worker"
    else
        fail "systemd: METRICS_ARGS missing from worker.env.example or the unit's ExecStart"
    fi
}

run_part setup
run_part lint
run_part kubernetes
if grep -q '^PASS setup' "$work/results"; then
    run_part local
    run_part slurm
    run_part ssh
    run_part systemd
else
    for name in local slurm ssh systemd; do fail "$name: not run (setup failed: no pspc binary or no reference)"; done
fi

summary
[ "$(grep -c '^FAIL' "$work/results" || true)" -eq 0 ]
