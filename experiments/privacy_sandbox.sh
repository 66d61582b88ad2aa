#!/usr/bin/env bash
# The sandbox feature-privacy study (embedded GenePerson-mini, tiny CNN, CPU), 5 paired seeds: every row
# (unprotected and each defence) twice, as configured and with the positive control model.leak=background
# (a branch that stores a background thumbnail in part of the feature: a leak ReID does not need; row
# <row>_leak), each checkpoint audited the same way (model=attack, cross-domain and in-domain, leakage
# judged by an independent reference BoT trained once at seed 100). Then the results bundles of the audits
# (experiments/results/$STUDY; an audit's results.json holds the extractor's utility too) and of the
# training runs (experiments/results/${STUDY}_train: validation and loss terms), both committed, and the
# tables rendered from them.
#
#   bash experiments/privacy_sandbox.sh                                        # everything (5 seeds x 14 rows)
#   SEEDS="1" ROWS="unprotected gan" LEAK="" bash experiments/privacy_sandbox.sh   # a subset, no leak rows
#   SWEEP="gan:model.privacy_weight=3 pool:model.privacy_weight=30" bash experiments/privacy_sandbox.sh
#
# Every run, audits included, uses THREADS torch threads (OMP_NUM_THREADS / MKL_NUM_THREADS) and PRECISION
# arithmetic (trainer.precision), fp32 on one thread by default, so a rerun on another machine gives the
# same table. Seeds go round-robin over the rows; finished runs (results.json present) are skipped, so the
# script can be re-run after an interruption and copies with disjoint SEEDS can share the cores. A run that
# fails is listed at the end; the others go on. SWEEP (empty by default) trains and audits other weights
# at seed 1 (<row>:<key>=<value>, run sweep_<row>_<key>_<value>); the sweep is not bundled.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-logs/privacy_sandbox}
STUDY=${STUDY:-privacy_sandbox}
SEEDS=${SEEDS:-"1 2 3 4 5"}
ROWS=${ROWS:-"unprotected conventional gan pool ridge dependence bottleneck"}
LEAK=${LEAK-background}   # the positive control's model.leak; empty: no <row>_leak rows
SWEEP=${SWEEP:-}
THREADS=${THREADS:-1}
PRECISION=${PRECISION:-32-true}
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
PINNED=(trainer.precision="$PRECISION")
REFERENCE="$OUT/train/reference/s100"
FAILED=()

train() {  # <run dir> <train overrides...>
  local run=$1
  shift
  [ -f "$run/results.json" ] && return 0
  python train.py "$@" "${PINNED[@]}" hydra.run.dir="$run" || FAILED+=("$run")
}

audit() {  # <run dir of the trained extractor> <audit dir> <seed>
  [ -f "$2/results.json" ] && return 0
  [ -f "$1/checkpoints/last.ckpt" ] || { FAILED+=("$2 (no checkpoint)"); return 0; }
  python train.py model=attack model.extractor_ckpt="$1/checkpoints/last.ckpt" \
    model.reference_ckpt="$REFERENCE/checkpoints/last.ckpt" model.audit_split=both "${PINNED[@]}" \
    seed="$3" hydra.run.dir="$2" || FAILED+=("$2")
}

train "$REFERENCE" model=bot seed=100   # the judge of identity leakage: trained apart from every audited model

names=()  # the study's rows: <row> and, with LEAK, <row>_leak
for row in $ROWS; do
  names+=("$row")
  [ -n "$LEAK" ] && names+=("${row}_leak")
done
for seed in $SEEDS; do  # seeds round-robin over the rows: every row gets seed 1 first
  for name in "${names[@]}"; do
    row=${name%_leak} leak=()
    [ "$name" != "$row" ] && leak=(model.leak="$LEAK")
    train "$OUT/train/$name/s$seed" experiment="privacy_sandbox_$row" "${leak[@]}" seed="$seed"
    audit "$OUT/train/$name/s$seed" "$OUT/audit/$name/s$seed" "$seed"
  done
done
for item in $SWEEP; do
  row=${item%%:*} setting=${item#*:}
  key=${setting%%=*} value=${setting#*=}
  name="sweep_${row}_${key##*.}_${value}"   # e.g. sweep_gan_privacy_weight_3 (Hydra refuses '=' in a path)
  train "$OUT/train/$name/s1" experiment="privacy_sandbox_$row" "$setting" seed=1
  audit "$OUT/train/$name/s1" "$OUT/audit/$name/s1" 1
done

# the bundle of the rows' audits (commit it) and the tables: the rows (utility, gains, probes, nURR against
# the unprotected row), the paired differences against the unprotected row with their 95% CIs, and every
# docs table rendered again from the bundle; the trade-off plot from the run folders
BUNDLE=experiments/results/$STUDY
audits=() trained=()
for name in "${names[@]}"; do
  [ -d "$OUT/audit/$name" ] && audits+=("$OUT/audit/$name")
  [ -d "$OUT/train/$name" ] && trained+=("$OUT/train/$name")
done
python experiments/bundle.py "${audits[@]}" --study "$STUDY"
# the training runs too: what each defence saw while it trained (source validation, its loss terms)
python experiments/bundle.py "${trained[@]}" --study "${STUDY}_train"
python experiments/tables.py "$BUNDLE" --baseline "$BUNDLE/unprotected" --mean-only --label row --out "$OUT/table.md"
pairs=""
for name in "${names[@]}"; do
  case $name in
    unprotected) ;;
    unprotected_leak) pairs+="${pairs:+,}unprotected_leak-unprotected" ;;   # the control's leak itself
    *_leak) pairs+="${pairs:+,}$name-unprotected_leak" ;;
    *) pairs+="${pairs:+,}$name-unprotected" ;;
  esac
done
if [ -n "$pairs" ]; then  # each row against its unprotected twin: the cost in mAP, then what ReID does not need
  python experiments/tables.py "$BUNDLE" --pairs "$pairs" --out "$OUT/paired_map.md"
  for metric in privacy.in_domain.image_specific_gain privacy.cross_domain.background_gain gain; do
    python experiments/tables.py "$BUNDLE" --pairs "$pairs" --pair-metric "$metric" --out "$OUT/paired_${metric##*.}.md"
  done
fi
python experiments/privacy_plot.py "${audits[@]}" --baseline "$OUT/audit/unprotected" --out "$OUT/tradeoff.png" \
  | tee "$OUT/tradeoff.md"
[ "$STUDY" = privacy_sandbox ] && python experiments/tables.py --update-docs
if [ ${#FAILED[@]} -gt 0 ]; then
  printf 'failed run (see its train.log and status.json): %s\n' "${FAILED[@]}" >&2
  exit 1
fi
