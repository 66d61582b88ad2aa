#!/usr/bin/env bash
# The DPPP sandbox study (docs/studies.md): BoT (tiny CNN), CLIP-ReID and PDM (clip_tiny) and
# every PDM ablation on the embedded GenePerson-mini data, 3 seeds each, then the table.
#
#   bash experiments/dppp_sandbox.sh                       # everything (30 runs; ~4 h on 2 CPU cores)
#   SEEDS="1" ABLATIONS="" bash experiments/dppp_sandbox.sh   # the three main rows, one seed
#
# Seeds go round-robin over the rows (every row gets seed 1 before any gets seed 2), and finished runs
# (results.json present) are skipped, so the script can be stopped and re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-logs/dppp_sandbox}
SEEDS=${SEEDS:-"1 2 3"}
ABLATIONS=${ABLATIONS-"identity style composed content_invariance decorrelation i2t style_mixed"}

run() {  # <name> <seed> <overrides...>
  local name=$1 seed=$2
  shift 2
  local dir="$OUT/$name/s$seed"
  [ -f "$dir/results.json" ] || python train.py "$@" seed="$seed" hydra.run.dir="$dir"
}

for seed in $SEEDS; do
  run bot "$seed"
  run clipreid "$seed" model=clipreid
  run pdm "$seed" model=pdm
done
for seed in $SEEDS; do
  for term in $ABLATIONS; do
    run "pdm_without_$term" "$seed" experiment="pdm_without_$term"
  done
done
python experiments/tables.py "$OUT" --label model backbone experiment --metrics R1 mAP --out "$OUT/table.md"
