#!/usr/bin/env bash
# The DPPP sandbox study (README, "Sandbox study"): BoT (tiny CNN), CLIP-ReID and PDM (clip_tiny) and
# every PDM ablation on the embedded GenePerson-mini data, 3 seeds each, then the table.
#   bash experiments/dppp_sandbox.sh [OUT_DIR]        (default logs/dppp_sandbox; ~2-3 h on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-logs/dppp_sandbox}
seeds=1,2,3
python train.py -m seed=$seeds hydra.sweep.dir=$out/bot
python train.py -m model=clipreid seed=$seeds hydra.sweep.dir=$out/clipreid
python train.py -m model=pdm seed=$seeds hydra.sweep.dir=$out/pdm
python train.py -m experiment=pdm_without_identity,pdm_without_style,pdm_without_composed,pdm_without_content_invariance,pdm_without_decorrelation,pdm_without_i2t,pdm_without_style_mixed \
  seed=$seeds hydra.sweep.dir=$out/pdm_ablations
python experiments/tables.py $out --label model backbone experiment --metrics R1 mAP --out $out/table.md
