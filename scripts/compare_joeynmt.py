"""Our trainer side by side with JoeyNMT 2.3.0 on this machine: same model, same data, same steps.

    scripts/compare_joeynmt.sh [CONFIG]                          # 6-11 minutes on 2 CPU cores
    STEPS=20 WARMUP=5 SENTENCES=100 scripts/compare_joeynmt.sh   # 2 minutes: every stage runs
    RUN=runs/tiny-bpe-90 scripts/compare_joeynmt.sh              # decoding only, one trained model

Training (default): JoeyNMT (installed into JOEY_VENV if missing) gets a copy of CONFIG's model
and one joint SentencePiece BPE of our vocabulary's size; both train WARMUP + STEPS steps, fp32 on
CPU, and each one's own log gives its target tokens/s over the STEPS steps, hence seconds per
epoch; both decode test2016 greedy and beam 5 (translation time only), scored by one sacreBLEU.
With RUN (one of our trained run dirs) nothing is trained: its weights go under JoeyNMT's names
and both decode from the same source pieces, so only network and search code differ.
One table compares both, with ours/JoeyNMT for each speed. How each figure is measured, where the
two differ and how long it takes: docs/compare-joeynmt.md.

Environment (all optional; most are also flags, e.g. `compare_joeynmt.py CONFIG --steps 20`):
  RUN                 our trained run dir: port it and compare decoding only
  ALPHA               length penalty of both beam searches (default: the config's or run's)
  STEPS=100           timed optimizer steps of each trainer
  WARMUP=10           untimed optimizer steps first (allocator, oneDNN kernels)
  THREADS=2           CPU threads for both (OMP_NUM_THREADS, which torch follows)
  SENTENCES=1000      decode only the first N test2016 sentences (for quick checks)
  CONFIG              our config, if not the first argument (default configs/multi30k.yaml)
  OUR_SET             overrides of our config, space separated (flag: --set, repeated),
                      e.g. OUR_SET="model.d_model=256 model.d_ff=1024"; JoeyNMT's model follows
  TRANSLATOR_DATA_DIR Multi30k's raw files (default /work/shared/data/multi30k)
  TRANSLATOR_CACHE_DIR our prepared-corpus cache (default: a fresh one in the work dir)
  JOEY_VENV           JoeyNMT's virtual environment (default /tmp/joeynmt-venv)
  JOEY_TORCH          the torch requirement installed there (default torch==2.13.0)
  OUR_VENV            our virtual environment, for the .sh (default .venv of this repository)
  KEEP=1              keep the work dir (logs, configs, hypotheses); a failure keeps it too
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

# Only the standard library at the top: `_joey_spm` runs in JoeyNMT's environment.
ROOT = Path(__file__).resolve().parent.parent
BEAM = 5
MODES = ("greedy", "beam")
JOEY_REQUIREMENTS = ("joeynmt==2.3.0", "importlib_metadata", "sentencepiece==0.2.0")
JOEY_READY = (  # 0.2.1+ of sentencepiece dropped the SetVocabulary that JoeyNMT calls
    "import importlib.metadata as m, importlib_metadata, joeynmt.training; "
    "assert m.version('joeynmt') == '2.3.0' and m.version('sentencepiece') == '0.2.0'"
)
SPM_SPECIALS = ("<unk>", "<pad>", "<s>", "</s>")  # the SentencePiece BPE's unk, pad, bos, eos
STARTED = time.monotonic()


def say(message: str) -> None:
    t = int(time.monotonic() - STARTED)
    print(f"[{t // 60:02d}:{t % 60:02d}] {message}", flush=True)


def sh(log: Path, *cmd, stdin: Path | None = None, stdout: Path | None = None) -> float:
    """Run one stage, its output in `log` (stdout in `stdout` if given): its wall seconds. On
    failure, show the end of `log` and stop."""
    cmd, started = [str(x) for x in cmd], time.perf_counter()
    with open(stdin or os.devnull, "rb") as inp, open(log, "wb") as err:
        with open(stdout or os.devnull, "wb") as out:
            code = subprocess.run(cmd, stdin=inp, stdout=out if stdout else err, stderr=err)
    if code.returncode:
        tail = log.read_text("utf-8", "replace").splitlines()[-40:]
        print(f"---- last lines of {log} ----", *tail, sep="\n", file=sys.stderr)
        raise SystemExit(f"compare_joeynmt: failed: {' '.join(cmd)}")
    return time.perf_counter() - started


def joey_env(a) -> None:
    """JoeyNMT 2.3.0 in a.joey_venv: found there, or installed."""

    def ready() -> bool:
        check = [a.joey_py, "-c", JOEY_READY]
        return a.joey_py.exists() and subprocess.run(check, capture_output=True).returncode == 0

    if ready():
        return say(f"JoeyNMT 2.3.0 found in {a.joey_venv}")
    say(f"installing JoeyNMT 2.3.0 and {a.joey_torch} into {a.joey_venv}")
    if not a.joey_py.exists():
        sh(a.work / "venv.log", sys.executable, "-m", "venv", a.joey_venv)
    pip = (a.joey_py, "-m", "pip", "install", "--quiet", a.joey_torch)
    sh(a.work / "pip-torch.log", *pip)
    sh(a.work / "pip-joeynmt.log", *pip, *JOEY_REQUIREMENTS)
    if not ready():
        raise SystemExit(f"JoeyNMT 2.3.0 does not import from {a.joey_venv} (pip logs: {a.work})")


# -- JoeyNMT's configs: one builder for the training and the port -------------------------------


def joey_config(cfg, name: str, model_dir: Path, **sections) -> dict:
    """JoeyNMT 2.3.0's config (its YAML as a dict) for the Transformer of our config `cfg`, with
    `sections`' keys added to its own (data, testing, training, model)."""
    m, dec = cfg.model, cfg.decode
    # fmt: off
    stack = {"type": "transformer", "num_heads": m.n_heads, "hidden_size": m.d_model,
             "ff_size": m.d_ff, "dropout": m.dropout, "layer_norm": m.norm, "activation": "relu",
             "embeddings": {"embedding_dim": m.d_model, "scale": True, "dropout": m.dropout}}
    config = {
        "name": name, "joeynmt_version": "2.3.0", "model_dir": str(model_dir),
        "use_cuda": False, "fp16": False, "random_seed": cfg.train.seed, "data": {},
        "testing": {"n_best": 1, "beam_size": 1, "beam_alpha": dec.length_penalty,
                    "batch_size": dec.batch_size, "batch_type": "sentence",
                    # JoeyNMT's only per-batch rule: 1.5 x the longest source (with </s>)
                    "max_output_length": -1},
        "training": {},
        "model": {"tied_embeddings": m.share_all_embeddings,
                  "tied_softmax": m.tie_target_embeddings or m.share_all_embeddings,
                  "encoder": {**stack, "num_layers": m.encoder_layers},
                  "decoder": {**stack, "num_layers": m.decoder_layers}},
    }
    # fmt: on
    for section, keys in sections.items():
        config[section].update(keys)
    return config


def joey_specials(*tokens: str) -> dict:
    """JoeyNMT's special_symbols: `tokens` are unk, pad, bos, eos, which get the ids 0-3."""
    specials = {}
    for i, (name, token) in enumerate(zip(("unk", "pad", "bos", "eos"), tokens)):
        specials[f"{name}_token"], specials[f"{name}_id"] = token, i
    return specials


def write_configs(config: dict, joey: Path, names=MODES) -> None:
    """joey/NAME.yaml for each name: beam BEAM for "beam", else 1 (greedy, train)."""
    import yaml

    for name in names:
        config["testing"]["beam_size"] = BEAM if name == "beam" else 1
        plain = json.loads(json.dumps(config))  # no YAML anchors for the dicts used twice
        text = yaml.safe_dump(plain, sort_keys=False, allow_unicode=True)
        (joey / f"{name}.yaml").write_text(text, encoding="utf-8")


def require_en_de(cfg) -> None:
    """Both systems are trained and scored on Multi30k's English -> German files."""
    if (cfg.data.src_lang, cfg.data.tgt_lang) != ("en", "de"):
        pair = f"{cfg.data.src_lang} -> {cfg.data.tgt_lang}"
        raise SystemExit(f"compare_joeynmt compares on Multi30k en -> de; this config is {pair}")


def describe(m) -> str:
    """Our model config in a few words."""
    return (
        f"{m.encoder_layers}+{m.decoder_layers} layers, d_model {m.d_model}, {m.n_heads} heads, "
        f"ffn {m.d_ff}, dropout {m.dropout}, {m.norm}-norm"
    )


def max_length_note(dec) -> str:
    return (
        "JoeyNMT's max output length is 1.5 x the longest source (with </s>) in the batch, "
        f"ours {dec.max_len_a} x each source + {dec.max_len_b}"
    )


# -- training both -----------------------------------------------------------------------------


def training_notes(cfg, src_vocab: int, tgt_vocab: int) -> list[str]:
    """What JoeyNMT's copy of our config cannot make the same."""
    m, v, precision = cfg.model, cfg.vocab, cfg.train.precision
    notes = []
    if v.kind != "bpe":
        notes.append(f"our vocab is kind={v.kind}: JoeyNMT gets a SentencePiece BPE of its size")
    if not v.joint:
        notes.append(f"our vocabularies are separate ({src_vocab}/{tgt_vocab}): JoeyNMT's is joint")
    if m.positions != "sinusoidal":
        notes.append(f"our positions are {m.positions}: JoeyNMT has sinusoidal ones only")
    if m.attention_dropout != m.dropout:
        notes.append(f"JoeyNMT's attention dropout is {m.dropout} (ours {m.attention_dropout})")
    if m.activation_dropout not in (None, m.dropout):
        notes.append(
            f"JoeyNMT's dropout inside the FFN is {m.dropout} (ours {m.activation_dropout})"
        )
    if m.share_all_embeddings and not m.tie_target_embeddings:
        notes.append("share_all_embeddings without tie_target_embeddings: JoeyNMT ties both")
    if precision != "fp32":
        notes.append(f"our config says precision={precision}; both sides run fp32 here")
    noise = ["model.word_dropout", "model.word_dropout_tgt", "model.word_replace"]
    noise += ["model.word_replace_tgt", "model.layerdrop", "train.rdrop", "vocab.bpe_dropout"]
    for key in noise:
        section, name = key.split(".")
        if value := getattr(getattr(cfg, section), name, 0):
            notes.append(f"our {key}={value}: JoeyNMT has none, it trains without")
    return notes + [max_length_note(cfg.decode)]


def timed_rate(points: list[tuple[int, float, float]], warmup: int) -> tuple[float, float, int]:
    """(step, time, tokens/s of the window that ends there) -> tokens/s after `warmup` steps,
    and the seconds and steps it is over.

    Each logged window's tokens are its rate x its duration; the rate over the timed part is
    their sum over the time from the log at the end of the warm-up to the last one.
    """
    start = next((t for step, t, _ in points if step == warmup), None)
    if start is None:
        raise SystemExit(f"no training log line at the end of the warm-up (step {warmup})")
    tokens, previous, last_step = 0.0, start, warmup
    for step, t, rate in points:
        if step > warmup:
            tokens += rate * (t - previous)
            previous, last_step = t, step
    if last_step == warmup or previous <= start:
        raise SystemExit("no training log line after the warm-up: raise STEPS")
    return tokens / (previous - start), previous - start, last_step - warmup


JOEY_STEP = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*Epoch\s+\d+, Step:\s+(\d+),"
    r".*Tokens per Sec:\s+([\d.]+)"
)


def joey_points(log: str) -> list[tuple[int, float, float]]:
    """(step, time, tokens/s) of each training line of JoeyNMT's train.log."""
    points = []
    for match in filter(None, map(JOEY_STEP.match, log.splitlines())):
        stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        points.append((int(match[2]), stamp, float(match[3])))
    return points


def train_rate(name: str, points: list[tuple[int, float, float]], warmup: int) -> dict:
    rate, seconds, steps = timed_rate(points, warmup)
    say(f"{name}: {rate:.0f} target tokens/s over {steps} steps ({seconds:.1f} s)")
    return {"train_tok_s": rate}


# Our side of the timed training: no validation until the end, fp32 on the CPU, nothing else.
OUR_TRAINING = """train.valid_every=1000000000 train.valid_max_sentences=100 train.max_epochs=null
train.max_minutes=null train.patience=null train.average_checkpoints=0 train.precision=fp32
train.device=cpu"""


def train_both(a) -> tuple[dict, dict, dict]:
    """Train our model of a.config and JoeyNMT's copy of it, then decode with each."""
    from translator.config import load_config
    from translator.data.corpus import prepare
    from translator.data.multi30k import read_lines
    from translator.model.weights import load_run
    from translator.run_dir import read_metrics

    cfg = load_config(a.config, a.overrides)
    require_en_de(cfg)
    m, d, v, t = cfg.model, cfg.data, cfg.vocab, cfg.train
    joey, data = a.work / "joey", a.work / "joey" / "data"
    for name in ("train.en", "train.de", "val.en", "val.de"):
        lines = read_lines(a.data / f"{name}.gz")
        (data / name).write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    say(f"ours: preparing the corpus (cached in {os.environ['TRANSLATOR_CACHE_DIR']})")
    corpus = prepare(cfg)
    # The vocabulary we actually built (a BPE can stop short of bpe_size): JoeyNMT gets a
    # SentencePiece BPE of exactly that many pieces, specials included on both sides.
    src_n, vocab_size = len(corpus.src_vocab), len(corpus.tgt_vocab)
    pairs, _ = corpus.splits[d.train_split].filter_length(d.max_len)
    ours = {
        "vocab": f"{vocab_size} joint" if v.joint else f"{src_n}/{vocab_size}",
        "epoch_pairs": len(pairs),
        "epoch_tokens": int(pairs.tgt.lengths().sum() + len(pairs)),  # + </s>
    }
    del corpus, pairs
    joint = "joint " if v.joint else ""
    model = f"{describe(m)}, token batches of {d.max_tokens}, {joint}vocabulary of {vocab_size}"
    say(f"model: {model}")

    log_every = math.gcd(a.warmup, a.steps)  # both log at the warm-up's end and the last step
    # fmt: off
    side = {"level": "bpe", "lowercase": d.lowercase, "max_length": d.max_len, "min_length": 1,
            "voc_file": str(joey / "vocab.txt"), "tokenizer_type": "sentencepiece",
            "tokenizer_cfg": {"model_file": str(joey / "spm.model")}}
    config = joey_config(
        cfg, f"joeynmt-{cfg.name}", joey / "model",
        data={"train": str(data / "train"), "dev": str(data / "val"), "test": str(data / "test"),
              "dataset_type": "plain", "src": {"lang": d.src_lang, **side},
              "trg": {"lang": d.tgt_lang, **side},
              "special_symbols": joey_specials(*SPM_SPECIALS)},
        testing={"load_model": str(joey / "model" / "latest.ckpt"), "eval_metrics": ["bleu"],
                 "sacrebleu_cfg": {"tokenize": "13a"}},
        training={
            "optimizer": t.optimizer, "adam_betas": list(t.betas), "weight_decay": t.weight_decay,
            # JoeyNMT's default minimum (1e-4) would end training during the warm-up.
            "learning_rate": t.lr, "learning_rate_min": 1.0e-8,
            # JoeyNMT 2.3.0 has no linear or constant schedule (and requires one): inverse-sqrt
            # stands in for them; a step takes as long whatever its learning rate.
            "scheduling": "warmupinversesquareroot", "learning_rate_warmup": t.warmup_steps,
            "label_smoothing": t.label_smoothing, "clip_grad_norm": t.clip_norm,
            "loss": "crossentropy", "normalization": "tokens",
            "batch_size": d.max_tokens, "batch_type": "token", "batch_multiplier": t.accumulate,
            "updates": a.warmup + a.steps, "epochs": 100000, "logging_freq": log_every,
            "validation_freq": 10**9,  # never during the timed steps
            "early_stopping_metric": "bleu", "keep_best_ckpts": 1, "print_valid_sents": [],
            "shuffle": True, "overwrite": True, "num_workers": 0},
        model={"initializer": "xavier_uniform", "embed_initializer": "xavier_uniform",
               "bias_initializer": "zeros", "init_gain": 1.0},
    )
    # fmt: on
    if a.alpha is not None:
        config["testing"]["beam_alpha"] = a.alpha
    write_configs(config, joey, ("train", *MODES))
    say("JoeyNMT: training a SentencePiece BPE of the same size")  # in JoeyNMT's environment
    spm = (a.joey_py, __file__, "_joey_spm", joey, vocab_size, d.max_len, a.threads)
    sh(a.work / "spm.log", *spm, stdout=a.work / "spm.json")
    theirs = json.loads((a.work / "spm.json").read_text("utf-8"))
    say(f"SentencePiece BPE: {theirs['vocab']} pieces; {theirs['epoch_pairs']} training pairs")

    run = a.work / "runs" / "ours"
    say(f"ours: training {a.warmup + a.steps} steps")
    sets = [*a.overrides, *OUR_TRAINING.split(), f"train.max_steps={a.warmup + a.steps}"]
    sets += [f"train.log_every={log_every}", f"train.threads={a.threads}"]
    sh(
        a.work / "ours-train.log",
        *(sys.executable, "-m", "translator", "train", "-c", a.config, "--run-dir", run),
        *(x for s in sets for x in ("--set", s)),
        "--no-progress",
    )
    metrics = [r for r in read_metrics(run) if "tokens_per_s" in r]
    points = [(r["step"], r["elapsed_s"], r["tokens_per_s"]) for r in metrics]
    ours.update(train_rate("translator", points, a.warmup))
    ours["params"] = sum(p.numel() for p in load_run(run).model.parameters())
    for mode in MODES:
        ours.update(decode_ours(a, run, mode))

    say(f"JoeyNMT: training {a.warmup + a.steps} steps")
    train = (a.joey_py, "-m", "joeynmt", "train", joey / "train.yaml", "--skip-test")
    sh(a.work / "joey-train.log", *train)
    points = joey_points((joey / "model" / "train.log").read_text("utf-8"))
    theirs.update(train_rate("JoeyNMT 2.3.0", points, a.warmup), vocab=f"{theirs['vocab']} joint")
    for mode in MODES:
        theirs.update(decode_joey(a, mode, data / "test.en", ported=False))
    setup = (
        f"model: {model}\ntraining: {a.steps} timed optimizer steps after {a.warmup} warm-up "
        f"steps, no validation, fp32 on CPU, {a.threads} threads"
    )
    notes = [
        "tokens are each system's own subwords: compare seconds per epoch across systems",
        "neither model is trained to convergence: BLEU only shows that both learn alike",
        *training_notes(cfg, src_n, vocab_size),
    ]
    title = " ".join(map(str, (a.config, *a.overrides)))
    return {"title": title, "setup": setup, "notes": notes}, ours, theirs


def joey_spm(joey: str, vocab_size: str, max_len: str, threads: str) -> dict:
    """(In JoeyNMT's environment) one joint SentencePiece BPE of the training text, as JoeyNMT's
    build_vocab.py, its vocab file, and one epoch's training pairs and target tokens (+ </s>)."""
    import sentencepiece as spm

    texts = [Path(joey, "data", f"train.{lang}") for lang in ("en", "de")]
    # The ids and pieces of the config's special_symbols: unk_piece="<unk>", unk_id=0, ...
    specials = {k.replace("_token", "_piece"): x for k, x in joey_specials(*SPM_SPECIALS).items()}
    spm.SentencePieceTrainer.train(
        input=",".join(map(str, texts)),
        model_prefix=f"{joey}/spm",
        model_type="bpe",
        vocab_size=int(vocab_size),
        character_coverage=1.0,
        num_threads=int(threads),
        minloglevel=2,
        **specials,
    )
    pieces = [x.split("\t")[0] for x in Path(joey, "spm.vocab").read_text("utf-8").splitlines()]
    Path(joey, "vocab.txt").write_text("\n".join(pieces) + "\n", encoding="utf-8")
    sp = spm.SentencePieceProcessor(model_file=f"{joey}/spm.model")
    src, tgt = ([len(x) for x in sp.encode(p.read_text("utf-8").splitlines())] for p in texts)
    kept = [y for x, y in zip(src, tgt) if 0 < x <= int(max_len) and 0 < y <= int(max_len)]
    return {"vocab": len(pieces), "epoch_pairs": len(kept), "epoch_tokens": sum(kept) + len(kept)}


# -- decoding ----------------------------------------------------------------------------------


def decoded(system: str, mode: str, seconds: float, hyp: Path, bleu: float, more="") -> dict:
    """The table's values of one decoding, logged. Output tokens as scripts/bench_decode.py counts
    them: spaCy tokens of the text + one </s> a line (one rule for both, whatever the subwords)."""
    from translator.data.tokenization import Tokenizer

    lines = hyp.read_text("utf-8").splitlines()
    tokens = sum(len(x) + 1 for x in Tokenizer("de").tokenize(lines))  # test2016's German side
    say(f"{system} {mode}: {len(lines)} sentences in {seconds:.1f} s, BLEU {bleu:.2f}{more}")
    return {
        f"{mode}_sent_s": len(lines) / seconds,
        f"{mode}_tok_s": tokens / seconds,
        f"{mode}_bleu": bleu,
        f"{mode}_chars": mean_chars(hyp),
    }


def mean_chars(path: Path) -> float:
    lines = path.read_text("utf-8").splitlines()
    return sum(len(x) for x in lines) / max(len(lines), 1)


def decode_ours(a, run: Path, mode: str) -> dict:
    """`translator evaluate --json` of test.en: its seconds (translation only) and BLEU."""
    data, hyp, out = a.work / "joey" / "data", a.work / f"ours.{mode}", a.work / f"ours-{mode}.json"
    say(f"ours: decoding test2016, {mode}")
    alpha = [] if a.alpha is None else ["--alpha", a.alpha]
    sh(
        a.work / f"ours-{mode}.log",
        *(sys.executable, "-m", "translator", "evaluate", "--bleu", "--run", run, "--json"),
        *("--src", data / "test.en", "--ref", data / "test.de", "--output", hyp),
        *("--beam", BEAM if mode == "beam" else 1, *alpha),
        stdout=out,
    )
    result = json.loads([x for x in out.read_text("utf-8").splitlines() if x[:1] == "{"][-1])
    return decoded("translator", mode, result["seconds"], hyp, result["bleu"])


def decode_joey(a, mode: str, src: Path, ported: bool) -> dict:
    """`joeynmt translate` of `src`: its own "Generation took" seconds (the command's wall time
    if missing); a port's output pieces become text through our detokenizer. sacreBLEU as ours."""
    from translator.data.tokenization import detokenize
    from translator.decoding.scoring import score

    joey, log = a.work / "joey", a.work / f"joey-{mode}.log"
    hyp = joey / f"hyp.{mode}"
    out = joey / f"hyp.{mode}.pieces" if ported else hyp
    say(f"JoeyNMT: decoding test2016, {mode}")
    # `translate -o FILE` crashes after decoding (it reads args.n_best): read stdout instead.
    translate = (a.joey_py, "-m", "joeynmt", "translate", joey / f"{mode}.yaml")
    wall = sh(log, *translate, stdin=src, stdout=out)
    if ported:
        pieces = out.read_text("utf-8").splitlines()
        hyp.write_text("".join(detokenize(x.split()) + "\n" for x in pieces), "utf-8")
    hyps = hyp.read_text("utf-8").splitlines()
    refs = (joey / "data" / "test.de").read_text("utf-8").splitlines()
    values, more = {f"{mode}_wall_s": wall}, f" ({wall:.1f} s with start-up)"
    if ported:
        ours = (a.work / f"ours.{mode}").read_text("utf-8").splitlines()
        values[f"{mode}_same"] = 100 * sum(x == y for x, y in zip(ours, hyps)) / len(hyps)
        more += f", {values[f'{mode}_same']:.1f}% identical to ours"
    text = log.read_text("utf-8", "replace")
    if params := re.search(r"Total params: (\d+)", text):
        values["params"] = int(params[1])
    took = re.findall(r"Generation took ([\d.]+)\[sec\]", text)
    bleu = score(hyps, refs, "de", literature=False)["bleu"]
    return decoded("JoeyNMT", mode, float(took[-1]) if took else wall, hyp, bleu, more) | values


# -- port: one of our trained runs as a JoeyNMT model --------------------------------------------
#
# JoeyNMT's Transformer computes what ours does (docs/compare-joeynmt.md), so our weights only
# need JoeyNMT's names: the ported model dir then decodes our model from the same source pieces.


def joey_order(vocab) -> list[int]:
    """Our ids in JoeyNMT's order: JoeyNMT's id i is our id order[i]. Our specials keep their
    names, but JoeyNMT puts unk, pad, bos, eos first: <pad> and <unk> swap ids (0 <-> 1)."""
    first = [vocab.unk_id, vocab.pad_id, vocab.sos_id, vocab.eos_id]
    return first + [i for i in range(len(vocab)) if i not in first]


def joey_state(model, src_order: list[int], tgt_order: list[int]) -> dict:
    """Our model's tensors under the names of JoeyNMT's state dict (joeynmt/*.py modules)."""
    from torch import nn

    from translator.model.transformer import sinusoid_table

    state = {
        "src_embed.lut.weight": model.src_embed.lut.weight[src_order],
        "trg_embed.lut.weight": model.tgt_embed.lut.weight[tgt_order],
        "decoder.output_layer.weight": model.generator.weight[tgt_order],
    }

    def put(name: str, module) -> None:  # a Linear or a LayerNorm
        state[f"{name}.weight"], state[f"{name}.bias"] = module.weight, module.bias

    def attention(name: str, ours) -> None:
        # Our w_kv stacks W^K over W^V; in both, a head is a block of d_k consecutive rows.
        d = ours.w_q.out_features
        put(f"{name}.q_layer", ours.w_q)
        for j, part in enumerate(("k_layer", "v_layer")):
            state[f"{name}.{part}.weight"] = ours.w_kv.weight[j * d : (j + 1) * d]
            state[f"{name}.{part}.bias"] = ours.w_kv.bias[j * d : (j + 1) * d]
        put(f"{name}.output_layer", ours.w_o)

    def ffn(name: str, ours, norm) -> None:  # JoeyNMT's feed-forward module holds its LayerNorm
        put(f"{name}.pwff_layer.0", ours.w_1)
        put(f"{name}.pwff_layer.3", ours.w_2)
        put(f"{name}.layer_norm", norm)

    for i, layer in enumerate(model.encoder.layers):
        p = f"encoder.layers.{i}"
        attention(f"{p}.src_src_att", layer.self_attn)
        put(f"{p}.layer_norm", layer.sublayers[0].norm)
        ffn(f"{p}.feed_forward", layer.ffn, layer.sublayers[1].norm)
    for i, layer in enumerate(model.decoder.layers):
        p = f"decoder.layers.{i}"
        attention(f"{p}.trg_trg_att", layer.self_attn)
        put(f"{p}.x_layer_norm", layer.sublayers[0].norm)
        attention(f"{p}.src_trg_att", layer.cross_attn)
        put(f"{p}.dec_layer_norm", layer.sublayers[1].norm)
        ffn(f"{p}.feed_forward", layer.ffn, layer.sublayers[2].norm)
    if isinstance(model.encoder.norm, nn.LayerNorm):  # pre-norm: each stack's final LayerNorm
        put("encoder.layer_norm", model.encoder.norm)
        put("decoder.layer_norm", model.decoder.norm)
    # JoeyNMT's checkpoints carry its position table: 5,000 rows of the same formula as ours.
    table = sinusoid_table(5000, model.d_model).unsqueeze(0)
    state["encoder.pe.pe"] = state["decoder.pe.pe"] = table
    return {name: tensor.detach().clone() for name, tensor in state.items()}


def port(translator, joey: Path, alpha: float) -> None:
    """Write JoeyNMT's model dir joey/model (vocabularies, best.ckpt) of our run's model, the
    configs joey/{greedy,beam}.yaml that decode it, and its input joey/data/test.pieces (the
    pieces our model reads of each line of test.en)."""
    import torch

    cfg, tv, out = translator.cfg, translator.tgt_vocab, joey / "model"
    if cfg.model.positions != "sinusoidal":
        raise SystemExit(f"{cfg.model.positions} positions: JoeyNMT has sinusoidal ones only")
    out.mkdir()
    orders = {"src": joey_order(translator.src_vocab), "trg": joey_order(tv)}
    for name, vocab in (("src", translator.src_vocab), ("trg", tv)):
        tokens = [vocab.itos[i] for i in orders[name]]
        # JoeyNMT reads its vocabulary with str.splitlines and its input split at spaces.
        if bad := [x for x in tokens if x.splitlines() != [x] or " " in x]:
            raise SystemExit(f"tokens JoeyNMT cannot read back: {bad[:5]}")
        (out / f"{name}_vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    state = joey_state(translator.model, orders["src"], orders["trg"])
    torch.save({"model_state": state}, out / "best.ckpt")
    # Level "word" with no pre-tokenizer: the input is our pieces, split at spaces, as is.
    side = {"level": "word", "lowercase": False, "tokenizer_cfg": {"pretokenizer": "none"}}
    config = joey_config(
        cfg,
        f"port-{translator.run_dir.name}",
        out,
        data={
            "test": str(out / "stdin"),  # JoeyNMT wants some data path; `translate` reads stdin
            "src": {"lang": cfg.data.src_lang, "voc_file": str(out / "src_vocab.txt"), **side},
            "trg": {"lang": cfg.data.tgt_lang, "voc_file": str(out / "trg_vocab.txt"), **side},
            "special_symbols": joey_specials(*(tv.itos[i] for i in orders["trg"][:4])),
        },
        testing={
            "load_model": str(out / "best.ckpt"),
            # Both divide a finished hypothesis's log-prob by ((5 + |Y|) / 6)^alpha, |Y| with </s>.
            "beam_alpha": alpha,
            "min_output_length": 0,  # JoeyNMT's default 1 bans </s> as the first token; ours not
        },
        training={"batch_size": cfg.decode.batch_size},  # required by JoeyNMT's config parser
    )
    write_configs(config, joey)

    src = (joey / "data" / "test.en").read_text("utf-8").split("\n")[:-1]
    lines = [x[: translator.max_source_tokens] for x in translator.source_pieces(src)]
    if empty := [i + 1 for i, pieces in enumerate(lines) if not pieces]:
        raise SystemExit(f"test2016: empty line(s) {empty[:5]}")  # JoeyNMT would skip them
    (joey / "data" / "test.pieces").write_text("".join(" ".join(x) + "\n" for x in lines), "utf-8")


def decode_both(a) -> tuple[dict, dict, dict]:
    """Port our run a.run to JoeyNMT and decode test.en with each."""
    from translator.decoding.translator import Translator

    translator = Translator.load(a.run)
    require_en_de(translator.cfg)
    m, dec = translator.cfg.model, translator.cfg.decode
    alpha = dec.length_penalty if a.alpha is None else a.alpha
    say(f"porting {a.run} to JoeyNMT")
    port(translator, a.work / "joey", alpha)
    model = f"{a.run}: {describe(m)}, vocabulary {len(translator.tgt_vocab)}"
    model += " (joint, all embeddings shared)" * m.share_all_embeddings
    say(f"ported {model} (beam {BEAM}, alpha {alpha})")
    params = sum(p.numel() for p in translator.model.parameters())
    vocab = str(len(translator.tgt_vocab))  # the port writes our vocabulary for JoeyNMT
    ours, theirs = {"params": params, "vocab": vocab}, {"vocab": vocab}
    del translator
    # No logit check here: the port is unit-tested (tests/test_compare_joeynmt.py), `joeynmt
    # translate` loads it strictly, and the table's identical-output share shows it decodes ours.
    for mode in MODES:
        ours.update(decode_ours(a, a.run, mode))
        theirs.update(decode_joey(a, mode, a.work / "joey/data/test.pieces", ported=True))
    setup = (
        "ported to JoeyNMT (our weights under its names; both read our source pieces, and "
        f"JoeyNMT's output pieces go through our detokenizer); fp32 on CPU, {a.threads} threads; "
        f"beam {BEAM} with length penalty alpha {alpha} on both sides"
    )
    notes = [
        max_length_note(dec),
        "batching and search rules differ too (JoeyNMT has no key/value cache, and ends a beam "
        "once every slot has finished): see docs/compare-joeynmt.md",
    ]
    return {"title": f"decoding one model, {model}", "setup": setup, "notes": notes}, ours, theirs


# -- the table ---------------------------------------------------------------------------------

ROWS = [  # (label, key, digits, higher is faster?; None: not a speed, no ratio)
    ("parameters (millions)", "params_m", 2, None),
    ("vocabulary", "vocab", 0, None),
    ("training pairs per epoch", "epoch_pairs", 0, None),
    ("target tokens per epoch (incl. </s>)", "epoch_tokens", 0, None),
    ("training: target tokens/s", "train_tok_s", 0, True),
    ("seconds per epoch (extrapolated)", "epoch_s", 0, False),
    ("greedy decoding: sentences/s", "greedy_sent_s", 1, True),
    ("greedy decoding: output tokens/s", "greedy_tok_s", 0, True),
    (f"beam {BEAM} decoding: sentences/s", "beam_sent_s", 1, True),
    (f"beam {BEAM} decoding: output tokens/s", "beam_tok_s", 0, True),
    ("greedy: mean output length, characters", "greedy_chars", 1, None),
    (f"beam {BEAM}: mean output length, characters", "beam_chars", 1, None),
    ("BLEU greedy (sacreBLEU, test2016)", "greedy_bleu", 2, None),
    (f"BLEU beam {BEAM} (sacreBLEU, test2016)", "beam_bleu", 2, None),
    ("greedy: outputs identical to ours, %", "greedy_same", 1, None),
    (f"beam {BEAM}: outputs identical to ours, %", "beam_same", 1, None),
]


def fmt(value, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return value if isinstance(value, str) else f"{value:,.{digits}f}"


def table(a, meta: dict, ours: dict, joey: dict) -> None:
    for system in (ours, joey):
        if system.get("train_tok_s") and system.get("epoch_tokens"):
            system["epoch_s"] = system["epoch_tokens"] / system["train_tok_s"]
        system["params_m"] = system["params"] / 1e6 if system.get("params") else None
    print(f"\ntranslator vs JoeyNMT 2.3.0 on this machine: {meta['title']}\n{meta['setup']}\n")
    head = f"{'':<42}{'translator':>12}{'JoeyNMT':>12}{'ours/JoeyNMT':>14}  "
    print(head, "-" * len(head), sep="\n")
    for label, key, digits, higher_faster in ROWS:
        x, y = ours.get(key), joey.get(key)
        if x is None and y is None:  # a port's training rows, a training's identical shares
            continue
        ratio = speed = ""
        if higher_faster is not None and x and y:
            ratio, speedup = f"{x / y:.2f}", x / y if higher_faster else y / x
            speed = f"ours {speedup:.1f}x" if speedup >= 1 else f"JoeyNMT {1 / speedup:.1f}x"
            speed += " faster"
        print(f"{label:<42}{fmt(x, digits):>12}{fmt(y, digits):>12}{ratio:>14}  {speed}")
    data = a.work / "joey" / "data"
    n = len((data / "test.en").read_text("utf-8").splitlines())
    print(
        f"\nDecoding: the first {n} sentences of test2016. Times: ours `translator evaluate`'s "
        "(tokenization and detokenization included), JoeyNMT's own 'Generation took' (search "
        f"only; with start-up and model loading: greedy {fmt(joey.get('greedy_wall_s'), 1)} s, "
        f"beam {fmt(joey.get('beam_wall_s'), 1)} s)."
    )
    print(*(f"note: {note}" for note in meta["notes"]), sep="\n")
    if a.run:  # one model on both sides: its outputs are alike
        return
    ref_chars = mean_chars(data / "test.de")
    for mode, label in (("greedy", "greedy"), ("beam", f"beam {BEAM}")):
        x, y = ours[f"{mode}_chars"], joey[f"{mode}_chars"]
        if min(x, y) < 0.8 * max(x, y) or max(x, y) < 0.5 * ref_chars:
            print(
                f"WARNING: the {label} outputs are {x:.0f} (ours) and {y:.0f} (JoeyNMT) "
                f"characters long on average, the references {ref_chars:.0f}: the models are "
                f"too little trained for {label} speeds to be compared like for like (decoding "
                "time grows with output length). Raise STEPS (our default config reaches val BLEU "
                "~3 after 250 steps, ~13 after 1,000) or judge by the training figures."
            )


# -- main --------------------------------------------------------------------------------------


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


def arguments() -> argparse.Namespace:
    """Flags, each defaulting to its environment variable (the docstring's list)."""
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    config = env("CONFIG") or ROOT / "configs/multi30k.yaml"
    p.add_argument("config", nargs="?", type=Path, default=config, help="$CONFIG")
    overrides = env("OUR_SET", "").split()
    p.add_argument("--set", dest="overrides", action="append", default=overrides, help="$OUR_SET")
    for flag, kind, default in [
        ("run", Path, None),
        ("alpha", float, None),
        ("steps", positive, "100"),
        ("warmup", positive, "10"),
        ("threads", positive, "2"),
        ("sentences", positive, "1000"),
        ("joey-venv", Path, "/tmp/joeynmt-venv"),
        ("joey-torch", str, "torch==2.13.0"),
    ]:
        name = flag.upper().replace("-", "_")
        p.add_argument(f"--{flag}", type=kind, default=env(name) or default, help=f"${name}")
    p.add_argument("--keep", action="store_true", default=env("KEEP") == "1", help="$KEEP=1")
    a = p.parse_args()
    a.data = Path(env("TRANSLATOR_DATA_DIR", "/work/shared/data/multi30k"))
    a.joey_py = a.joey_venv.absolute() / "bin" / "python"
    if a.alpha is not None and not a.alpha >= 0:
        p.error(f"ALPHA must be a number >= 0, got {a.alpha}")
    if a.run and not all((a.run / x).is_file() for x in ("config.yaml", "model.safetensors")):
        p.error(f"RUN={a.run} is not a trained run dir (no config.yaml and model.safetensors)")
    if not a.run and not a.config.is_file():
        p.error(f"config not found: {a.config}")
    a.run, a.config = a.run and a.run.absolute(), a.config.absolute()
    splits = ["test_2016_flickr"] + ([] if a.run else ["train", "val"])
    for path in (a.data / f"{split}.{lang}.gz" for split in splits for lang in ("en", "de")):
        if not path.is_file():
            p.error(f"missing {path} (set TRANSLATOR_DATA_DIR to Multi30k's folder)")
    return a


def main() -> None:
    a = arguments()
    a.work = Path(tempfile.mkdtemp(prefix="compare-joeynmt."))
    os.environ.update(
        TRANSLATOR_DATA_DIR=str(a.data),
        TRANSLATOR_CACHE_DIR=os.environ.get("TRANSLATOR_CACHE_DIR", str(a.work / "cache")),
        TRANSLATOR_RUNS_DIR=str(a.work / "runs"),
        OMP_NUM_THREADS=str(a.threads),
        MKL_NUM_THREADS=str(a.threads),
        PYTHONWARNINGS="ignore",
    )
    keep = a.keep
    try:
        what = f"decoding {a.run} with both" if a.run else f"{a.warmup} + {a.steps} steps each"
        say(f"work dir {a.work}; {what}, {a.threads} threads")
        joey_env(a)
        from translator.data.multi30k import read_lines

        (a.work / "joey" / "data").mkdir(parents=True)
        for lang in ("en", "de"):  # both systems decode these same files
            lines = read_lines(a.data / f"test_2016_flickr.{lang}.gz")[: a.sentences]
            text = "".join(x + "\n" for x in lines)
            (a.work / "joey" / "data" / f"test.{lang}").write_text(text, encoding="utf-8")
        table(a, *(decode_both(a) if a.run else train_both(a)))
        say("done")
    except BaseException:
        keep = True
        raise
    finally:
        if keep:
            print(f"work dir kept: {a.work}")
        else:
            shutil.rmtree(a.work)


if __name__ == "__main__":
    if sys.argv[1:2] == ["_joey_spm"]:  # train_both's step in JoeyNMT's environment
        print(json.dumps(joey_spm(*sys.argv[2:])))
    else:
        main()
