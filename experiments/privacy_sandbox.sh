#!/usr/bin/env bash
# The sandbox feature-privacy study (embedded GenePerson-mini, tiny CNN, CPU): six rows (unprotected,
# conventional defence, privacy GAN, decoder pool with restarts, dependence penalty, stochastic
# bottleneck) x 3 seeds, a weight sweep per defence at seed 1, then the table and the trade-off plot.
# Every checkpoint is audited the same way (model=attack): the l1, gan, diffusion and optim attackers,
# each with its null, cross-domain and in-domain, leakage judged by an independent reference BoT
# (trained once, seed 100), and the attribute probes.
#
#   bash experiments/privacy_sandbox.sh                                    # everything
#   SEEDS="1" ROWS="unprotected pool" SWEEP=" " bash experiments/privacy_sandbox.sh   # a subset, no sweep
#
# Finished runs (results.json present) are skipped, so the script can be re-run after an interruption.
# An audit logs its cost per part ("audit cost: ..." in its train.log).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-logs/privacy_sandbox}
SEEDS=${SEEDS:-"1 2 3"}
ROWS=${ROWS:-"unprotected conventional gan pool dependence bottleneck"}
# the sweep at seed 1: <row>:<key>=<value> (each defence's own weight; its row's value is in its config;
# the dependence penalty only upward: at its row's w=1 it already keeps mAP and moves no attacker)
SWEEP=${SWEEP:-"conventional:model.privacy_weight=0.3 conventional:model.privacy_weight=3
gan:model.privacy_weight=1 gan:model.privacy_weight=3 gan:model.privacy_weight=30
pool:model.privacy_weight=3 pool:model.privacy_weight=30
dependence:model.privacy_weight=3
bottleneck:model.bottleneck.beta=3e-4 bottleneck:model.bottleneck.beta=3e-3"}
REFERENCE="$OUT/train/reference/s100"

train() {  # <run dir> <train overrides...>
  local run=$1
  shift
  [ -f "$run/results.json" ] || python train.py "$@" hydra.run.dir="$run"
}

audit() {  # <run dir of the trained extractor> <audit dir> <seed>
  [ -f "$2/results.json" ] || python train.py model=attack model.extractor_ckpt="$1/checkpoints/last.ckpt" \
    model.reference_ckpt="$REFERENCE/checkpoints/last.ckpt" model.audit_split=both seed="$3" hydra.run.dir="$2"
}

train "$REFERENCE" model=bot seed=100   # the judge of identity leakage: trained apart from every audited model

for seed in $SEEDS; do  # seeds round-robin over the rows: every row gets seed 1 first
  for row in $ROWS; do
    train "$OUT/train/$row/s$seed" experiment="privacy_sandbox_$row" seed="$seed"
    audit "$OUT/train/$row/s$seed" "$OUT/audit/$row/s$seed" "$seed"
  done
done
for item in $SWEEP; do
  row=${item%%:*} setting=${item#*:}
  key=${setting%%=*} value=${setting#*=}
  name="sweep_${row}_${key##*.}_${value}"   # e.g. sweep_gan_privacy_weight_0.3 (Hydra refuses '=' in a path)
  train "$OUT/train/$name/s1" experiment="privacy_sandbox_$row" "$setting" seed=1
  audit "$OUT/train/$name/s1" "$OUT/audit/$name/s1" 1
done

# the rows' table (mean ± std over seeds; gains, normalized leakage, probes, nURR against the unprotected
# row), the same per target, and the trade-off plot of every audited config (rows and sweep)
rows=()
for row in $ROWS; do rows+=("$OUT/audit/$row"); done
python experiments/tables.py "${rows[@]}" --baseline "$OUT/audit/unprotected" --mean-only \
  --label extractor.experiment --out "$OUT/table.md"
python experiments/tables.py "${rows[@]}" --baseline "$OUT/audit/unprotected" \
  --label extractor.experiment --format csv --out "$OUT/table_per_target.csv" > /dev/null
python experiments/privacy_plot.py "${rows[@]}" --baseline "$OUT/audit/unprotected" --out "$OUT/tradeoff.png" \
  | tee "$OUT/tradeoff.md"
# the sweep ran at seed 1 only: compare it with the rows' seed-1 runs (like with like)
python experiments/privacy_plot.py "$OUT/audit" --baseline "$OUT/audit/unprotected" --seeds 1 \
  --out "$OUT/tradeoff_seed1.png" | tee "$OUT/tradeoff_seed1.md"
