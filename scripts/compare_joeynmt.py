"""Helper of scripts/compare_joeynmt.sh: JoeyNMT configs, log parsing and the final table.

Each subcommand does one step of the comparison and records what it measured in WORK/results.json
(plain json, so the steps can run in either virtual environment):

    configs      (our venv)     JoeyNMT YAML configs for the model of one of our configs
    spm          (JoeyNMT venv) joint SentencePiece BPE, JoeyNMT vocab file, tokens per epoch
    ours-corpus  (our venv)     our parameters, vocabulary sizes, target tokens per epoch
    train-rate   (any)          target tokens/s after the warm-up, from metrics.jsonl or train.log
    ours-decode  (any)          speed and BLEU from `translator evaluate --json`
    joey-decode  (our venv)     speed of a JoeyNMT decoding log, BLEU of its output (sacreBLEU)
    table        (any)          the side-by-side table

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
            "scheduling": "warmupinversesquareroot" if t.schedule == "inverse_sqrt" else None,
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
    if base["training"]["scheduling"] is None:
        del base["training"]["scheduling"]
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
        lines = [json.loads(x) for x in args.log.read_text("utf-8").splitlines() if x.strip()]
        steps = [r for r in lines if "tokens_per_s" in r]
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


# -- decoding --------------------------------------------------------------------------------


def mean_chars(path: Path) -> float:
    """Mean length in characters of the lines of a detokenized text file."""
    lines = path.read_text("utf-8").splitlines()
    return sum(len(x) for x in lines) / max(len(lines), 1)


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

    hyps = args.hyp.read_text("utf-8").splitlines()
    refs = args.ref.read_text("utf-8").splitlines()
    took = re.findall(r"Generation took ([\d.]+)\[sec\]", args.log.read_text("utf-8"))
    seconds = float(took[-1]) if took else args.wall
    result = score(hyps, refs, args.tgt_lang, literature=False)
    record(
        args.work.resolve(),
        "joey",
        **{
            f"{args.mode}_s": seconds,
            f"{args.mode}_wall_s": args.wall,
            f"{args.mode}_sent_s": len(refs) / seconds,
            f"{args.mode}_bleu": result["bleu"],
            f"{args.mode}_chars": mean_chars(args.hyp),
        },
    )
    print(
        f"JoeyNMT {args.mode}: {len(hyps)} sentences in {seconds:.1f} s "
        f"({args.wall:.1f} s with start-up), BLEU {result['bleu']:.2f}"
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
    for system in (ours, joey):
        if system.get("train_tok_s") and system.get("epoch_tokens"):
            system["epoch_s"] = system["epoch_tokens"] / system["train_tok_s"]
    beam = meta.get("beam", 5)
    # (label, key, digits, higher is faster?) ; None: not a speed, no ratio
    rows = [
        ("parameters (millions)", "params_m", 2, None),
        ("vocabulary", "vocab", 0, None),
        ("training pairs per epoch", "epoch_pairs", 0, None),
        ("target tokens per epoch (incl. </s>)", "epoch_tokens", 0, None),
        ("training: target tokens/s", "train_tok_s", 0, True),
        ("seconds per epoch (extrapolated)", "epoch_s", 0, False),
        ("greedy decoding: sentences/s", "greedy_sent_s", 1, True),
        (f"beam {beam} decoding: sentences/s", "beam_sent_s", 1, True),
        ("greedy: mean output length, characters", "greedy_chars", 1, None),
        (f"beam {beam}: mean output length, characters", "beam_chars", 1, None),
        ("BLEU greedy (sacreBLEU, test2016)", "greedy_bleu", 2, None),
        (f"BLEU beam {beam} (sacreBLEU, test2016)", "beam_bleu", 2, None),
    ]
    for system in (ours, joey):
        if system.get("params"):
            system["params_m"] = system["params"] / 1e6
    print()
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
    head = f"{'':<40}{'translator':>12}{'JoeyNMT':>12}{'ours/JoeyNMT':>14}  "
    print(head)
    print("-" * len(head))
    for label, key, digits, higher_faster in rows:
        a, b = ours.get(key), joey.get(key)
        ratio = speed = ""
        if higher_faster is not None and a and b:
            ratio = f"{a / b:.2f}"
            speedup = a / b if higher_faster else b / a
            speed = (
                f"ours {speedup:.1f}x faster"
                if speedup >= 1
                else f"JoeyNMT {1 / speedup:.1f}x faster"
            )
        print(f"{label:<40}{fmt(a, digits):>12}{fmt(b, digits):>12}{ratio:>14}  {speed}")
    print()
    print(
        "Tokens are each system's own subwords (ours: BPE of spaCy tokens; JoeyNMT: "
        "SentencePiece BPE of raw text), so compare seconds per epoch across systems."
    )
    test = args.work.resolve() / "joey" / "data" / "test.en"
    n = len(test.read_text("utf-8").splitlines()) if test.exists() else "?"
    ref = args.work.resolve() / "joey" / "data" / "test.de"
    ref_chars = mean_chars(ref) if ref.exists() else None
    print(
        f"Decoding: the first {n} sentences of test2016, batches of {meta.get('decode_batch')} "
        "sentences, translation time only (JoeyNMT's own 'Generation took'; with start-up and "
        f"model loading: greedy {fmt(joey.get('greedy_wall_s'), 1)} s, beam "
        f"{fmt(joey.get('beam_wall_s'), 1)} s). Neither model is trained to convergence: "
        "BLEU only shows that both learn alike in the same number of steps."
    )
    for note in meta.get("notes", []):
        print(f"note: {note}")
    for mode, label in (("greedy", "greedy"), ("beam", f"beam {beam}")):
        a, b = ours.get(f"{mode}_chars"), joey.get(f"{mode}_chars")
        if a is None or b is None or ref_chars is None:
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

    p = sub.add_parser("ours-decode")
    p.add_argument("mode", choices=["greedy", "beam"])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--hyp", type=Path, required=True)
    p.set_defaults(func=cmd_ours_decode)

    p = sub.add_parser("joey-decode")
    p.add_argument("mode", choices=["greedy", "beam"])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--hyp", type=Path, required=True)
    p.add_argument("--ref", type=Path, required=True)
    p.add_argument("--log", type=Path, required=True)
    p.add_argument("--wall", type=float, required=True)
    p.add_argument("--tgt-lang", default="de")
    p.set_defaults(func=cmd_joey_decode)

    p = sub.add_parser("table")
    p.add_argument("--work", type=Path, required=True)
    p.set_defaults(func=cmd_table)

    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
