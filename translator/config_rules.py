"""The rules a config must keep beyond its keys' types: ranges, choices and cross-field rules.

    config_problems(cfg)       # ["model.d_model (100) must be divisible by model.n_heads (8)"]
    decode_problems(cfg.decode)

Pure functions over the sections of a built `Config`, read by attribute: this module imports
nothing of config.py, which calls it and raises the first problem as a ConfigError that names
the file (so the two never import each other).
"""

from __future__ import annotations


def _choice(value, options: tuple[str, ...], key: str) -> str | None:
    return None if value in options else f"{key} must be one of {', '.join(options)}, got {value!r}"


def config_problems(cfg) -> list[str]:
    """Every range or cross-field rule `cfg` (a Config) breaks, in the order of its sections."""
    d, v, m, t, dec = cfg.data, cfg.vocab, cfg.model, cfg.train, cfg.decode
    positive = {
        "data.max_len": d.max_len,
        "data.max_tokens": d.max_tokens,
        "data.max_sentences": d.max_sentences,
        "data.pool_batches": d.pool_batches,
        "data.num_proc": d.num_proc,
        "vocab.train_sentences": v.train_sentences,
        "vocab.min_freq": v.min_freq,
        "vocab.max_size": v.max_size,
        "vocab.bpe_size": v.bpe_size,
        "model.d_model": m.d_model,
        "model.n_heads": m.n_heads,
        "model.encoder_layers": m.encoder_layers,
        "model.decoder_layers": m.decoder_layers,
        "model.d_ff": m.d_ff,
        "model.max_positions": m.max_positions,
        "train.lr": t.lr,
        "train.accumulate": t.accumulate,
        "train.max_steps": t.max_steps,
        "train.max_epochs": t.max_epochs,
        "train.max_minutes": t.max_minutes,
        "train.log_every": t.log_every,
        "train.valid_every": t.valid_every,
        "train.valid_max_sentences": t.valid_max_sentences,
        "train.patience": t.patience,
        "train.threads": t.threads,
        "train.clip_norm": t.clip_norm,
    }
    problems = [
        f"{k} must be > 0, got {x}" for k, x in positive.items() if x is not None and x <= 0
    ]
    problems += [
        _choice(d.source, ("multi30k", "files", "hub"), "data.source"),
        _choice(v.kind, ("word", "bpe"), "vocab.kind"),
        _choice(m.positions, ("sinusoidal", "learned"), "model.positions"),
        _choice(m.norm, ("post", "pre"), "model.norm"),
        _choice(t.device, ("auto", "cpu", "cuda", "mps"), "train.device"),
        _choice(t.precision, ("auto", "fp32", "bf16", "fp16"), "train.precision"),
        _choice(t.optimizer, ("adam", "adamw", "nag"), "train.optimizer"),
        _choice(t.schedule, ("inverse_sqrt", "constant", "linear"), "train.schedule"),
    ]
    if m.d_model % m.n_heads:
        problems.append(
            f"model.d_model ({m.d_model}) must be divisible by model.n_heads ({m.n_heads})"
        )
    for key, x in [
        ("model.dropout", m.dropout),
        ("model.attention_dropout", m.attention_dropout),
        ("model.activation_dropout", m.activation_dropout or 0.0),
        ("model.word_dropout", m.word_dropout),
        ("model.word_dropout_tgt", m.word_dropout_tgt),
        ("model.word_replace", m.word_replace),
        ("model.word_replace_tgt", m.word_replace_tgt),
        ("model.layerdrop", m.layerdrop),
        ("train.label_smoothing", t.label_smoothing),
        ("vocab.bpe_dropout", v.bpe_dropout),
        ("data.replay", d.replay),
        ("data.bidirectional", d.bidirectional),
        ("train.rdrop_from", t.rdrop_from),
    ]:
        if not 0.0 <= x < 1.0:
            problems.append(f"{key} must be in [0, 1), got {x}")
    if not all(0.0 <= b < 1.0 for b in t.betas):
        problems.append(f"train.betas must both be in [0, 1), got {list(t.betas)}")
    if not 0.0 < t.momentum < 1.0:  # Nesterov momentum needs some momentum
        problems.append(f"train.momentum must be in (0, 1), got {t.momentum}")
    for key, x in [
        ("train.warmup_steps", t.warmup_steps),
        ("train.rdrop", t.rdrop),
        ("train.average_checkpoints", t.average_checkpoints),
        ("train.weight_decay", t.weight_decay),
    ]:
        if x < 0:
            problems.append(f"{key} must be >= 0, got {x}")
    if t.rdrop_from and not t.rdrop:
        problems.append("train.rdrop_from says when R-Drop starts: set train.rdrop too")
    if t.rdrop and not (m.dropout or m.attention_dropout or m.activation_dropout):
        problems.append("train.rdrop needs dropout: without it the two passes are identical")
    if m.share_all_embeddings and not v.joint:
        problems.append("model.share_all_embeddings needs vocab.joint: true")
    if v.kind == "bpe" and v.bpe_size < 300:
        problems.append(f"vocab.bpe_size must be >= 300 (room for the alphabet), got {v.bpe_size}")
    if v.bpe_dropout and v.kind != "bpe":
        problems.append("vocab.bpe_dropout needs vocab.kind: bpe")
    if d.source == "hub" and not d.hub:
        problems.append("data.source hub needs data.hub (a dataset name such as wmt14)")
    if d.max_ratio is not None and d.max_ratio < 1:
        problems.append(f"data.max_ratio must be >= 1, got {d.max_ratio}")
    if d.columns is not None and d.columns[0] == d.columns[1]:
        problems.append(f"data.columns must name two different columns, got {list(d.columns)}")
    if d.src_lang == d.tgt_lang:
        problems.append(f"data.src_lang and data.tgt_lang must differ, both are {d.src_lang!r}")
    if d.max_len + 2 > m.max_positions:
        problems.append(
            f"data.max_len ({d.max_len}) + 2 specials exceeds "
            f"model.max_positions ({m.max_positions})"
        )
    if d.max_tokens < d.max_len + 2:
        problems.append(
            f"data.max_tokens ({d.max_tokens}) must fit one sentence of data.max_len + 2"
        )
    if d.bidirectional and not v.joint:
        problems.append("data.bidirectional trains both directions on one vocabulary: it needs "
                        "vocab.joint: true")  # fmt: skip
    problems += [f"data.extra_train: {e!r} names no file" for e in d.extra_train if not e.strip()]
    if d.replay and not t.init_from:
        problems.append("data.replay draws from the parent run's data: it needs train.init_from")
    if any(e.startswith("parent:") for e in t.keep_eval) and not t.init_from:
        problems.append("train.keep_eval's parent: sets need train.init_from")
    problems += [
        f"train.keep_eval: {e!r} names no split" for e in t.keep_eval if e in ("", "parent:")
    ]
    if t.max_steps is None and t.max_epochs is None and t.max_minutes is None:
        problems.append("set at least one of train.max_steps, train.max_epochs, train.max_minutes")
    problems += decode_problems(dec)
    return [p for p in problems if p]


def decode_problems(dec) -> list[str]:
    problems = [
        f"decode.{key} must be > 0, got {x}"
        for key in ("beam_size", "batch_size", "max_len", "nbest", "threads")
        if (x := getattr(dec, key)) is not None and x <= 0
    ]
    problems += [
        f"decode.{key} must be >= 0, got {x}"
        for key in ("length_penalty", "max_len_a", "max_len_b")
        if (x := getattr(dec, key)) < 0
    ]
    if dec.mbr not in (None, "chrf", "bleu"):
        problems.append(f"decode.mbr must be chrf, bleu or null, got {dec.mbr!r}")
    if dec.mbr and dec.rerank:
        problems.append("decode.mbr and decode.rerank both choose from the n-best: set one")
    return problems
