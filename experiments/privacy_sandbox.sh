#!/usr/bin/env bash
# The sandbox feature-privacy study (embedded GenePerson-mini, tiny CNN, CPU): the three rows
# (unprotected, conventional defence, privacy GAN) x 3 seeds, every checkpoint audited by the l1, gan and
# diffusion attackers; a privacy_weight sweep and the other privacy losses (seed 1); then the table and the
# trade-off plot.
#
#   bash experiments/privacy_sandbox.sh              # everything (9 + 3 + 4 trainings and audits)
#   SEEDS="1" WEIGHTS=" " LOSSES=" " bash experiments/privacy_sandbox.sh    # one seed, no sweep
#
# On 2 CPU cores a training takes about 10-14 minutes and an audit about 6-10: plan for 4-5 hours.
# Finished runs (results.json present) are skipped, so the script can be re-run after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-logs/privacy_sandbox}
SEEDS=${SEEDS:-"1 2 3"}
WEIGHTS=${WEIGHTS:-"1 3 30"}   # the sweep adds these privacy weights to the rows' 0 and 10
LOSSES=${LOSSES:-"realism:10 neg_pixel:10 realism:1 realism:3"}  # and these privacy loss:weight pairs (with D)

train_and_audit() {  # <name> <seed> <train overrides...>
  local name=$1 seed=$2
  shift 2
  local run="$OUT/train/$name/s$seed" audit="$OUT/audit/$name/s$seed"
  [ -f "$run/results.json" ] || python train.py "$@" seed="$seed" hydra.run.dir="$run"
  [ -f "$audit/results.json" ] || python train.py model=attack model.extractor_ckpt="$run/checkpoints/last.ckpt" \
    seed="$seed" hydra.run.dir="$audit"
}

for seed in $SEEDS; do  # seeds round-robin over the rows: every row gets seed 1 first
  for row in unprotected conventional gan; do
    train_and_audit "$row" "$seed" experiment="privacy_sandbox_$row"
  done
done
for w in $WEIGHTS; do
  train_and_audit "sweep_w$w" 1 experiment=privacy_sandbox_gan model.privacy_weight="$w"
done
for pair in $LOSSES; do
  loss=${pair%%:*} w=${pair##*:}
  train_and_audit "sweep_${loss}_w$w" 1 experiment=privacy_sandbox_gan model.privacy_loss="$loss" model.privacy_weight="$w"
done

# the rows' table (mean ± std over seeds and targets; normalized URR against the unprotected row), the
# same per target, and the trade-off plot of every audited config (rows and sweep)
rows=("$OUT/audit/unprotected" "$OUT/audit/conventional" "$OUT/audit/gan")
python experiments/tables.py "${rows[@]}" --baseline "$OUT/audit/unprotected" --mean-only \
  --label extractor.experiment --out "$OUT/table.md"
python experiments/tables.py "${rows[@]}" --baseline "$OUT/audit/unprotected" \
  --label extractor.experiment --format csv --out "$OUT/table_per_target.csv" > /dev/null
python experiments/privacy_plot.py "$OUT/audit" --baseline "$OUT/audit/unprotected" --out "$OUT/tradeoff.png" \
  | tee "$OUT/tradeoff.md"
# the sweep ran at seed 1 only: compare it with the rows' seed-1 runs (like with like)
python experiments/privacy_plot.py "$OUT/audit" --baseline "$OUT/audit/unprotected" --seeds 1 \
  --out "$OUT/tradeoff_seed1.png" | tee "$OUT/tradeoff_seed1.md"
