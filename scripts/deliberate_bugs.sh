#!/usr/bin/env bash
# Do the tests catch what they claim? Plants each deliberate bug below in the code, one at a
# time, runs the test that guards against it, and puts the code back. Every line must end in
# "caught". About a minute on 2 CPU cores.
#   scripts/deliberate_bugs.sh
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${OUR_VENV:-.venv}/bin/python
export TRANSLATOR_DATA_DIR=${TRANSLATOR_DATA_DIR:-/work/shared/data/multi30k}
if ! git diff --quiet -- translator; then
  echo "deliberate_bugs: translator/ has uncommitted changes; commit or stash them first" >&2
  exit 1
fi
trap 'git checkout -q -- translator' EXIT  # the code goes back even on Ctrl-C

missed=0
plant() {  # what the bug is, file, sed expression, the test that must fail
  local what=$1 file=$2 expr=$3 test=$4
  sed -i "$expr" "$file"
  if git diff --quiet -- "$file"; then
    echo "NOT PLANTED  $what: '$expr' matches nothing in $file"
    missed=1
  elif "$PY" -m pytest -q -x -p no:cacheprovider "$test" >/dev/null 2>&1; then
    echo "MISSED       $what: $test passes"
    missed=1
  else
    echo "caught       $what: $test"
  fi
  git checkout -q -- "$file"
}

plant "early stopping off" translator/training/schedule.py \
  's/if cfg.patience and state.bad_validations >= cfg.patience:/if False:/' \
  tests/training/test_trainer.py::test_patience_stops_a_run_that_no_longer_improves
plant "a tie counts as a better validation" translator/training/schedule.py \
  's/improved = bleu > self.best_bleu/improved = bleu >= self.best_bleu/' \
  tests/training/test_trainer.py::test_patience_counts_the_validations_since_the_best_and_a_tie_is_no_better
plant "the average is always kept" translator/training/checkpoints.py 's/kept = bleu >= best_bleu/kept = True/' \
  tests/training/test_trainer.py::test_the_averaged_weights_are_kept_only_when_they_validate_better
plant "the average is never kept" translator/training/checkpoints.py 's/kept = bleu >= best_bleu/kept = False/' \
  tests/training/test_trainer.py::test_the_averaged_weights_are_kept_only_when_they_validate_better
plant "accumulated gradients summed, not averaged" translator/training/optimizer_step.py \
  's|objective / (batch.n_tokens \* len(group))|objective / batch.n_tokens|' \
  tests/training/test_trainer.py::test_accumulated_gradients_are_averaged_over_the_group
plant "an ensemble of runs with different BPEs" translator/data/bundle.py \
  's/problems.append("BPE")/pass/' \
  tests/decoding/test_ensemble.py::test_runs_with_the_same_vocabularies_but_another_bpe_are_refused
plant "no cap on finished beam hypotheses" translator/decoding/search.py \
  's/ends \&= ends.cumsum(dim=1) <= (k - n_done).unsqueeze(1)/pass/' \
  tests/decoding/test_search.py::test_beam_search_equals_the_plain_reference_and_keeps_k_finished
exit $missed
