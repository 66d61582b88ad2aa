#!/usr/bin/env bash
# The DPPP sandbox study (docs/studies.md) on the embedded GenePerson-mini data: BoT (tiny CNN);
# CLIP-ReID and PDM (clip_tiny) from random weights and from the person-aligned sandbox CLIP
# (backbone.pretrained=sandbox, built once under data/ by the first run that needs it); every PDM
# ablation on the aligned model; PDM on an aligned model pre-trained without the words only the
# targets use (exclude_target_styles). 3 seeds each, then the table.
#
#   bash experiments/dppp_sandbox.sh                       # everything (45 runs)
#   SEEDS="1" ABLATIONS="" bash experiments/dppp_sandbox.sh   # the main rows, one seed
#
# Seeds go round-robin over the rows (every row gets seed 1 before any gets seed 2), and finished runs
# (results.json present) are skipped, so the script can be stopped and re-run. Rows are told apart in
# the table by task_name (random / aligned / aligned_xts).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-logs/dppp_sandbox}
SEEDS=${SEEDS:-"1 2 3"}
ABLATIONS=${ABLATIONS-"identity style composed content_invariance decorrelation i2t style_mixed"}
RANDOM_WEIGHTS=(backbone.pretrained=null task_name=random)
ALIGNED=(backbone.pretrained=sandbox task_name=aligned)
# its own folders, so the default aligned model is not rebuilt over
XTS=(backbone.pretrained=sandbox task_name=aligned_xts backbone.sandbox.corpus.exclude_target_styles=true
     'backbone.sandbox.root=${paths.data_dir}/sandbox-clip-xts'
     'backbone.sandbox.corpus.root=${paths.data_dir}/sandbox-corpus-xts')

run() {  # <name> <seed> <overrides...>
  local name=$1 seed=$2
  shift 2
  local dir="$OUT/$name/s$seed"
  [ -f "$dir/results.json" ] || python train.py "$@" seed="$seed" hydra.run.dir="$dir"
}

for seed in $SEEDS; do
  run bot "$seed"
  run clipreid_random "$seed" model=clipreid "${RANDOM_WEIGHTS[@]}"
  run clipreid_aligned "$seed" model=clipreid "${ALIGNED[@]}"
  run pdm_random "$seed" model=pdm "${RANDOM_WEIGHTS[@]}"
  run pdm_aligned "$seed" model=pdm "${ALIGNED[@]}"
  run pdm_aligned_xts "$seed" model=pdm "${XTS[@]}"
done
for seed in $SEEDS; do
  for term in $ABLATIONS; do
    run "pdm_without_$term" "$seed" experiment="pdm_without_$term" "${ALIGNED[@]}"
  done
done
python experiments/tables.py "$OUT" --label model backbone experiment task_name --metrics R1 mAP --out "$OUT/table.md"
: > "$OUT/paired.md"
# The study's goals, paired by seed (A - B, mean target mAP): experiments/paired.py
for pair in "pdm_aligned clipreid_aligned" "clipreid_aligned clipreid_random" "pdm_aligned pdm_random" \
            "pdm_random clipreid_random"; do
  set -- $pair
  if [ -d "$OUT/$1" ] && [ -d "$OUT/$2" ]; then
    python experiments/paired.py "$OUT/$1" "$OUT/$2" | tee -a "$OUT/paired.md" || true
  fi
done
