#!/usr/bin/env bash
# Do the tests catch what they claim? Plants each deliberate bug below in the code, one at a
# time, runs the test that guards against it, and puts the code back. Every line must end in
# "caught". About three minutes on 2 CPU cores.
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
plant "accumulated batches weighed by one batch's tokens" translator/training/optimizer_step.py \
  's/\[sum(batch.n_tokens for batch in batches)\]/[batches[-1].n_tokens * len(batches)]/' \
  tests/training/test_optimizer_step.py::test_accumulated_batches_weigh_each_target_token_equally
plant "fp16: a skipped step leaves the scaler's step open" translator/training/optimizer_step.py \
  's/^                self.scaler.update()$/                pass/' \
  tests/training/test_optimizer_step.py::test_a_nan_loss_under_fp16_scaling_skips_the_step_and_the_next_step_runs
plant "state.pt keeps the best BLEU from before averaging" translator/training/trainer.py \
  's/^                save_best_bleu(self.run_dir, self.state.best_bleu)$/                pass/' \
  tests/training/test_trainer.py::test_the_averaged_weights_are_kept_only_when_they_validate_better
plant "fp16 resume loads an empty scaler state" translator/training/checkpoints.py \
  's/    if saved\["scaler"\] or not scaler.is_enabled():/    if True:/' \
  tests/training/test_trainer.py::test_a_run_saved_without_a_grad_scaler_resumes_under_fp16_with_a_fresh_one
plant "a BPE-dropout resume claims to be exact" translator/training/trainer.py \
  's/^        if self.cfg.vocab.bpe_dropout:$/        if False:/' \
  tests/training/test_trainer.py::test_resuming_a_bpe_dropout_run_says_it_is_not_bit_exact
plant "a short linear budget stays at its peak" translator/training/schedule.py \
  's|        warmup = min(warmup, end / 2)|        pass|' \
  tests/training/test_trainer.py::test_linear_schedule_warms_up_then_reaches_zero_at_the_end_of_the_budget
plant "beam search with nothing finished" translator/decoding/search.py \
  's/ or \[(\[\], NO_SCORE)\] for hyps in finished\]/ for hyps in finished]/' \
  tests/decoding/test_search.py::test_a_model_that_scores_nothing_gets_empty_outputs_not_a_crash
plant "CTranslate2 ranks by its own |Y|^alpha" translator/decoding/ct2_engine.py \
  's|normalized = score / length_penalty(len(ids) + 1, alpha)|normalized = score / max(len(ids), 1) ** alpha|' \
  "tests/decoding/test_ct2.py::test_the_float32_export_translates_exactly_as_ours[joint-bpe-shared]"
plant "CTranslate2's cut beams go unscored" translator/decoding/ct2_engine.py \
  's/^        if cut:$/        if False:/' \
  "tests/decoding/test_ct2.py::test_the_float32_export_translates_exactly_as_ours[joint-bpe-shared]"
plant "a per-call threads is taken (it would change the whole process's)" translator/decoding/pipeline.py \
  's/^        if options.get("threads") is not None:$/        if False:/' \
  tests/decoding/test_search.py::test_decoding_never_changes_the_process_threads
plant "training's CUDA math flags stay set" translator/device.py \
  's/^        matmul.allow_tf32, cudnn.allow_tf32 = saved\[0\], saved\[1\]$/        pass/' \
  tests/test_device.py::test_training_on_cuda_sets_its_math_flags_only_while_it_trains
plant "a bare train reads another recipe than config.py's" translator/configs/multi30k.yaml \
  '$a model:\n  d_model: 256' \
  tests/test_config.py::test_a_bare_train_uses_the_defaults_config_py_and_the_readme_state
plant "config.py's default drifts from the README" translator/config.py \
  's/    d_model: int = 128  # width of every layer/    d_model: int = 256  # width of every layer/' \
  tests/test_config.py::test_a_bare_train_uses_the_defaults_config_py_and_the_readme_state
plant "evaluate --json forgets what made the run" translator/cli/decoding.py \
  's/versions=read_versions(translator.run_dir),/versions=None,/' \
  tests/cli/test_cli.py::test_translate_and_evaluate_share_every_decoding_option
plant "prepare --check compares nothing" translator/cli/prepare.py \
  's/            if _content(folders\[0\] \/ name) != _content(folders\[1\] \/ name)/            if False/' \
  tests/cli/test_cli.py::test_prepare_check_names_the_files_that_differ
plant "an ensemble of runs with different BPEs" translator/data/bundle.py \
  's/problems.append("BPE")/pass/' \
  tests/decoding/test_ensemble.py::test_runs_with_the_same_vocabularies_but_another_bpe_are_refused
plant "no cap on finished beam hypotheses" translator/decoding/search.py \
  's/ends \&= ends.cumsum(dim=1) <= (k - n_done).unsqueeze(1)/pass/' \
  tests/decoding/test_search.py::test_beam_search_equals_the_plain_reference_and_keeps_k_finished
plant "the vocabulary drops BPE pieces train never used" translator/data/vocab_learning.py \
  's/    ranked += \[p for p in pieces if p not in seen and p not in SPECIALS\]/    pass/' \
  tests/training/test_finetune.py::test_new_text_meets_unk_only_for_characters_the_parent_never_saw
plant "a character seen only at a word's start is <unk> inside one" translator/data/subword.py \
  's/alphabet = \[\*characters, \*(JOINER + c for c in characters)\]/alphabet = []/' \
  tests/data/test_subword.py::test_a_character_seen_in_one_position_is_no_unk_in_the_other
plant "the shortlist's positions are output as token ids" translator/decoding/search.py \
  's/            cand_tokens = vocab\[cand_tokens\]  # positions in the shortlist -> token ids/            pass/' \
  tests/decoding/test_search.py::test_a_shortlist_decodes_as_if_the_other_tokens_did_not_exist
plant "decoding ignores the run's shortlist" translator/decoding/translator.py \
  's/        if not opts.shortlist or self.shortlist is None:/        if True:/' \
  tests/cli/test_cli.py::test_a_run_decodes_with_its_shortlist_unless_told_not_to
plant "the batcher waits for company while requests are queued" translator/serving/queue.py \
  's/                if len(jobs) > 1 or loop.time() >= deadline:/                if loop.time() >= deadline:/' \
  tests/serving/test_queue.py::test_a_free_worker_takes_every_queued_request_at_once_without_waiting
plant "a padded heatmap keeps its padding" translator/decoding/translator.py \
  's/            weights\[:, row, : len(out) + 1, : len(ids) + 1\]/            weights[:, row]/' \
  tests/serving/test_serve.py::test_a_heatmap_comes_from_the_search_that_made_the_translation
plant "selecting a few pairs of a large corpus reads all of it" translator/data/corpus.py \
  's/        if isinstance(self.ids, DiskIds):/        if False:/' \
  tests/data/test_corpus.py::test_a_large_corpus_is_read_from_disk_batch_by_batch
plant "int8 export quantizes the loaded model's own weights" translator/decoding/ct2_export.py \
  's/        return tensor.detach().float().cpu().numpy().copy()  # quantizing must not touch ours/        return tensor.detach().float().cpu().numpy()/' \
  tests/decoding/test_ct2.py::test_export_command_writes_a_self_contained_folder_and_checks_parity
plant "BiT never switches to one direction" translator/training/trainer.py \
  's/        over = schedule.budget_used(self.cfg.train, self.state) >= self.cfg.data.bidirectional/        over = False/' \
  tests/training/test_trainer.py::test_bidirectional_training_reads_each_pair_both_ways_for_its_share_of_the_budget
plant "a resumed BiT run forgets it switched" translator/training/trainer.py \
  's/        if self.state.forward_only and self.data.both_directions:  # BiT.s second phase/        if False:/' \
  tests/training/test_trainer.py::test_bidirectional_training_reads_each_pair_both_ways_for_its_share_of_the_budget
plant "R-Drop starts at once whatever train.rdrop_from says" translator/training/trainer.py \
  's/            rdrop=self.cfg.train.rdrop if state.rdrop_on or not self.cfg.train.rdrop_from else 0,/            rdrop=self.cfg.train.rdrop,/' \
  tests/training/test_trainer.py::test_rdrop_from_starts_r_drop_once_its_share_of_the_budget_is_used
plant "a right-to-left run trains on targets in reading order" translator/data/batching.py \
  's/    step = -1 if right_to_left else 1/    step = 1/' \
  tests/data/test_batching.py::test_make_batch_shifts_the_target_and_pads
plant "a right-to-left run's output is printed backwards" translator/decoding/pipeline.py \
  's/            ids = ids\[::-1\]/            pass/' \
  tests/decoding/test_rerank.py::test_a_right_to_left_run_learns_reversed_targets_and_writes_in_reading_order
plant "a right-to-left model scores a target read from its start" translator/decoding/translator.py \
  's/            tgt_ids = \[ids\[::-1\] for ids in tgt_ids\]/            pass/' \
  tests/decoding/test_rerank.py::test_a_right_to_left_run_learns_reversed_targets_and_writes_in_reading_order
plant "teacher-forced scores differ from the search's" translator/decoding/translator.py \
  's/                logits\[..., \[pad, self.tgt_vocab.sos_id\]\] = -math.inf  # as the search does/                pass/' \
  tests/decoding/test_rerank.py::test_log_likelihoods_are_the_scores_the_search_gives
plant "/v1/info names the last validation, not the best" translator/run_dir.py \
  's/    best = max(valid, key=lambda r: r\["val_bleu"\], default=None)  # the first of equals/    best = valid[-1] if valid else None/' \
  tests/serving/test_serve.py::test_health_info_and_languages
plant "reranking may pick a candidate that is not there" translator/decoding/rerank.py \
  's/    present = np.isfinite(features).all(-1)/    present = np.ones(features.shape[:-1], bool)/' \
  tests/decoding/test_rerank.py::test_choose_takes_the_best_weighted_sum_and_never_a_missing_candidate
plant "tuning never weighs length" translator/decoding/rerank.py \
  's/        name: GRID\[name\] if name == "length" or name in reranker.scorers else \[0\]/        name: GRID[name] if name in reranker.scorers else [0]/' \
  tests/decoding/test_rerank.py::test_tuning_finds_the_weights_that_raise_bleu
plant "MBR's fast chrF scores each pair one way only" translator/decoding/mbr.py \
  's/        for hyp, ref in ((i, j), (j, i)):/        for hyp, ref in ((i, j), (i, j)):/' \
  tests/decoding/test_mbr.py::test_expected_chrf_is_sacrebleus_sentence_chrf_weighted_by_the_model
plant "a weights file's runs are found from the working directory only" translator/decoding/rerank.py \
  's/    return os.path.normpath(beside) if beside.exists() or not Path(run).exists() else run/    return run/' \
  tests/decoding/test_rerank.py::test_a_weights_file_finds_its_runs_from_any_working_directory
plant "R-Drop waits for an epoch's start" translator/training/trainer.py \
  's/^                if self._rdrop_starts():$/                if state.batch_in_epoch == 0 and self._rdrop_starts():/' \
  tests/training/test_trainer.py::test_rdrop_from_starts_within_an_epoch_when_the_budget_ends_in_it
plant "data.extra_train is read but not joined" translator/data/sources.py \
  's/    tables = \[train, \*(ds.cast(train.features) for ds in extras.values())\]/    tables = [train]/' \
  tests/data/test_corpus.py::test_extra_training_pairs_join_the_training_split_only
plant "a changed extra training file reuses the old cache" translator/data/corpus.py \
  's/        "extra_train": \[fingerprint(as_files(cfg), path) for path in d.extra_train\],/        "extra_train": list(d.extra_train),/' \
  tests/data/test_corpus.py::test_extra_training_pairs_join_the_training_split_only
plant "synthesize writes the translations beside the wrong language" translator/cli/decoding.py \
  's/    for path, lines in zip(paths, (sources, translations)):/    for path, lines in zip(paths, (translations, sources)):/' \
  tests/cli/test_cli.py::test_synthesize_writes_a_corpus_that_training_can_add
plant "a sentence may output any token of its batch's shortlist" translator/decoding/search.py \
  's/                outside = ~own\[active\].repeat_interleave(b, dim=0)  # when the rows change/                outside = ~own[active].repeat_interleave(b, dim=0) \& False/' \
  tests/decoding/test_search.py::test_each_sentence_keeps_to_its_own_shortlist_whatever_its_batch
plant "outputs of an older search are reused" translator/decoding/evaluations.py \
  's/        "search": search.OUTPUTS_VERSION,//' \
  tests/cli/test_experiments.py::test_evaluate_records_what_it_scored_and_reuses_it
plant "one sentence pays for a mask that changes nothing" translator/decoding/translator.py \
  's/        if own.all():  # one sentence/        if False:  # one sentence/' \
  tests/cli/test_cli.py::test_a_run_decodes_with_its_shortlist_unless_told_not_to
exit $missed
