"""Helper of scripts/compare_joeynmt.sh: JoeyNMT configs, log parsing and the final table.

Each subcommand does one step of the comparison and records what it measured in WORK/results.json
(plain json, so the steps can run in either virtual environment):

    configs      (our venv)     JoeyNMT YAML configs for the model of one of our configs
    spm          (JoeyNMT venv) joint SentencePiece BPE, JoeyNMT vocab file, tokens per epoch
    ours-corpus  (our venv)     our parameters, vocabulary sizes, target tokens per epoch
    train-rate   (any)          target tokens/s after the warm-up, from metrics.jsonl or train.log
    pieces       (our venv)     the source pieces our model reads, one line each: JoeyNMT's input
    port         (our venv)     a JoeyNMT model dir holding one of our trained runs' model
    check-port   (JoeyNMT venv) load the port as JoeyNMT does, compare its logits with ours
    ours-decode  (our venv)     speed and BLEU from `translator evaluate --json`
    joey-decode  (our venv)     speed of a JoeyNMT decoding log, BLEU of its output (sacreBLEU),
                                identical outputs; a port's output pieces through our detokenizer
    table        (any)          the side-by-side table

A port by hand (JoeyNMT prints our pieces, for translator.tokenization.detokenize):

    python scripts/compare_joeynmt.py pieces --run runs/X --src in.en --out in.pieces
    python scripts/compare_joeynmt.py port --run runs/X --out joey-X [--alpha 2.0]
    /tmp/joeynmt-venv/bin/python -m joeynmt translate joey-X/config.yaml <in.pieces >out.pieces

Only the standard library is imported at the top: each subcommand imports what it needs.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from datetime import datetime
from pathlib import Path

SYSTEMS = {"ours": "translator", "joey": "JoeyNMT 2.3.0"}


# -- results.json ------------------------------------------------------------------------------


def load_results(work: Path) -> dict:
    path = work / "results.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def record(work: Path, section: str, **values) -> None:
    results = load_results(work)
    results.setdefault(section, {}).update(values)
    (work / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


# -- configs -----------------------------------------------------------------------------------


def cmd_configs(args: argparse.Namespace) -> None:
    """JoeyNMT configs for the model, data, batches and schedule of our config (prepared)."""
    import yaml

    from translator.config import load_config
    from translator.corpus import prepare

    cfg = load_config(args.config, args.overrides)
    m, d, v, t, dec = cfg.model, cfg.data, cfg.vocab, cfg.train, cfg.decode
    work = args.work.resolve()
    joey = work / "joey"
    notes = []
    if v.kind != "bpe":
        notes.append(f"our vocab is kind={v.kind}: JoeyNMT gets a SentencePiece BPE of its size")
    if m.positions != "sinusoidal":
        notes.append(f"our positions are {m.positions}: JoeyNMT has sinusoidal ones only")
    if m.attention_dropout != m.dropout:
        notes.append(
            f"JoeyNMT drops attention weights at dropout={m.dropout} "
            f"(ours: attention_dropout={m.attention_dropout})"
        )
    if m.activation_dropout not in (None, m.dropout):
        notes.append(
            f"JoeyNMT drops inside the feed-forward network at dropout={m.dropout} "
            f"(ours: activation_dropout={m.activation_dropout})"
        )
    if m.share_all_embeddings and not m.tie_target_embeddings:
        notes.append("share_all_embeddings without tie_target_embeddings: JoeyNMT ties both")
    if t.precision != "fp32":
        notes.append(f"our config says precision={t.precision}; both sides run fp32 here")
    notes.append(
        "JoeyNMT's max output length is 1.5 x the longest source in the batch "
        f"(ours: {dec.max_len_a} x source + {dec.max_len_b})"
    )
    # The vocabulary we actually built (a BPE can stop short of bpe_size): JoeyNMT gets a
    # SentencePiece BPE of exactly that many pieces, specials included on both sides.
    corpus = prepare(cfg)
    vocab_size = len(corpus.tgt_vocab)
    if not v.joint:
        notes.append(
            f"our vocabularies are separate ({len(corpus.src_vocab)} / {vocab_size}): JoeyNMT "
            f"gets one joint BPE of the target side's size"
        )

    def side(lang: str) -> dict:
        return {
            "lang": lang,
            "level": "bpe",
            "lowercase": d.lowercase,
            "max_length": d.max_len,
            "min_length": 1,
            "voc_file": str(joey / "vocab.txt"),
            "tokenizer_type": "sentencepiece",
            "tokenizer_cfg": {"model_file": str(joey / "spm.model")},
        }

    def stack(layers: int) -> dict:
        return {
            "type": "transformer",
            "num_layers": layers,
            "num_heads": m.n_heads,
            "embeddings": {"embedding_dim": m.d_model, "scale": True, "dropout": m.dropout},
            "hidden_size": m.d_model,
            "ff_size": m.d_ff,
            "dropout": m.dropout,
            "layer_norm": m.norm,
        }

    base = {
        "name": f"joeynmt-{cfg.name}",
        "joeynmt_version": "2.3.0",
        "model_dir": str(joey / "model"),
        "use_cuda": False,
        "fp16": False,
        "random_seed": t.seed,
        "data": {
            "train": str(joey / "data" / "train"),
            "dev": str(joey / "data" / "val"),
            "test": str(joey / "data" / "test"),
            "dataset_type": "plain",
            "src": side(d.src_lang),
            "trg": side(d.tgt_lang),
            "special_symbols": {
                "unk_token": "<unk>",
                "unk_id": 0,
                "pad_token": "<pad>",
                "pad_id": 1,
                "bos_token": "<s>",
                "bos_id": 2,
                "eos_token": "</s>",
                "eos_id": 3,
            },
        },
        "testing": {
            "load_model": str(joey / "model" / "latest.ckpt"),
            "n_best": 1,
            "beam_size": 1,
            "beam_alpha": dec.length_penalty,
            "batch_size": dec.batch_size,
            "batch_type": "sentence",
            "max_output_length": -1,
            "eval_metrics": ["bleu"],
            "sacrebleu_cfg": {"tokenize": "13a"},
        },
        "training": {
            "optimizer": t.optimizer,
            "adam_betas": list(t.betas),
            "weight_decay": t.weight_decay,
            "learning_rate": t.lr,
            # JoeyNMT's default minimum (1e-4) ends training during the warm-up.
            "learning_rate_min": 1.0e-8,
            # JoeyNMT 2.3.0 has no linear or constant schedule (and requires one): inverse-sqrt
            # stands in for them; a step takes as long whatever its learning rate.
            "scheduling": "warmupinversesquareroot",
            "learning_rate_warmup": t.warmup_steps,
            "label_smoothing": t.label_smoothing,
            "clip_grad_norm": t.clip_norm,
            "loss": "crossentropy",
            "normalization": "tokens",
            "batch_size": d.max_tokens,
            "batch_type": "token",
            "batch_multiplier": t.accumulate,
            "updates": args.warmup + args.steps,
            "epochs": 100000,
            "logging_freq": args.log_every,
            "validation_freq": 10**9,  # never during the timed steps
            "early_stopping_metric": "bleu",
            "keep_best_ckpts": 1,
            "print_valid_sents": [],
            "shuffle": True,
            "overwrite": True,
            "num_workers": 0,
        },
        "model": {
            "initializer": "xavier_uniform",
            "embed_initializer": "xavier_uniform",
            "bias_initializer": "zeros",
            "init_gain": 1.0,
            "tied_embeddings": m.share_all_embeddings,
            "tied_softmax": m.tie_target_embeddings or m.share_all_embeddings,
            "encoder": stack(m.encoder_layers),
            "decoder": stack(m.decoder_layers),
        },
    }
    joey.mkdir(parents=True, exist_ok=True)
    for name, beam in (("train", 1), ("greedy", 1), ("beam", args.beam)):
        cfg_out = json.loads(json.dumps(base))
        cfg_out["testing"]["beam_size"] = beam
        (joey / f"{name}.yaml").write_text(yaml.safe_dump(cfg_out, sort_keys=False))
    model = (
        f"{m.encoder_layers}+{m.decoder_layers} layers, d_model {m.d_model}, {m.n_heads} heads, "
        f"ffn {m.d_ff}, dropout {m.dropout}, {m.norm}-norm, token batches of {d.max_tokens}, "
        f"{'joint ' if v.joint else ''}vocabulary of {vocab_size}"
    )
    record(
        work,
        "meta",
        config=str(args.config),
        overrides=list(args.overrides),
        model=model,
        steps=args.steps,
        warmup=args.warmup,
        threads=args.threads,
        beam=args.beam,
        decode_batch=dec.batch_size,
        vocab_size=vocab_size,
        max_len=d.max_len,
        tgt_lang=d.tgt_lang,
        notes=notes,
    )
    print(f"model: {model}")
    for note in notes:
        print(f"note: {note}")


# -- SentencePiece for JoeyNMT ---------------------------------------------------------------


def cmd_spm(args: argparse.Namespace) -> None:
    """Train one joint SentencePiece BPE on the training text (as JoeyNMT's build_vocab.py)."""
    import sentencepiece as spm

    work = args.work.resolve()
    joey = work / "joey"
    meta = load_results(work)["meta"]
    src, tgt = joey / "data" / "train.en", joey / "data" / "train.de"
    spm.SentencePieceTrainer.train(
        input=f"{src},{tgt}",
        model_prefix=str(joey / "spm"),
        model_type="bpe",
        vocab_size=meta["vocab_size"],
        character_coverage=1.0,
        unk_id=0,
        pad_id=1,
        bos_id=2,
        eos_id=3,
        unk_piece="<unk>",
        pad_piece="<pad>",
        bos_piece="<s>",
        eos_piece="</s>",
        num_threads=args.threads,
        minloglevel=2,
    )
    pieces = [line.split("\t")[0] for line in (joey / "spm.vocab").read_text("utf-8").splitlines()]
    (joey / "vocab.txt").write_text("\n".join(pieces) + "\n", encoding="utf-8")
    sp = spm.SentencePieceProcessor(model_file=str(joey / "spm.model"))
    src_lines = src.read_text("utf-8").splitlines()
    tgt_lines = tgt.read_text("utf-8").splitlines()
    src_lens = [len(x) for x in sp.encode(src_lines)]
    tgt_lens = [len(x) for x in sp.encode(tgt_lines)]
    limit = meta["max_len"]
    kept = [(s, t) for s, t in zip(src_lens, tgt_lens) if 0 < s <= limit and 0 < t <= limit]
    record(
        work,
        "joey",
        vocab=f"{len(pieces)} joint",
        epoch_pairs=len(kept),
        epoch_tokens=sum(t + 1 for _, t in kept),  # + </s>, as JoeyNMT counts them
    )
    print(f"SentencePiece BPE: {len(pieces)} pieces; {len(kept)} training pairs")


# -- our corpus --------------------------------------------------------------------------------


def cmd_ours_corpus(args: argparse.Namespace) -> None:
    """Parameters, vocabulary sizes and target tokens of one epoch (incl. </s>) of our run."""
    from translator.corpus import prepare
    from translator.run_dir import load_run

    run = load_run(args.run)
    cfg = run.cfg
    pairs, _ = prepare(cfg).splits[cfg.data.train_split].filter_length(cfg.data.max_len)
    src_n, tgt_n = len(run.src_vocab), len(run.tgt_vocab)
    record(
        args.work.resolve(),
        "ours",
        params=sum(p.numel() for p in run.model.parameters()),
        vocab=f"{src_n} joint" if cfg.vocab.joint else f"{src_n}/{tgt_n}",
        epoch_pairs=len(pairs),
        epoch_tokens=int(pairs.tgt.lengths().sum() + len(pairs)),
    )


# -- training speed --------------------------------------------------------------------------

JOEY_STEP = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*Epoch\s+\d+, Step:\s+(\d+),"
    r".*Tokens per Sec:\s+([\d.]+)"
)
JOEY_PARAMS = re.compile(r"Total params: (\d+)")


def timed_rate(points: list[tuple[int, float, float]], warmup: int) -> tuple[float, float, int]:
    """(step, time, tokens/s of the window that ends there) -> tokens/s after `warmup` steps.

    Each logged window's tokens are its rate x its duration; the rate over the timed part is
    their sum over the time from the log at the end of the warm-up to the last one.
    """
    start = next((time for step, time, _ in points if step == warmup), None)
    if start is None:
        raise SystemExit(f"no training log line at the end of the warm-up (step {warmup})")
    tokens, previous, last_step = 0.0, start, warmup
    for step, time, rate in points:
        if step > warmup:
            tokens += rate * (time - previous)
            previous, last_step = time, step
    if last_step == warmup or previous <= start:
        raise SystemExit("no training log line after the warm-up: raise STEPS")
    return tokens / (previous - start), previous - start, last_step - warmup


def cmd_train_rate(args: argparse.Namespace) -> None:
    work = args.work.resolve()
    values = {}
    if args.system == "ours":
        from translator.run_dir import read_metrics

        steps = [r for r in read_metrics(args.log.parent) if "tokens_per_s" in r]
        points = [(r["step"], r["elapsed_s"], r["tokens_per_s"]) for r in steps]
        both = [(r["step"], r["elapsed_s"], r["src_tgt_tokens_per_s"]) for r in steps]
        values["src_tgt_tok_s"] = timed_rate(both, args.warmup)[0]
    else:
        text = args.log.read_text("utf-8")
        points = []
        for line in text.splitlines():
            match = JOEY_STEP.match(line)
            if match:
                stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                points.append((int(match[2]), stamp, float(match[3])))
        params = JOEY_PARAMS.search(text)
        if params:
            values["params"] = int(params[1])
    rate, seconds, steps = timed_rate(points, args.warmup)
    values.update(train_tok_s=rate, timed_s=seconds, timed_steps=steps)
    record(work, args.system, **values)
    name = SYSTEMS[args.system]
    print(f"{name}: {rate:.0f} target tokens/s over {steps} steps ({seconds:.1f} s)")


# -- port: one of our trained runs as a JoeyNMT model --------------------------------------------
#
# JoeyNMT's Transformer computes what ours does (the same layers and norm placement, embeddings
# x √d_model, the same interleaved sin/cos positions from 0, source + </s>, target <s> + ...), so
# our weights only need JoeyNMT's names: the ported model dir then decodes our model, reading the
# same source pieces as ours, and its output pieces go back through our detokenizer.

# Our specials (translator.vocab.SPECIALS: <pad> <unk> <sos> <eos>) keep their names, but JoeyNMT
# always puts unk, pad, bos, eos first in that order: <pad> and <unk> swap ids (0 <-> 1).
JOEY_SPECIALS = {
    "unk_token": "<unk>",
    "unk_id": 0,
    "pad_token": "<pad>",
    "pad_id": 1,
    "bos_token": "<sos>",
    "bos_id": 2,
    "eos_token": "<eos>",
    "eos_id": 3,
}
CHECK_SENTENCES = 16  # sentences of the logit check (port --check, then check-port)


def joey_order(vocab) -> list[int]:
    """Our ids in JoeyNMT's order: JoeyNMT's id i is our id order[i]."""
    specials = [JOEY_SPECIALS[f"{name}_token"] for name in ("unk", "pad", "bos", "eos")]
    first = [vocab.stoi[token] for token in specials]
    return first + [i for i in range(len(vocab)) if i not in first]


def cmd_pieces(args: argparse.Namespace) -> None:
    """Write the source pieces of each line of --src, space separated: JoeyNMT's input."""
    from translator.data import read_lines
    from translator.translate import Translator

    translator = Translator.load(args.run)
    limit = translator.cfg.model.max_positions - 1  # as Translator cuts its input
    lines = [p[:limit] for p in translator.source_pieces(read_lines(args.src))]
    empty = [i + 1 for i, pieces in enumerate(lines) if not pieces]
    if empty:  # JoeyNMT skips empty input lines, which would misalign the outputs
        raise SystemExit(f"{args.src}: empty line(s) {empty[:5]}")
    args.out.write_text("".join(" ".join(p) + "\n" for p in lines), encoding="utf-8")


def joey_state(model, src_order: list[int], tgt_order: list[int]) -> dict:
    """Our model's tensors under the names of JoeyNMT's state dict (joeynmt/*.py modules)."""
    from torch import nn

    from translator.model import sinusoid_table

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


def cmd_port(args: argparse.Namespace) -> None:
    """Write a JoeyNMT model dir (configs, vocabularies, best.ckpt) holding our run's model."""
    import torch
    import yaml

    from translator.run_dir import load_run

    run = load_run(args.run)
    cfg, m, dec, model = run.cfg, run.cfg.model, run.cfg.decode, run.model
    if m.positions != "sinusoidal":
        raise SystemExit(f"{args.run}: {m.positions} positions; JoeyNMT has sinusoidal ones only")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    vocabs = {"src": run.src_vocab, "trg": run.tgt_vocab}
    orders = {name: joey_order(vocab) for name, vocab in vocabs.items()}
    for name, vocab in vocabs.items():
        tokens = [vocab.itos[i] for i in orders[name]]
        # JoeyNMT reads its vocabulary with str.splitlines and its input split at spaces.
        bad = [t for t in tokens if t.splitlines() != [t] or " " in t]
        if bad:
            raise SystemExit(f"{args.run}: tokens JoeyNMT cannot read back: {bad[:5]}")
        (out / f"{name}_vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    state = joey_state(model, orders["src"], orders["trg"])
    torch.save({"model_state": state}, out / "best.ckpt")

    def side(lang: str, name: str) -> dict:
        # Level "word" with no pre-tokenizer: the input is our pieces, split at spaces, as is.
        return {
            "lang": lang,
            "level": "word",
            "lowercase": False,
            "voc_file": str(out / f"{name}_vocab.txt"),
            "tokenizer_cfg": {"pretokenizer": "none"},
        }

    def stack(layers: int) -> dict:
        return {
            "type": "transformer",
            "num_layers": layers,
            "num_heads": m.n_heads,
            "embeddings": {"embedding_dim": m.d_model, "scale": True},  # x √d_model, as ours
            "hidden_size": m.d_model,
            "ff_size": m.d_ff,
            "dropout": m.dropout,  # off when decoding, as ours
            "layer_norm": m.norm,
            "activation": "relu",
        }

    beam = args.beam or dec.beam_size
    alpha = dec.length_penalty if args.alpha is None else args.alpha
    joey = {
        "name": f"port-{Path(args.run).resolve().name}",
        "joeynmt_version": "2.3.0",
        "model_dir": str(out),
        "use_cuda": False,
        "data": {
            "test": str(out / "stdin"),  # JoeyNMT wants some data path; `translate` reads stdin
            "src": side(cfg.data.src_lang, "src"),
            "trg": side(cfg.data.tgt_lang, "trg"),
            "special_symbols": JOEY_SPECIALS,
        },
        "testing": {
            "load_model": str(out / "best.ckpt"),
            "beam_size": beam,
            # Both divide a finished hypothesis's log-prob by ((5 + |Y|) / 6)^alpha, |Y| with </s>.
            "beam_alpha": alpha,
            "n_best": 1,
            "batch_size": dec.batch_size,
            "batch_type": "sentence",
            # JoeyNMT's only per-batch rule: 1.5 x the longest source (with </s>) of the batch.
            "max_output_length": -1,
            "min_output_length": 0,  # JoeyNMT's default 1 bans </s> as the first token; ours not
        },
        "training": {"batch_size": dec.batch_size},  # required by JoeyNMT's config parser only
        "model": {
            "tied_embeddings": m.share_all_embeddings,
            "tied_softmax": m.tie_target_embeddings or m.share_all_embeddings,
            "encoder": stack(m.encoder_layers),
            "decoder": stack(m.decoder_layers),
        },
    }
    for name, size in (("config", beam), ("greedy", 1)):
        joey["testing"]["beam_size"] = size
        (out / f"{name}.yaml").write_text(
            yaml.safe_dump(joey, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
    if args.check:
        write_check(run, args.check, out / "check.pt")
    n_params = sum(p.numel() for p in model.parameters())
    model_desc = (
        f"{args.run}: {m.encoder_layers}+{m.decoder_layers} layers, d_model {m.d_model}, "
        f"{m.n_heads} heads, ffn {m.d_ff}, {m.norm}-norm, vocabulary {len(run.tgt_vocab)}"
        f"{' (joint, all embeddings shared)' if m.share_all_embeddings else ''}"
    )
    if args.work:
        # What the port cannot make the same (the searches are what is being compared).
        notes = [
            "max output length: JoeyNMT's is 1.5 x the longest source (with </s>) of the "
            f"batch, ours {dec.max_len_a} x each source + {dec.max_len_b}; outputs differ only "
            "where one would be longer than 1.5 x its source",
            f"batches of {dec.batch_size} sentences: JoeyNMT's in input order, sorted within "
            "the batch; ours after sorting the whole input by length (less padding)",
            "greedy: JoeyNMT re-feeds the whole prefix at each step (no key/value cache) and "
            "decodes a batch until its last sentence ends; ours caches keys/values and drops "
            "finished sentences",
            "beam: JoeyNMT (OpenNMT style) keeps the k best candidates, finished ones included, "
            "and ends a sentence once every beam slot has finished; ours (fairseq style) keeps "
            "k unfinished ones out of the 2k best and ends after k finished hypotheses; both "
            "rank finished hypotheses by log-prob / ((5 + |Y|) / 6)^alpha",
        ]
        record(
            args.work.resolve(),
            "meta",
            run=str(args.run),
            model=model_desc,
            beam=beam,
            alpha=alpha,
            threads=args.threads,
            decode_batch=dec.batch_size,
            tgt_lang=cfg.data.tgt_lang,
            notes=notes,
        )
        record(args.work.resolve(), "ours", params=n_params, vocab=str(len(run.tgt_vocab)))
    print(f"ported {model_desc} to {out} (beam {beam}, alpha {alpha})")


def write_check(run, pieces_file: Path, path: Path) -> None:
    """Our logits for the first sentences of a pieces file, teacher-forced on our greedy output."""
    import torch

    from translator.batching import pad_sequences
    from translator.decode import search

    lines = pieces_file.read_text("utf-8").split("\n")[:CHECK_SENTENCES]
    src_pieces = [line.split(" ") for line in lines if line]
    sv, tv, dec = run.src_vocab, run.tgt_vocab, run.cfg.decode
    src_ids = [sv.encode(pieces) for pieces in src_pieces]
    src = torch.from_numpy(pad_sequences(src_ids, sv.pad_id, suffix=sv.eos_id))
    hyps = search(run.model, src, dec.override(beam_size=1), sos_id=tv.sos_id, eos_id=tv.eos_id)
    tgt_in = torch.from_numpy(pad_sequences(hyps, tv.pad_id, prefix=tv.sos_id))
    with torch.inference_mode():
        logits = run.model(src, tgt_in)
    torch.save(
        {
            "src": src_pieces,
            "tgt": [[tv.itos[i] for i in hyp] for hyp in hyps],
            "itos": tv.itos,
            "logits": logits,
        },
        path,
    )


def cmd_check_port(args: argparse.Namespace) -> None:
    """Load the ported model as `joeynmt translate` does (strictly) and compare logits with ours."""
    import torch
    from joeynmt.config import load_config, parse_global_args
    from joeynmt.prediction import prepare

    cfg = load_config(args.model_dir / "greedy.yaml")
    model, _, _, _ = prepare(parse_global_args(cfg, mode="translate"), rank=0, mode="translate")
    model.eval()  # as JoeyNMT's predict() does
    check = torch.load(args.model_dir / "check.pt", weights_only=True)
    src, src_length, _ = model.src_vocab.sentences_to_ids(check["src"], bos=False, eos=True)
    trg, _, _ = model.trg_vocab.sentences_to_ids(check["tgt"], bos=True, eos=False)
    src, trg = torch.tensor(src), torch.tensor(trg)
    src_mask = (src != model.pad_index).unsqueeze(1)
    trg_mask = (trg != model.pad_index).unsqueeze(1)
    with torch.no_grad():
        memory, _, _, _ = model(
            return_type="encode", src=src, src_length=torch.tensor(src_length), src_mask=src_mask
        )
        logits, _, _, _ = model(
            return_type="decode",
            encoder_output=memory,
            encoder_hidden=None,
            src_mask=src_mask,
            trg_input=trg,
            unroll_steps=trg.size(1),
            trg_mask=trg_mask,
        )
    logits = logits[..., [model.trg_vocab.lookup(t) for t in check["itos"]]]  # our id order
    ours, real = check["logits"], trg_mask.squeeze(1)
    diff = (logits - ours)[real].abs().max().item()
    same = (logits.argmax(-1) == ours.argmax(-1))[real].float().mean().item()
    record(
        args.work.resolve(),
        "joey",
        logit_diff=diff,
        logit_argmax_same=same,
        vocab=str(len(model.trg_vocab)),
    )
    print(
        f"JoeyNMT loaded the port; on {len(check['src'])} sentences ({int(real.sum())} target "
        f"positions) its logits differ from ours by at most {diff:.2g}, same argmax at "
        f"{100 * same:.1f}% of positions"
    )


# -- decoding --------------------------------------------------------------------------------


def mean_chars(path: Path) -> float:
    """Mean length in characters of the lines of a detokenized text file."""
    lines = path.read_text("utf-8").splitlines()
    return sum(len(x) for x in lines) / max(len(lines), 1)


def output_tokens(path: Path, lang: str) -> int:
    """Output tokens of a detokenized text file as scripts/bench_decode.py counts them: spaCy
    tokens plus one </s> a line (one rule for both systems, whatever subwords they emit)."""
    from translator.tokenization import Tokenizer

    lines = path.read_text("utf-8").splitlines()
    return sum(len(tokens) + 1 for tokens in Tokenizer(lang).tokenize(lines))


def cmd_ours_decode(args: argparse.Namespace) -> None:
    """Read the JSON line of `translator evaluate --json`."""
    lines = [x for x in args.json.read_text("utf-8").splitlines() if x.startswith("{")]
    if not lines:
        raise SystemExit(f"no JSON result in {args.json}")
    result = json.loads(lines[-1])
    record(
        args.work.resolve(),
        "ours",
        **{
            f"{args.mode}_s": result["seconds"],
            f"{args.mode}_sent_s": result["n"] / result["seconds"],
            f"{args.mode}_tok_s": output_tokens(args.hyp, args.tgt_lang) / result["seconds"],
            f"{args.mode}_bleu": result["bleu"],
            f"{args.mode}_chars": mean_chars(args.hyp),
        },
    )
    print(
        f"translator {args.mode}: {result['n']} sentences in {result['seconds']:.1f} s, "
        f"BLEU {result['bleu']:.2f}"
    )


def cmd_joey_decode(args: argparse.Namespace) -> None:
    """Time from JoeyNMT's own 'Generation took' line (wall time of the command as fallback)."""
    from translator.evaluate import score
    from translator.tokenization import detokenize

    hyp = args.hyp
    if args.detok:  # a ported model's output: our pieces, which our detokenizer turns into text
        pieces = hyp.read_text("utf-8").splitlines()
        args.detok.write_text("".join(detokenize(x.split()) + "\n" for x in pieces), "utf-8")
        hyp = args.detok
    hyps = hyp.read_text("utf-8").splitlines()
    refs = args.ref.read_text("utf-8").splitlines()
    log = args.log.read_text("utf-8")
    took = re.findall(r"Generation took ([\d.]+)\[sec\]", log)
    seconds = float(took[-1]) if took else args.wall
    result = score(hyps, refs, args.tgt_lang, literature=False)
    values = {
        f"{args.mode}_s": seconds,
        f"{args.mode}_wall_s": args.wall,
        f"{args.mode}_sent_s": len(refs) / seconds,
        f"{args.mode}_tok_s": output_tokens(hyp, args.tgt_lang) / seconds,
        f"{args.mode}_bleu": result["bleu"],
        f"{args.mode}_chars": mean_chars(hyp),
    }
    same = ""
    if args.ours:
        ours = args.ours.read_text("utf-8").splitlines()
        values[f"{args.mode}_same"] = 100 * sum(a == b for a, b in zip(ours, hyps)) / len(hyps)
        same = f", {values[f'{args.mode}_same']:.1f}% identical to ours"
    params = JOEY_PARAMS.search(log)
    if params:
        values["params"] = int(params[1])
    record(args.work.resolve(), "joey", **values)
    print(
        f"JoeyNMT {args.mode}: {len(hyps)} sentences in {seconds:.1f} s "
        f"({args.wall:.1f} s with start-up), BLEU {result['bleu']:.2f}{same}"
    )


# -- table -------------------------------------------------------------------------------------


def fmt(value, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:,.{digits}f}"


def cmd_table(args: argparse.Namespace) -> None:
    results = load_results(args.work.resolve())
    meta, ours, joey = results.get("meta", {}), results.get("ours", {}), results.get("joey", {})
    ported = "run" in meta  # decoding one of our runs ported to JoeyNMT, no training
    for system in (ours, joey):
        if system.get("train_tok_s") and system.get("epoch_tokens"):
            system["epoch_s"] = system["epoch_tokens"] / system["train_tok_s"]
        if system.get("params"):
            system["params_m"] = system["params"] / 1e6
    beam = meta.get("beam", 5)
    # (label, key, digits, higher is faster?) ; None: not a speed, no ratio; rows with no value
    # on either side (training rows of a port) are left out
    rows = [
        ("parameters (millions)", "params_m", 2, None),
        ("vocabulary", "vocab", 0, None),
        ("training pairs per epoch", "epoch_pairs", 0, None),
        ("target tokens per epoch (incl. </s>)", "epoch_tokens", 0, None),
        ("training: target tokens/s", "train_tok_s", 0, True),
        ("seconds per epoch (extrapolated)", "epoch_s", 0, False),
        ("greedy decoding: sentences/s", "greedy_sent_s", 1, True),
        ("greedy decoding: output tokens/s", "greedy_tok_s", 0, True),
        (f"beam {beam} decoding: sentences/s", "beam_sent_s", 1, True),
        (f"beam {beam} decoding: output tokens/s", "beam_tok_s", 0, True),
        ("greedy: mean output length, characters", "greedy_chars", 1, None),
        (f"beam {beam}: mean output length, characters", "beam_chars", 1, None),
        ("BLEU greedy (sacreBLEU, test2016)", "greedy_bleu", 2, None),
        (f"BLEU beam {beam} (sacreBLEU, test2016)", "beam_bleu", 2, None),
        ("greedy: outputs identical to ours, %", "greedy_same", 1, None),
        (f"beam {beam}: outputs identical to ours, %", "beam_same", 1, None),
    ]
    print()
    if ported:
        print(f"translator vs JoeyNMT 2.3.0 on this machine, decoding one model: {meta['model']}")
        print(
            f"ported to JoeyNMT with scripts/compare_joeynmt.py port; fp32 on CPU, "
            f"{meta.get('threads')} threads; beam {beam} with length penalty alpha "
            f"{meta.get('alpha')} on both sides"
        )
    else:
        print(
            f"translator vs JoeyNMT 2.3.0 on this machine: {meta.get('config')} "
            f"{' '.join(meta.get('overrides', []))}".rstrip()
        )
        print(f"model: {meta.get('model')}")
        print(
            f"training: {meta.get('steps')} timed optimizer steps after {meta.get('warmup')} "
            f"warm-up steps, no validation, fp32 on CPU, {meta.get('threads')} threads"
        )
    print()
    head = f"{'':<42}{'translator':>12}{'JoeyNMT':>12}{'ours/JoeyNMT':>14}  "
    print(head)
    print("-" * len(head))
    for label, key, digits, higher_faster in rows:
        a, b = ours.get(key), joey.get(key)
        if a is None and b is None:
            continue
        ratio = speed = ""
        if higher_faster is not None and a and b:
            ratio = f"{a / b:.2f}"
            speedup = a / b if higher_faster else b / a
            speed = (
                f"ours {speedup:.1f}x faster"
                if speedup >= 1
                else f"JoeyNMT {1 / speedup:.1f}x faster"
            )
        print(f"{label:<42}{fmt(a, digits):>12}{fmt(b, digits):>12}{ratio:>14}  {speed}")
    print()
    test = args.work.resolve() / "joey" / "data" / "test.en"
    n = len(test.read_text("utf-8").splitlines()) if test.exists() else "?"
    ref = args.work.resolve() / "joey" / "data" / "test.de"
    ref_chars = mean_chars(ref) if ref.exists() else None
    wall = (
        f"with start-up and model loading: greedy {fmt(joey.get('greedy_wall_s'), 1)} s, "
        f"beam {fmt(joey.get('beam_wall_s'), 1)} s"
    )
    if ported:
        print(
            f"Decoding: the first {n} sentences of test2016. Both read the same source pieces "
            "(ours: spaCy + BPE of the text; JoeyNMT: those pieces, written out) and their "
            "output pieces become text by our detokenizer. Times: ours, `translator evaluate` "
            "(tokenization, BPE and detokenization included); JoeyNMT, its own 'Generation "
            f"took' (batching and search only; {wall}). Output tokens: spaCy tokens of the "
            "output text + </s>, as scripts/bench_decode.py counts them."
        )
        if "logit_diff" in joey:
            print(
                f"Port check: JoeyNMT's logits differ from ours by at most "
                f"{joey['logit_diff']:.2g} (its LayerNorm eps is 1e-6, ours 1e-5), same "
                f"argmax at {100 * joey['logit_argmax_same']:.1f}% of positions."
            )
    else:
        print(
            "Tokens are each system's own subwords (ours: BPE of spaCy tokens; JoeyNMT: "
            "SentencePiece BPE of raw text), so compare seconds per epoch across systems."
        )
        print(
            f"Decoding: the first {n} sentences of test2016, batches of "
            f"{meta.get('decode_batch')} sentences, translation time only (JoeyNMT's own "
            f"'Generation took'; {wall}). Neither model is trained to convergence: BLEU only "
            "shows that both learn alike in the same number of steps."
        )
    for note in meta.get("notes", []):
        print(f"note: {note}")
    for mode, label in (("greedy", "greedy"), ("beam", f"beam {beam}")):
        a, b = ours.get(f"{mode}_chars"), joey.get(f"{mode}_chars")
        if ported or a is None or b is None or ref_chars is None:
            continue
        if min(a, b) < 0.8 * max(a, b) or max(a, b) < 0.5 * ref_chars:
            print(
                f"WARNING: the {label} outputs are {a:.0f} (ours) and {b:.0f} (JoeyNMT) "
                f"characters long on average, the references {ref_chars:.0f}: the models are "
                f"too little trained for {label} speeds to be compared like for like (decoding "
                "time grows with output length). Raise STEPS (our default config reaches val BLEU "
                "~3 after 250 steps, ~13 after 1,000) or judge by the training figures."
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("configs")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--warmup", type=int, required=True)
    p.add_argument("--log-every", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--beam", type=int, default=5)
    p.set_defaults(func=cmd_configs)

    p = sub.add_parser("spm")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_spm)

    p = sub.add_parser("ours-corpus")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--run", type=Path, required=True)
    p.set_defaults(func=cmd_ours_corpus)

    p = sub.add_parser("train-rate")
    p.add_argument("system", choices=["ours", "joey"])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--log", type=Path, required=True)
    p.add_argument("--warmup", type=int, required=True)
    p.set_defaults(func=cmd_train_rate)

    p = sub.add_parser("pieces")
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--src", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_pieces)

    p = sub.add_parser("port")
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--beam", type=int, help="beam size of config.yaml [the run's]")
    p.add_argument("--alpha", type=float, help="length penalty [the run's]")
    p.add_argument("--check", type=Path, help="pieces file: save our logits for check-port")
    p.add_argument("--work", type=Path, help="record into WORK/results.json")
    p.add_argument("--threads", type=int, help="decoding threads, recorded for the table")
    p.set_defaults(func=cmd_port)

    p = sub.add_parser("check-port")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--model-dir", type=Path, required=True)
    p.set_defaults(func=cmd_check_port)

    p = sub.add_parser("ours-decode")
    p.add_argument("mode", choices=["greedy", "beam"])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--hyp", type=Path, required=True)
    p.add_argument("--tgt-lang", default="de")
    p.set_defaults(func=cmd_ours_decode)

    p = sub.add_parser("joey-decode")
    p.add_argument("mode", choices=["greedy", "beam"])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--hyp", type=Path, required=True)
    p.add_argument("--ref", type=Path, required=True)
    p.add_argument("--log", type=Path, required=True)
    p.add_argument("--wall", type=float, required=True)
    p.add_argument("--tgt-lang", default="de")
    p.add_argument("--detok", type=Path, help="--hyp holds our pieces: detokenize them to here")
    p.add_argument("--ours", type=Path, help="our hypotheses: count identical outputs")
    p.set_defaults(func=cmd_joey_decode)

    p = sub.add_parser("table")
    p.add_argument("--work", type=Path, required=True)
    p.set_defaults(func=cmd_table)

    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
