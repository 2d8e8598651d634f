#!/usr/bin/env bash
# Our trainer side by side with JoeyNMT 2.3.0 on this machine: same model, same data, same steps.
#
#   scripts/compare_joeynmt.sh [CONFIG]                          # 6-11 minutes on 2 CPU cores
#   STEPS=20 WARMUP=5 SENTENCES=100 scripts/compare_joeynmt.sh   # 2 minutes: every stage runs
#   nice -n 19 scripts/compare_joeynmt.sh                        # beside other work (slower)
#   RUN=runs/tiny-bpe-90 scripts/compare_joeynmt.sh              # decoding only, one trained model
#
# With RUN (one of our trained run dirs) nothing is trained: decoding speed at equal BLEU.
#   1. the run's model is ported to a JoeyNMT model dir (`compare_joeynmt.py port`: its weights
#      under JoeyNMT's names, the vocabulary in our id order, JoeyNMT configs for greedy and beam),
#      and JoeyNMT loads it and computes our logits on 16 sentences (`check-port`);
#   2. both decode test2016 greedy and beam 5 (length penalty: the run's, or ALPHA) from the same
#      source pieces (ours from the text, JoeyNMT from a file of those pieces), and JoeyNMT's
#      output pieces become text through our detokenizer, so only network and search code differ;
#   3. the table: sentences/s, output tokens/s, BLEU, the share of JoeyNMT's outputs identical to
#      ours, and ours/JoeyNMT. About 3 minutes for the 1,000 sentences on an idle 2-core CPU,
#      most of it JoeyNMT's beam search (~1 minute) and greedy search (~30 s).
#
# What it does, in a temporary work dir:
#   1. installs JoeyNMT 2.3.0 into its own virtual environment ($JOEY_VENV; reused when present)
#      with a pinned CPU torch, plus its two missing pieces (importlib_metadata, and
#      sentencepiece 0.2.0: 0.2.1+ dropped the SetVocabulary that JoeyNMT calls);
#   2. writes a JoeyNMT config for the model of CONFIG (default configs/multi30k.yaml): the same
#      layers, d_model, heads, ffn, dropout, norm placement, embedding tying, token batch budget
#      (data.max_tokens; both count sentences x longest side), optimizer, warmup (inverse-sqrt
#      schedule for JoeyNMT, which has no linear one: step speed does not depend on it), and one
#      joint SentencePiece BPE trained on the same Multi30k text, of as many pieces as our
#      prepared vocabulary has (our BPE may stop short of vocab.bpe_size);
#   3. trains both for WARMUP + STEPS optimizer steps, fp32 on CPU with THREADS threads, with no
#      validation until the end, and reads the target tokens/s of the STEPS steps after the
#      warm-up from each one's own log (ours: metrics.jsonl; JoeyNMT: "Tokens per Sec");
#      seconds per epoch = the target tokens of one epoch of each one's own subwords / that rate;
#   4. decodes test2016 (1,000 sentences, the same plain files) with both, greedy and beam 5,
#      timing the translation itself, model loading and start-up excluded, no warm-up on either
#      side (ours: the seconds `translator evaluate --json` reports; JoeyNMT: its "Generation took"
#      line of `joeynmt translate`), and scores every output with the same sacreBLEU (cased,
#      detokenized; JoeyNMT's SentencePiece output is detokenized text);
#   5. prints one table: tokens/s, s/epoch, sentences/s greedy and beam 5, mean output length,
#      BLEU, and ours/JoeyNMT for each speed.
#
# How long: on an idle 2-core CPU with the default config, ours trains at ~0.9 s and JoeyNMT at
# ~1.5 s per step (~4.5 minutes for both with the defaults), ~1 minute goes to set-up and our
# decoding, and JoeyNMT decodes the 1,000 sentences in 0.5 to 5.5 minutes: as long as its
# undertrained model's outputs are (up to 1.5 x the longest source, ~1 s/sentence with beam 5).
# Installing JoeyNMT the first time adds a minute or two.
#
# The models see only WARMUP + STEPS updates, so BLEU is near zero with the defaults and their
# outputs are not sentence-like ("Ein Mann.", or a run of dots to the length limit): decoding time
# grows with output length, so the table shows each one's mean output length and warns when the
# decoding speeds do not compare like for like. The training figures do not depend on that.
#
# Environment (all optional):
#   RUN                 our trained run dir: port it and compare decoding only (see above)
#   ALPHA               length penalty of both beam searches with RUN (default: the run's)
#   STEPS=100           timed optimizer steps of each trainer (the default fits the time above)
#   WARMUP=10           untimed optimizer steps first (allocator, oneDNN kernels)
#   THREADS=2           CPU threads for both (OMP_NUM_THREADS, which torch follows)
#   SENTENCES=1000      decode only the first N test2016 sentences (for quick checks)
#   CONFIG              our config, if not given as the first argument
#   OUR_SET             extra overrides for our config, space separated, e.g.
#                       OUR_SET="model.d_model=256 model.d_ff=1024"; the JoeyNMT model follows them
#   TRANSLATOR_DATA_DIR Multi30k's raw files (train.{en,de}.gz, val.*, test_2016_flickr.*);
#                       default /work/shared/data/multi30k
#   TRANSLATOR_CACHE_DIR our prepared-corpus cache; default: inside the work dir (so our side
#                       tokenizes Multi30k afresh, ~10 s; set it to reuse a cache)
#   JOEY_VENV           JoeyNMT's virtual environment (default /tmp/joeynmt-venv)
#   JOEY_TORCH          the torch requirement installed there (default torch==2.13.0; pinned)
#   OUR_VENV            our virtual environment (default .venv of this repository)
#   KEEP=1              keep the work dir (logs, configs, runs, hypotheses) instead of removing it
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONFIG=${1:-${CONFIG:-$ROOT/configs/multi30k.yaml}}
STEPS=${STEPS:-100}
WARMUP=${WARMUP:-10}
THREADS=${THREADS:-2}
SENTENCES=${SENTENCES:-1000}
BEAM=5
JOEY_VENV=${JOEY_VENV:-/tmp/joeynmt-venv}
JOEY_TORCH=${JOEY_TORCH:-torch==2.13.0}
OUR_VENV=${OUR_VENV:-$ROOT/.venv}
DATA_DIR=${TRANSLATOR_DATA_DIR:-/work/shared/data/multi30k}
read -r -a OUR_SET <<<"${OUR_SET:-}"
PORT_RUN=${RUN:-}
ALPHA=${ALPHA:-}

die() {
    echo "compare_joeynmt: $*" >&2
    exit 1
}

# -- checks before any work -----------------------------------------------------------------
[[ $STEPS =~ ^[1-9][0-9]*$ ]] || die "STEPS must be a positive integer, got '$STEPS'"
[[ $WARMUP =~ ^[1-9][0-9]*$ ]] || die "WARMUP must be a positive integer, got '$WARMUP'"
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a positive integer, got '$THREADS'"
[[ $SENTENCES =~ ^[1-9][0-9]*$ ]] || die "SENTENCES must be a positive integer, got '$SENTENCES'"
if [[ -n $PORT_RUN ]]; then
    [[ -f $PORT_RUN/config.yaml && -f $PORT_RUN/model.safetensors ]] ||
        die "RUN=$PORT_RUN is not a trained run dir (no config.yaml and model.safetensors)"
    PORT_RUN=$(cd "$PORT_RUN" && pwd)
    [[ -z $ALPHA || $ALPHA =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "ALPHA must be a number, got '$ALPHA'"
    SPLITS=(test_2016_flickr)
else
    [[ -f $CONFIG ]] || die "config not found: $CONFIG"
    CONFIG=$(cd "$(dirname "$CONFIG")" && pwd)/$(basename "$CONFIG")
    SPLITS=(train val test_2016_flickr)
fi
[[ -d $DATA_DIR ]] || die "Multi30k data dir not found: $DATA_DIR (set TRANSLATOR_DATA_DIR to the \
folder with train.en.gz, train.de.gz, val.*.gz and test_2016_flickr.*.gz)"
for split in "${SPLITS[@]}"; do
    for lang in en de; do
        [[ -f $DATA_DIR/$split.$lang.gz ]] ||
            die "missing $DATA_DIR/$split.$lang.gz (set TRANSLATOR_DATA_DIR)"
    done
done
[[ -x $OUR_VENV/bin/translator ]] || die "no $OUR_VENV/bin/translator: run 'make install' first"
command -v python3 >/dev/null || die "python3 is needed to create JoeyNMT's virtual environment"

gcd() {
    local a=$1 b=$2
    while ((b)); do
        set -- "$b" $((a % b))
        a=$1 b=$2
    done
    echo "$a"
}
LOG_EVERY=$(gcd "$WARMUP" "$STEPS") # both trainers log at the end of the warm-up and the last step

WORK=$(mktemp -d "${TMPDIR:-/tmp}/compare-joeynmt.XXXXXX")
cleanup() {
    if [[ ${KEEP:-0} == 1 ]]; then
        echo "work dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

export TRANSLATOR_DATA_DIR=$DATA_DIR
export TRANSLATOR_CACHE_DIR=${TRANSLATOR_CACHE_DIR:-$WORK/cache}
export TRANSLATOR_RUNS_DIR=$WORK/runs
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
export PYTHONWARNINGS=ignore
OUR_PY=$OUR_VENV/bin/python
JOEY_PY=$JOEY_VENV/bin/python
HELPER=$ROOT/scripts/compare_joeynmt.py
STARTED=$SECONDS

say() {
    local t=$((SECONDS - STARTED))
    printf '[%02d:%02d] %s\n' $((t / 60)) $((t % 60)) "$*"
}

# run LOG CMD...: run a stage with its output in LOG; on failure show the end of LOG and stop
run() {
    local log=$1
    shift
    if ! "$@" >"$log" 2>&1; then
        echo "---- last lines of $log ----" >&2
        tail -n 40 "$log" >&2
        KEEP=1
        die "failed: $*"
    fi
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

SETS=()
for o in "${OUR_SET[@]}"; do SETS+=(--set "$o"); done

if [[ -n $PORT_RUN ]]; then
    say "work dir $WORK; decoding $PORT_RUN with both, $THREADS threads"
else
    say "work dir $WORK; $WARMUP warm-up + $STEPS timed steps each, $THREADS threads"
fi

# -- 1. JoeyNMT's environment ---------------------------------------------------------------
joey_ready() {
    "$JOEY_PY" - <<'EOF' 2>/dev/null
import importlib.metadata as m
assert m.version("joeynmt") == "2.3.0" and m.version("sentencepiece") == "0.2.0"
m.version("importlib_metadata")
import joeynmt.training  # noqa: F401  (torch and the rest import)
EOF
}
if joey_ready; then
    say "JoeyNMT 2.3.0 found in $JOEY_VENV"
else
    say "installing JoeyNMT 2.3.0 and $JOEY_TORCH into $JOEY_VENV"
    [[ -x $JOEY_PY ]] || run "$WORK/venv.log" python3 -m venv "$JOEY_VENV"
    run "$WORK/pip-torch.log" "$JOEY_PY" -m pip install --quiet "$JOEY_TORCH"
    run "$WORK/pip-joeynmt.log" "$JOEY_PY" -m pip install --quiet "$JOEY_TORCH" \
        joeynmt==2.3.0 importlib_metadata sentencepiece==0.2.0
    joey_ready || {
        KEEP=1
        die "JoeyNMT 2.3.0 does not import from $JOEY_VENV (pip logs: $WORK/pip-*.log)"
    }
fi

# -- 2. data and configs ----------------------------------------------------------------------
mkdir -p "$WORK/joey/data"
TEST_EN=$WORK/joey/data/test.en
TEST_DE=$WORK/joey/data/test.de
for lang in en de; do # both systems decode these same files
    gzip -dc "$DATA_DIR/test_2016_flickr.$lang.gz" | sed -n "1,${SENTENCES}p" \
        >"$WORK/joey/data/test.$lang"
done

# -- RUN: port one of our runs to JoeyNMT, decode with both, print the table, stop ------------
if [[ -n $PORT_RUN ]]; then
    MODEL=$WORK/joey/model
    PIECES=$WORK/joey/data/test.pieces
    ALPHA_ARG=()
    if [[ -n $ALPHA ]]; then ALPHA_ARG=(--alpha "$ALPHA"); fi
    say "porting $PORT_RUN to JoeyNMT"
    run "$WORK/pieces.log" "$OUR_PY" "$HELPER" pieces --run "$PORT_RUN" --src "$TEST_EN" \
        --out "$PIECES"
    run "$WORK/port.log" "$OUR_PY" "$HELPER" port --run "$PORT_RUN" --out "$MODEL" \
        --beam "$BEAM" "${ALPHA_ARG[@]}" --check "$PIECES" --work "$WORK" --threads "$THREADS"
    say "$(tail -n 1 "$WORK/port.log")"
    run "$WORK/check-port.log" "$JOEY_PY" "$HELPER" check-port --work "$WORK" --model-dir "$MODEL"
    say "$(tail -n 1 "$WORK/check-port.log")"
    for mode in greedy beam; do
        beam=$([[ $mode == greedy ]] && echo 1 || echo "$BEAM")
        say "ours: decoding test2016, $mode"
        run "$WORK/ours-$mode.json" "$OUR_VENV/bin/translator" evaluate --bleu --run "$PORT_RUN" \
            --src "$TEST_EN" --ref "$TEST_DE" --beam "$beam" "${ALPHA_ARG[@]}" --json \
            --output "$WORK/ours-hyp.$mode"
        "$OUR_PY" "$HELPER" ours-decode "$mode" --work "$WORK" --json "$WORK/ours-$mode.json" \
            --hyp "$WORK/ours-hyp.$mode"
        say "JoeyNMT: decoding test2016, $mode"
        config=$([[ $mode == greedy ]] && echo greedy || echo config) # port wrote both
        t0=$(now)
        run "$WORK/joey-$mode.log" bash -c '"$1" -m joeynmt translate "$2" <"$3" >"$4"' _ \
            "$JOEY_PY" "$MODEL/$config.yaml" "$PIECES" "$WORK/joey/hyp.$mode.pieces"
        wall=$(elapsed "$t0" "$(now)")
        run "$WORK/joey-$mode-score.log" "$OUR_PY" "$HELPER" joey-decode "$mode" --work "$WORK" \
            --hyp "$WORK/joey/hyp.$mode.pieces" --detok "$WORK/joey/hyp.$mode" --ref "$TEST_DE" \
            --ours "$WORK/ours-hyp.$mode" --log "$WORK/joey-$mode.log" --wall "$wall"
        say "$(cat "$WORK/joey-$mode-score.log")"
    done
    "$OUR_PY" "$HELPER" table --work "$WORK"
    say "done"
    exit 0
fi

for split in train val; do
    for lang in en de; do gzip -dc "$DATA_DIR/$split.$lang.gz" >"$WORK/joey/data/$split.$lang"; done
done
say "ours: preparing the corpus (cached in $TRANSLATOR_CACHE_DIR)"
run "$WORK/ours-prepare.log" "$OUR_VENV/bin/translator" prepare -c "$CONFIG" "${SETS[@]}"
"$OUR_PY" "$HELPER" configs --work "$WORK" --config "$CONFIG" "${SETS[@]}" --steps "$STEPS" \
    --warmup "$WARMUP" --log-every "$LOG_EVERY" --threads "$THREADS" --beam "$BEAM" |
    sed 's/^/    /'
say "JoeyNMT: training a SentencePiece BPE of the same size"
run "$WORK/spm.log" "$JOEY_PY" "$HELPER" spm --work "$WORK" --threads "$THREADS"
say "$(tail -n 1 "$WORK/spm.log")"

# -- 3. our side: train, then decode ---------------------------------------------------------
OUR_RUN=$WORK/runs/ours
say "ours: training $((WARMUP + STEPS)) steps"
run "$WORK/ours-train.log" "$OUR_VENV/bin/translator" train -c "$CONFIG" "${SETS[@]}" \
    --run-dir "$OUR_RUN" --no-progress \
    --set train.max_steps=$((WARMUP + STEPS)) --set train.log_every="$LOG_EVERY" \
    --set train.valid_every=1000000000 --set train.valid_max_sentences=100 \
    --set train.max_epochs=null --set train.max_minutes=null --set train.patience=null \
    --set train.average_checkpoints=0 --set train.precision=fp32 --set train.device=cpu \
    --set train.threads="$THREADS"
run "$WORK/ours-rate.log" "$OUR_PY" "$HELPER" train-rate ours --work "$WORK" \
    --log "$OUR_RUN/metrics.jsonl" --warmup "$WARMUP"
say "$(cat "$WORK/ours-rate.log")"
run "$WORK/ours-corpus.log" "$OUR_PY" "$HELPER" ours-corpus --work "$WORK" --run "$OUR_RUN"
for mode in greedy beam; do
    beam=$([[ $mode == greedy ]] && echo 1 || echo "$BEAM")
    say "ours: decoding test2016, $mode"
    run "$WORK/ours-$mode.json" "$OUR_VENV/bin/translator" evaluate --bleu --run "$OUR_RUN" \
        --src "$WORK/joey/data/test.en" --ref "$WORK/joey/data/test.de" --beam "$beam" --json \
        --output "$WORK/ours-hyp.$mode"
    "$OUR_PY" "$HELPER" ours-decode "$mode" --work "$WORK" --json "$WORK/ours-$mode.json" \
        --hyp "$WORK/ours-hyp.$mode"
done

# -- 4. JoeyNMT: train, then decode ------------------------------------------------------------
say "JoeyNMT: training $((WARMUP + STEPS)) steps"
run "$WORK/joey-train.log" "$JOEY_PY" -m joeynmt train "$WORK/joey/train.yaml" --skip-test
run "$WORK/joey-rate.log" "$OUR_PY" "$HELPER" train-rate joey --work "$WORK" \
    --log "$WORK/joey/model/train.log" --warmup "$WARMUP"
say "$(cat "$WORK/joey-rate.log")"
for mode in greedy beam; do
    say "JoeyNMT: decoding test2016, $mode"
    # `translate -o FILE` crashes after decoding (it reads args.n_best): read stdout instead.
    t0=$(now)
    run "$WORK/joey-$mode.log" bash -c '"$1" -m joeynmt translate "$2" <"$3" >"$4"' _ \
        "$JOEY_PY" "$WORK/joey/$mode.yaml" "$WORK/joey/data/test.en" "$WORK/joey/hyp.$mode"
    wall=$(elapsed "$t0" "$(now)")
    run "$WORK/joey-$mode-score.log" "$OUR_PY" "$HELPER" joey-decode "$mode" --work "$WORK" \
        --hyp "$WORK/joey/hyp.$mode" --ref "$WORK/joey/data/test.de" \
        --log "$WORK/joey-$mode.log" --wall "$wall"
    say "$(cat "$WORK/joey-$mode-score.log")"
done

# -- 5. the table -----------------------------------------------------------------------------
"$OUR_PY" "$HELPER" table --work "$WORK"
say "done"
