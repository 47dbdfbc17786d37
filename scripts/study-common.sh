# Sourced by the study scripts (scripts/study.sh, scripts/study-ls-els.sh): installs what they need, builds pspc and
# records each step's wall time. After `study_prepare NAME OUT`: $pspc is the binary (PSPC_BIN, or a release build
# of this checkout), the network endpoint's Python is exported (PSPC_SCRIPTS, PSPC_PYTHON), and
# `step STEP COMMAND...` runs one resumable step, appending `STEP,seconds` to OUT/timings.csv (a resumed step adds
# its remainder).

# study_grid_steps NAME GRID: the step count of an edm:N grid, or a refusal naming the script.
study_grid_steps() {
    local name="$1" grid="$2" steps="${2#edm:}"
    [[ "$grid" == edm:* && "$steps" =~ ^[0-9]+$ ]] || { echo "$name: PSPC_STUDY_GRID must be edm:N, got $grid" >&2; return 2; }
    echo "$steps"
}

study_prepare() {
    local out="$2"
    mkdir -p "$out"
    export PSPC_SCRIPTS="${PSPC_SCRIPTS:-$PWD/scripts}"
    export PSPC_PYTHON="${PSPC_PYTHON:-${PSPC_VENV:-$PWD/.venv}/bin/python}"
    scripts/setup.sh
    scripts/setup-python.sh
    pspc="${PSPC_BIN:-}"
    if [[ -z "$pspc" ]]; then
        swift build -c release --product pspc
        pspc=.build/release/pspc
    fi
    timings="$out/timings.csv"
    [[ -f "$timings" ]] || echo "step,seconds" > "$timings"
}

step() {
    local name="$1" begin
    shift
    echo "== $name"
    begin=$(date +%s)
    "$@"
    echo "$name,$(( $(date +%s) - begin ))" >> "$timings"
}
