"""`translator prepare`: read, clean and tokenize a corpus, build its vocabularies, and
print what was done."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from translator.cli.app import (
    ConfigOpt,
    InitFromOpt,
    SetOpt,
    _fail,
    _setup_logging,
    app,
    user_errors,
)


@app.command(
    epilog="Examples: `translator prepare --set vocab.min_freq=3`, `translator prepare --set "
    "data.source=files --set data.train_split=corpus/train --set data.valid_split=corpus/dev.tsv "
    "--set data.test_split=corpus/test.jsonl`"
)
@user_errors
def prepare(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    init_from: InitFromOpt = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Then prepare twice more, each in a fresh process with an empty cache of its "
            "own, another hash seed and another data.num_proc, and compare every file they "
            "write (BPE, vocabularies, ids, meta.json's counts) byte for byte: says "
            "`reproducible` (exit 0) or names the files that differ (exit 1).",
        ),
    ] = False,
) -> None:
    """Read the corpus (data.source), clean and tokenize it with spaCy, build the vocabularies.

    The result is cached; a second run with the same settings only opens it. Prints a summary:
    pairs, tokens, out-of-vocabulary rates, what cleaning dropped or changed, how many val and
    test pairs also occur in train, and batch padding. With --init-from RUN the corpus is
    numbered with RUN's vocabulary (as `train --init-from` will): the OOV columns are then the
    share of unknown tokens (unk) under it, and characters RUN never saw are listed.
    """
    from translator.data.corpus import prepare as prepare_corpus
    from translator.training.finetune import training_config

    started = time.perf_counter()
    cfg = training_config(config, set_ or [], init_from)
    _setup_logging()
    corpus = prepare_corpus(cfg)
    batches, padding = _batch_estimate(cfg, corpus.splits[cfg.data.train_split])
    _print_summary(cfg, corpus, batches, padding)
    typer.echo(f"cache: {corpus.path}\ntime: {time.perf_counter() - started:.1f} s")
    if check:
        _check_reproducible(config, set_ or [], init_from)


def _check_reproducible(config, sets: list[str], init_from) -> None:
    """Prepare twice in fresh processes (hash seeds 1 and 2; data.num_proc 1, then 2), each into
    an empty cache of its own, and compare what they wrote."""
    import os
    import subprocess
    import sys
    import tempfile

    command = [sys.executable, "-m", "translator", "prepare"]
    command += ["-c", str(config)] if config else []
    command += ["--init-from", str(init_from)] if init_from else []
    with tempfile.TemporaryDirectory(prefix="translator-check-") as tmp:
        folders = []
        for seed in (1, 2):
            cache = Path(tmp, str(seed))
            overrides = [*sets, f"data.cache_dir={cache}", f"data.num_proc={seed}"]
            done = subprocess.run(
                command + [x for item in overrides for x in ("--set", item)],
                env={**os.environ, "PYTHONHASHSEED": str(seed)},
                capture_output=True,
                text=True,
            )
            if done.returncode:
                said = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise _fail(f"--check: a fresh prepare failed: {said}", 1)
            (folder,) = cache.iterdir()
            folders.append(folder)
        names = sorted(p.name for p in folders[0].iterdir())
        others = sorted(p.name for p in folders[1].iterdir())
        differ = sorted(set(names) ^ set(others)) + [
            name
            for name in sorted(set(names) & set(others))
            if _content(folders[0] / name) != _content(folders[1] / name)
        ]
    if differ:
        raise _fail(f"not reproducible: two fresh prepares differ in {', '.join(differ)}", 1)
    typer.echo(
        f"reproducible: two fresh prepares (hash seeds 1 and 2, data.num_proc 1 and 2) wrote "
        f"the same {len(names)} files, byte for byte"
    )


def _content(path: Path):
    """What must be equal of a prepared file: its bytes; of meta.json, all but when it was made
    and how long each stage took."""
    if path.name != "meta.json":
        return path.read_bytes()
    import json

    meta = json.loads(path.read_text(encoding="utf-8"))
    return {key: value for key, value in meta.items() if key not in ("seconds", "created")}


SUMMARY_PAIRS = 500_000  # batches and padding are estimated from at most this many pairs


def _batch_estimate(cfg, train) -> tuple[str, float]:
    """Batches per epoch and padding of train; from a sample on a large corpus (packing is a
    Python loop: seconds per million pairs)."""
    import numpy as np

    from translator.data.batching import TokenBatchSampler, padded_lengths, padding_ratio

    d = cfg.data
    src, tgt = padded_lengths(train)
    share = min(1.0, SUMMARY_PAIRS / max(len(src), 1))
    if share < 1.0:
        pick = np.random.default_rng(0).choice(len(src), SUMMARY_PAIRS, replace=False)
        src, tgt = src[pick], tgt[pick]
    sampler = TokenBatchSampler(
        src, tgt, d.max_tokens, d.max_sentences, cfg.train.seed, d.pool_batches
    )
    batches = sampler.epoch(0)
    count = f"{len(batches):,}" if share == 1.0 else f"≈{round(len(batches) / share):,}"
    return count, padding_ratio(sampler, batches)


def _print_summary(cfg, corpus, batches: str, padding: float) -> None:
    from rich.console import Console
    from rich.table import Table

    d, v, meta = cfg.data, cfg.vocab, corpus.stats
    src, tgt = d.src_lang, d.tgt_lang
    roles = {d.train_split: "train", d.valid_split: "valid", d.test_split: "test"}
    table = Table(title=f"{meta['source']} {src}→{tgt} ({'cached' if corpus.cached else 'built'})")
    columns = ["split", "pairs", f"{src} tokens", f"{tgt} tokens", f"{src} OOV", f"{tgt} OOV"]
    for column in columns + ["in train"]:
        table.add_column(column, justify="left" if column == "split" else "right")
    for name, s in meta["splits"].items():
        overlap = f"{s['overlap_pairs']:,}" if "overlap_pairs" in s else ""
        label = roles[name] if d.source == "files" else name  # paths are long; roles say enough
        table.add_row(label, f"{s['pairs']:,}", f"{s['src_tokens']:,}", f"{s['tgt_tokens']:,}",
                      f"{s['src_oov']:.2%}", f"{s['tgt_oov']:.2%}", overlap)  # fmt: skip
    how = f"BPE {v.bpe_size:,}" if v.kind == "bpe" else f"words, min_freq {v.min_freq}"
    if v.bpe_dropout:
        how += f"; BPE-dropout {v.bpe_dropout} resamples train every epoch, counts below are for "
        how += "the full segmentation"
    train = meta["splits"][d.train_split]
    dropped = meta["train_dropped"]
    learned = f"learned on {meta['vocab_pairs']:,} training pairs"
    if "vocab_from" in meta:
        learned = f"taken from {meta['vocab_from']}, not rebuilt"
    lines = [
        f"vocabulary: {src} {len(corpus.src_vocab):,}, {tgt} {len(corpus.tgt_vocab):,} "
        f"({'joint ' if v.joint else ''}{how}, {learned})",
        f"train: read {train['read']:,} pairs{_extra_read(meta)}, dropped {dropped['empty']:,} "
        "with an empty side, "
        f"{dropped['duplicates']:,} duplicates"
        + ("" if d.dedup else " (data.dedup off)")
        + f", {dropped['too_long']:,} over {d.max_len} tokens"
        + (f", {dropped['ratio']:,} with a length ratio over {d.max_ratio}" if d.max_ratio else ""),
        "cleaned: "
        + ", ".join(
            f"{sum(s[k] for s in meta['splits'].values()):,} {what}"
            for k, what in (
                ("nfc", "lines made NFC"),
                ("bom", "BOMs removed"),
                ("whitespace", "lines with stray whitespace or \\r"),
            )
        ),  # fmt: skip
    ]
    for side, lang in (("src", src), ("tgt", tgt)):
        unseen = meta.get("unseen_chars", {}).get(side)
        if unseen:
            listed = ", ".join(f"{c!r} {n:,}" for c, n in unseen.items())
            lines.append(f"warning: {lang} characters the vocabulary has never seen: {listed}")
    for name, s in meta["splits"].items():
        if s.get("overlap_pairs") or s.get("overlap_sources"):
            lines.append(
                f"warning: {s['overlap_pairs']:,} {roles[name]} pairs and "
                f"{s['overlap_sources']:,} {roles[name]} source sentences also occur in train"
            )
    lines.append(
        f"training batches at {d.max_tokens:,} tokens: {batches} per epoch, {padding:.1%} padding"
    )
    console = Console(soft_wrap=True)
    console.print(table)
    for line in lines:
        console.print(line, markup=False, highlight=False)


def _extra_read(meta: dict) -> str:
    """' (1,000 of them from data.extra_train: a 600, b 400)', or '' without extra files."""
    extra = meta.get("extra_train")
    if not extra:
        return ""
    files = ", ".join(f"{Path(path).name} {count:,}" for path, count in extra.items())
    return f" ({sum(extra.values()):,} of them from data.extra_train: {files})"
