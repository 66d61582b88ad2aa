#!/usr/bin/env bash
# The positive-control study of feature privacy (embedded GenePerson-mini, tiny CNN, CPU), 5 paired seeds:
# the leaky extractor (model.leak=background: a branch that stores a background thumbnail in part of the
# feature, a leak ReID does not need) trained unprotected and with each defence of ROWS, every checkpoint
# audited on the cross split at the extractor's own seed (a fresh `l1` attacker trained on the source's
# training identities, scored on every target and on the source's held-out validation identities, with
# the checkpoint's own decoder where it has one; no probes). The leak-free control `bot` (the default run,
# `python train.py`: E as the unprotected row trains it, without the leak branch) is trained and audited
# beside them at the same seeds, so the leak's own excess (unprotected_leak - bot) is measured, not assumed.
# Goal: the best defence cuts the leaky extractor's background gain by 75% at <= 1 point of mean target mAP.
# Then the results bundle (experiments/results/$STUDY, committed) and the tables: the rows, and each defence
# paired by seed against unprotected_leak (mAP, then the held-out source's background, image-specific and
# whole-image gains; the background gain also in percent of unprotected_leak's and of the leak's excess).
#
#   bash experiments/privacy_leak_defences.sh                                  # seeds 11-15, 4 rows + bot
#   SEEDS="21 22" ROWS="unprotected ridge" bash experiments/privacy_leak_defences.sh  # unseen seeds
#   CONTROL="" bash experiments/privacy_leak_defences.sh                       # without the leak-free control
#
# Every run uses THREADS torch threads and PRECISION arithmetic (fp32 on one thread by default), so a rerun
# on another machine gives the same table. Finished runs (results.json present) are skipped, so the script
# can be re-run after an interruption, and copies with disjoint SEEDS can share the cores. A run that fails
# is listed at the end; the others go on.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-logs/privacy_leak_defences}
STUDY=${STUDY:-privacy_leak_defences}
SEEDS=${SEEDS:-"11 12 13 14 15"}
ROWS=${ROWS:-"unprotected ridge bottleneck bottleneck_strong"}
CONTROL=${CONTROL-bot}
THREADS=${THREADS:-1}
PRECISION=${PRECISION:-32-true}
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
FAILED=()

for seed in $SEEDS; do
  for row in $ROWS $CONTROL; do
    name="${row}_leak" train=(experiment="privacy_sandbox_$row" model.leak=background)
    [ "$row" = bot ] && name=bot train=()  # the leak-free control: the default run, E as BoT
    run="$OUT/train/$name/s$seed" audit="$OUT/audit/$name/s$seed"
    if [ ! -f "$run/results.json" ]; then
      python train.py "${train[@]}" seed="$seed" trainer.precision="$PRECISION" hydra.run.dir="$run" \
        || { FAILED+=("$run"); continue; }
    fi
    [ -f "$audit/results.json" ] && continue
    python train.py model=attack model.extractor_ckpt="$run/checkpoints/last.ckpt" model.audit_split=cross \
      model.probes.enabled=false seed="$seed" trainer.precision="$PRECISION" hydra.run.dir="$audit" \
      || FAILED+=("$audit")
  done
done

BUNDLE=experiments/results/$STUDY
python experiments/bundle.py "$OUT/audit" --study "$STUDY"
held_out=run:privacy_source_val.attackers.l1
python experiments/tables.py "$BUNDLE" --mean-only --label row --metrics mAP "$held_out.background_gain" \
  "$held_out.image_specific_gain" "$held_out.ssim_gain" --out "$OUT/table.md"
pairs=""
for row in $ROWS; do
  [ "$row" != unprotected ] && pairs+="${pairs:+,}${row}_leak-unprotected_leak"
done
shown=$pairs
[ "$CONTROL" = bot ] && shown+="${shown:+,}unprotected_leak-bot"  # the leak's own cost and excess
if [ -n "$shown" ]; then
  python experiments/tables.py "$BUNDLE" --pairs "$shown" --out "$OUT/paired_map.md"
  for metric in background_gain image_specific_gain ssim_gain; do
    python experiments/tables.py "$BUNDLE" --pairs "$shown" --pair-metric "$held_out.$metric" \
      --out "$OUT/paired_$metric.md"
  done
fi
if [ -n "$pairs" ]; then  # each defence's cut in percent of the leaky gain, and of the leak's excess over bot
  python experiments/tables.py "$BUNDLE" --pairs "$pairs" --pair-metric "$held_out.background_gain" \
    --pair-share-of B --out "$OUT/paired_background_gain_percent.md"
  [ "$CONTROL" = bot ] && python experiments/tables.py "$BUNDLE" --pairs "$pairs" \
    --pair-metric "$held_out.background_gain" --pair-share-of unprotected_leak-bot \
    --out "$OUT/paired_background_gain_share_of_excess.md"
fi
[ "$STUDY" = privacy_leak_defences ] && python experiments/tables.py --update-docs
if [ ${#FAILED[@]} -gt 0 ]; then
  printf 'failed run (see its train.log and status.json): %s\n' "${FAILED[@]}" >&2
  exit 1
fi
