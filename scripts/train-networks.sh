#!/usr/bin/env bash
# Train the family of reference networks on Fashion-MNIST with one EDM recipe (resumable: run it again and
# every network continues from its checkpoint; finished ones are skipped).
#
#   scripts/train-networks.sh [--only NAME[,NAME...]] [--device cpu|cuda] [--threads N] [--dir DIR] [--park]
#
# The recipe (all four): EDM preconditioning and loss, ln t ~ N(-1.2, 1.2^2) for 90 % of each batch and
# log-uniform over the grid's [0.002, 80] for 10 % (so t >= 20 is trained), batch 128, Adam lr 1e-3 after 500
# warm-up steps then lr / sqrt(step / D), EMA half-life 1000 steps, x-flip, bf16 autocast where native.
#
#   unet        the reference U-Net (preset small) trained on from scripts/reference-network/reference-network.pt
#               (its first 28,000 steps used EDM's log-normal alone and a constant lr); D = 1000
#   unet-seed1  the same U-Net from a random init with seed 1: the network-vs-network floor; D = 10000
#   dit         DiT-style transformer, 2x2 patches, adaLN-Zero on the noise embedding; D = 10000
#   resnet      local CNN of 3x3 convolutions without down-sampling or attention (receptive field 25); D = 10000
#
# Checkpoints, loss.csv, train.log and EMA exports (ema-STEP.pt) go to DIR/NAME (default
# ~/.cache/pspc/networks); `--export` of each run writes DIR/NAME/NAME.pt.
#
# Training outlives a machine through the repository: `--park` writes each run's state less Adam's moments
# (about 15 MB for the U-Net) and its loss.csv to scripts/networks/NAME/ to be committed, and a run whose DIR/NAME
# holds no checkpoint continues from the parked state there (Adam restarts with a 200-step learning-rate ramp).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PSPC_VENV:-$here/../.venv}/bin/python"

only="unet,unet-seed1,dit,resnet"
device=""
threads=""
dir="${PSPC_NETWORKS_DIR:-$HOME/.cache/pspc/networks}"
park=0
while [ $# -gt 0 ]; do
    case "$1" in
        --only) only="$2"; shift 2 ;;
        --device) device="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --dir) dir="$2"; shift 2 ;;
        --park) park=1; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

# name: preset, steps, seed, lr decay steps, init
recipe() {
    case "$1" in
        unet) echo "small 30000 0 1000 $here/reference-network/reference-network.pt" ;;
        unet-seed1) echo "small 40000 1 10000 -" ;;
        dit) echo "dit 40000 0 10000 -" ;;
        resnet) echo "resnet 40000 0 10000 -" ;;
        *) echo "error: unknown network $1 (unet, unet-seed1, dit, resnet)" >&2; return 2 ;;
    esac
}

IFS=, read -r -a names <<< "$only"
for name in "${names[@]}"; do
    read -r preset steps seed decay init <<< "$(recipe "$name")"
    run_dir="$dir/$name"
    parked_dir="$here/networks/$name"
    if [ "$park" = 1 ]; then
        if [ ! -f "$run_dir/checkpoint.pt" ]; then
            echo "== $name: no checkpoint in $run_dir, nothing to park"
            continue
        fi
        mkdir -p "$parked_dir"
        "$python" "$here/train_reference_network.py" --ckpt-dir "$run_dir" --park "$parked_dir/parked.pt"
        cp "$run_dir/loss.csv" "$parked_dir/loss.csv"
        continue
    fi
    mkdir -p "$run_dir"
    args=(--ckpt-dir "$run_dir" --steps "$steps" --preset "$preset" --seed "$seed" --p-uniform 0.1
          --lr-decay-steps "$decay" --snapshot-every 2000)
    [ "$init" != "-" ] && args+=(--init-from "$init")
    if [ ! -f "$run_dir/checkpoint.pt" ] && [ -f "$parked_dir/parked.pt" ]; then
        args+=(--resume-parked "$parked_dir/parked.pt")
        [ -f "$run_dir/loss.csv" ] || cp "$parked_dir/loss.csv" "$run_dir/loss.csv"
    fi
    [ -n "$device" ] && args+=(--device "$device")
    [ -n "$threads" ] && args+=(--threads "$threads")
    echo "== $name: $preset, $steps steps, seed $seed, lr decay $decay, in $run_dir"
    "$python" "$here/train_reference_network.py" "${args[@]}" 2>&1 | tee -a "$run_dir/train.log"
    "$python" "$here/train_reference_network.py" --ckpt-dir "$run_dir" --export "$run_dir/$name.pt"
done
