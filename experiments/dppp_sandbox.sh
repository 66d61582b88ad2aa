#!/usr/bin/env bash
# The DPPP sandbox study (docs/studies.md) on the embedded GenePerson-mini data, 5 paired seeds:
#   bot                                   BoT, tiny CNN (python train.py)
#   clipreid_random, pdm_random           clip_tiny from random weights (backbone.pretrained=null)
#   clipreid_aligned, pdm_aligned         from the person-aligned sandbox CLIP (backbone.pretrained=sandbox)
#   clipreid_notext, pdm_notext           from the no-text control build of the same budget
#                                         (backbone.sandbox.training.text=false, its own build folder)
#   pdm_without_<term>                    every PDM ablation on the aligned start
# then the results bundle (experiments/results/$STUDY, committed) and the tables rendered from it.
#
#   bash experiments/dppp_sandbox.sh                                   # everything (5 seeds x 14 rows)
#   SEEDS="1" ABLATIONS="" bash experiments/dppp_sandbox.sh             # the main rows, one seed
#   THREADS=2 PRECISION=bf16-mixed bash experiments/dppp_sandbox.sh     # another pinning (a different study)
#   ROWS="clipreid_random clipreid_aligned" ABLATIONS="" bash experiments/dppp_sandbox.sh   # some rows only
#   OUT=logs/dppp_ablations STUDY=dppp_sandbox_ablations ROWS="pdm_aligned" bash experiments/dppp_sandbox.sh
#                                   # the ablations beside their own pdm_aligned, in their own bundle
#
# Every run, the sandbox CLIP builds included (they run inside the first run that needs them), uses
# THREADS torch threads (OMP_NUM_THREADS / MKL_NUM_THREADS, read by torch at start) and PRECISION
# arithmetic (trainer.precision and backbone.sandbox.training.precision): fp32 on one thread by default,
# so a rerun on another machine gives the same table (docs/studies.md says how close). The study's
# builds live in their own folders (sandbox-clip-study, sandbox-clip-notext), so the pinned precision
# never rebuilds the default build under data/sandbox-clip.
# Seeds go round-robin over the rows (every row gets seed 1 before any gets seed 2); finished runs
# (results.json present) are skipped, so the script can be stopped and re-run, and copies with disjoint
# SEEDS can share the cores. A run that fails is listed at the end; the others go on.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-logs/dppp_sandbox}
STUDY=${STUDY:-dppp_sandbox}
SEEDS=${SEEDS:-"1 2 3 4 5"}
THREADS=${THREADS:-1}
PRECISION=${PRECISION:-32-true}
ROWS=${ROWS:-"bot clipreid_random clipreid_aligned clipreid_notext pdm_random pdm_aligned pdm_notext"}
ABLATIONS=${ABLATIONS-"identity style composed content_invariance decorrelation i2t style_mixed"}
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
PINNED=(trainer.precision="$PRECISION")
CLIP_BUILD=(backbone.sandbox.training.precision="$PRECISION")
RANDOM_WEIGHTS=(backbone.pretrained=null task_name=random)
ALIGNED=(backbone.pretrained=sandbox task_name=aligned "${CLIP_BUILD[@]}"
         'backbone.sandbox.root=${paths.data_dir}/sandbox-clip-study')
# the no-text control: identity-level image-image contrast on the same corpus and budget
NOTEXT=(backbone.pretrained=sandbox task_name=notext "${CLIP_BUILD[@]}" backbone.sandbox.training.text=false
        'backbone.sandbox.root=${paths.data_dir}/sandbox-clip-notext')
FAILED=()

run() {  # <row> <seed> <overrides...>
  local name=$1 seed=$2
  shift 2
  case " $ROWS " in *" $name "*) ;; *) [[ $name == pdm_without_* ]] || return 0 ;; esac
  local dir="$OUT/$name/s$seed"
  [ -f "$dir/results.json" ] && return 0
  python train.py "$@" "${PINNED[@]}" seed="$seed" hydra.run.dir="$dir" || FAILED+=("$dir")
}

for seed in $SEEDS; do
  run bot "$seed"
  run clipreid_random "$seed" model=clipreid "${RANDOM_WEIGHTS[@]}"
  run clipreid_aligned "$seed" model=clipreid "${ALIGNED[@]}"
  run clipreid_notext "$seed" model=clipreid "${NOTEXT[@]}"
  run pdm_random "$seed" model=pdm "${RANDOM_WEIGHTS[@]}"
  run pdm_aligned "$seed" model=pdm "${ALIGNED[@]}"
  run pdm_notext "$seed" model=pdm "${NOTEXT[@]}"
done
for seed in $SEEDS; do
  for term in $ABLATIONS; do
    run "pdm_without_$term" "$seed" experiment="pdm_without_$term" "${ALIGNED[@]}"
  done
done

# the bundle (commit it) and the tables: the rows, the goals' paired differences with their 95% CIs,
# and every docs table rendered again from the bundle
BUNDLE=experiments/results/$STUDY
python experiments/bundle.py "$OUT" --study "$STUDY"
python experiments/tables.py "$BUNDLE" --metrics R1 mAP val:mAP --out "$OUT/table.md"
ran() { case " $ROWS $(printf 'pdm_without_%s ' $ABLATIONS)" in *" $1 "*) return 0 ;; esac; return 1; }
goals=""  # the goals' pairs whose two rows this call ran
for pair in clipreid_aligned-clipreid_random pdm_aligned-clipreid_aligned pdm_aligned-pdm_random \
  pdm_aligned-pdm_notext clipreid_aligned-clipreid_notext; do
  ran "${pair%%-*}" && ran "${pair#*-}" && goals+="${goals:+,}$pair"
done
[ -n "$goals" ] && python experiments/tables.py "$BUNDLE" --pairs "$goals" --out "$OUT/paired.md"
ablations=""  # each PDM term off against all terms, on the aligned start
for term in $ABLATIONS; do ablations+="${ablations:+,}pdm_without_$term-pdm_aligned"; done
[ -n "$ablations" ] && ran pdm_aligned && python experiments/tables.py "$BUNDLE" --pairs "$ablations" \
  --out "$OUT/ablations.md"
# the docs' tables rendered again when they show this bundle (dppp_sandbox, dppp_sandbox_ablations)
grep -rqsF -- "table: $BUNDLE " docs && python experiments/tables.py --update-docs
if [ ${#FAILED[@]} -gt 0 ]; then
  printf 'failed run (see its train.log and status.json): %s\n' "${FAILED[@]}" >&2
  exit 1
fi
