#!/usr/bin/env bash
# FG-NET 5-fold (subject-disjoint, --seed 0): every number in README "agebench train" ->
# "FG-NET 5-fold, measured". Run from the repository root:
#   FGNET=../shared/fgnet scripts/fgnet-experiments.sh [phase...]
# phases: pull offshelf frozen finetune table (default: all, in that order).
# Models are registered under $AGEBENCH_HOME/weights (default: this checkout), runs go to
# reports/train/ and reports/fgnet-exp/. BACKBONES="..." / LOSSES="..." run a subset. A run
# whose summary.json exists is not run again (delete its folder to redo it). Torch runs one
# thread (--threads 1); speeds are only comparable between runs on one machine at one load.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-$PWD}" AGEBENCH_HOME="${AGEBENCH_HOME:-$PWD}"
AB="${AGEBENCH:-.venv/bin/agebench}" PY="${PYTHON:-.venv/bin/python}"
FGNET="${FGNET:-../shared/fgnet}"
KFOLD=(--bench fgnet --root "$FGNET" --protocol kfold --folds 5 --seed 0)
read -ra BACKBONES <<<"${BACKBONES:-dlib-age-v1 apmoe-mobilenetv2 yu4u-wrn-16-8}"
read -ra LOSSES <<<"${LOSSES:-dex mean-variance coral}"
# the README's table ran BACKBONES=yu4u-wrn-16-8 with LOSSES=dex only (about 25 minutes a loss)
# head only, on features computed once per fold: AdamW, batch 64, up to 60 epochs, patience 10
FROZEN=(--freeze-backbone --batch-size 64 --threads 1)
# full fine-tunes (no freeze, augmentation on) of the best frozen configuration: 4 epochs
# (run "...-full"), then 12 (run "...-full-e12"); the new head starts from random weights
FT_BACKBONE="${FT_BACKBONE:-dlib-age-v1}" FT_LOSS="${FT_LOSS:-mean-variance}"
read -ra FT_EPOCHS <<<"${FT_EPOCHS:-4 12}"
FULL=(--lr 1e-4 --patience 3 --batch-size 32 --threads 1)

short() { case "$1" in dlib-age-v1) echo dlib ;; apmoe-mobilenetv2) echo apmoe ;; yu4u-wrn-16-8) echo wrn ;; *) echo "$1" ;; esac; }

# CORAL's head is one shared weight and K-1 biases that AdamW moves about lr per step: at
# 1e-3 (about 660 steps here) they cannot spread over 0..100 years and the folds underfit
# (dlib-age-v1: CV MAE 13.5), so CORAL gets 1e-2; the 1e-3 run is kept as a diagnostic.
lr_of() { case "$1" in coral) echo 1e-2 ;; *) echo 1e-3 ;; esac; }
# yu4u-wrn-16-8's features are 131,072 wide: its head runs at about 200 images/s on one
# thread against 10,000+ for the 256-wide ones, so it gets 15 epochs (patience 5), not 60
epochs_of() { case "$1" in yu4u-wrn-16-8) echo "--epochs 15 --patience 5" ;; *) echo "--epochs 60 --patience 10" ;; esac; }

# train NAME ARGS...: one 5-fold run (skipped when finished), its wall seconds (crop cache,
# feature passes, epochs, export and gates) appended to reports/fgnet-exp/train-wall.tsv,
# then the cross-validated eval: each test fold scored by the model that did not see it
train() {
    local name=$1 start=$SECONDS
    shift
    mkdir -p reports/fgnet-exp
    if [ ! -f "reports/train/$name/summary.json" ]; then
        "$AB" train "${KFOLD[@]}" --name "$name" "$@"
        printf '%s\t%s\n' "$name" $((SECONDS - start)) >>reports/fgnet-exp/train-wall.tsv
    fi
    [ -f "reports/fgnet-exp/eval-$name/summary.json" ] ||
        "$AB" eval "${KFOLD[@]}" --model "$name-fold{fold}" --out "reports/fgnet-exp/eval-$name"
}

phase_pull() {
    for m in apmoe-mobilenetv2 yu4u-wrn-16-8; do
        "$AB" models list --json | "$PY" -c 'import json, sys
sys.exit(not any(m["name"] == sys.argv[1] and m["weights_present"] for m in json.load(sys.stdin)))' "$m" ||
            "$AB" models pull "$m"
    done
}

phase_offshelf() {
    for m in "${BACKBONES[@]}"; do
        [ -f "reports/fgnet-exp/eval-$m/summary.json" ] ||
            "$AB" eval "${KFOLD[@]}" --model "$m" --out "reports/fgnet-exp/eval-$m"
    done
}

phase_frozen() {
    for m in "${BACKBONES[@]}"; do
        for loss in "${LOSSES[@]}"; do
            # shellcheck disable=SC2046  # epochs_of gives two options
            train "fgx-$(short "$m")-$loss" --backbone "$m" --loss "$loss" --lr "$(lr_of "$loss")" \
                $(epochs_of "$m") "${FROZEN[@]}"
        done
    done
    if [[ " ${BACKBONES[*]} " == *" dlib-age-v1 "* && " ${LOSSES[*]} " == *" coral "* ]]; then
        train fgx-dlib-coral-lr1e-3 --backbone dlib-age-v1 --loss coral --lr 1e-3 \
            --epochs 60 --patience 10 "${FROZEN[@]}"
    fi
}

phase_finetune() {
    local e suffix
    for e in "${FT_EPOCHS[@]}"; do
        suffix=$([ "$e" = 4 ] && echo full || echo "full-e$e")
        train "fgx-$(short "$FT_BACKBONE")-$FT_LOSS-$suffix" --backbone "$FT_BACKBONE" \
            --loss "$FT_LOSS" --epochs "$e" "${FULL[@]}"
    done
}

phase_table() {
    "$PY" scripts/fgnet_table.py reports
}

phases=("$@")
[ ${#phases[@]} -eq 0 ] && phases=(pull offshelf frozen finetune table)
for p in "${phases[@]}"; do "phase_$p"; done
