"""The `translator` command line: one short function per stage, no model code.

    translator prepare                  # find/download Multi30k, tokenize, build vocab (cached)
    translator train --set train.max_minutes=30
    translator translate "A dog runs through the snow."
    translator evaluate --bleu --split test2016
    translator serve                    # HTTP API, LibreTranslate API and a web page
    translator export --quantization int8   # CTranslate2, for --engine ctranslate2

User errors (bad config, missing data, bad run dir, unreadable input) print one line on stderr
and exit non-zero: 2 for a bad config or argument, 1 for the rest (TRANSLATOR_DEBUG=1 shows the
traceback instead). torch and spaCy are imported
inside the commands so that `--help` stays instant.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

try:  # Typer 0.2x carries its own copy of click, whose exceptions are these
    from typer._click import exceptions as usage
except ImportError:  # older Typer runs on click itself
    from click import exceptions as usage


class _OneLineUsageErrors(TyperGroup):
    """Usage errors (an unknown option, a missing value) as one line on stderr, exit 2, with the
    closest real option of that command: not Typer's boxed message and its odd suggestions."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except usage.NoArgsIsHelpError as err:
            err.show()  # `translator` alone: the help
            sys.exit(err.exit_code)
        except usage.ClickException as err:
            typer.echo(f"error: {_usage_message(err)}", err=True)
            sys.exit(err.exit_code)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)


def _usage_message(err: usage.ClickException) -> str:
    ctx = getattr(err, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx else ""
    if isinstance(err, usage.NoSuchOption) and ctx is not None:
        options = [o for param in ctx.command.params for o in param.opts + param.secondary_opts]
        close = difflib.get_close_matches(err.option_name, options, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"no such option {err.option_name} for `{ctx.command_path}`{hint}{where}"
    return " ".join(err.format_message().split()) + where


app = typer.Typer(
    cls=_OneLineUsageErrors,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    help="Train, run and score a Transformer translator: Multi30k English→German by default, "
    "any parallel corpus (files or the Hugging Face Hub) by config.",
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML config file, or the name of a shipped one: multi30k, multi30k-long, seed, "
        "tiny, my-corpus [default: multi30k].",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="KEY=VALUE",
        help="Override a config key, e.g. `--set model.d_model=128` (repeatable).",
    ),
]
RunOpt = Annotated[
    Path | None,
    typer.Option("--run", "-r", help="Run dir to use [default: the most recent run in runs/]."),
]

EnsembleOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--ensemble",
        "-e",
        help="Also decode with this run's model (repeatable): the models' next-token "
        "probabilities are averaged. Runs must share the vocabulary (same prepared corpus).",
    ),
]

WeightsOpt = Annotated[
    str | None,
    typer.Option(
        help="Weights file in the run dir (in each --ensemble run too), e.g. "
        "averaged.safetensors [default: best]."
    ),
]

# Decoding options, shared by translate and evaluate. Each overrides a key of the run's
# `decode` config section (translator.config.DecodeConfig), which the Python API takes too.
BeamOpt = Annotated[
    int | None,
    typer.Option("--beam", "-b", help="Beam size [default: the run's decode.beam_size]."),
]
GreedyOpt = Annotated[bool, typer.Option("--greedy", help="Greedy search (= --beam 1).")]
AlphaOpt = Annotated[
    float | None,
    typer.Option(
        "--alpha", help="Length penalty of beam search [default: the run's decode.length_penalty]."
    ),
]
MaxLenOpt = Annotated[
    int | None,
    typer.Option(help="At most this many output tokens [default: 1.5 x source + 10]."),
]
BatchSizeOpt = Annotated[
    int | None,
    typer.Option(help="Sentences per decoding batch [default: the run's decode.batch_size]."),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        help="CPU threads [default: decode.threads, else 1 for up to 8 sentences and all cores "
        "for more]."
    ),
]

EngineOpt = Annotated[
    str,
    typer.Option(
        help="`torch`, or `ctranslate2`: the run's CTranslate2 export (`translator export`), "
        "with the same tokenization, BPE and detokenization around it."
    ),
]

BOOTSTRAP_SAMPLES = 1000  # sacreBLEU's default for --confidence


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"translator {version('translator')}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    pass  # the options of `translator` itself; the help text is the app's


# Commands whose work is done and flushed when they return: their process may skip Python's
# finalization, which costs ~0.4 s once torch is loaded (a third of translating one sentence).
_QUICK_EXIT = {"translate", "evaluate"}


def entry_point() -> None:
    """The `translator` executable (and `python -m translator`): the app, then a quick exit for
    the commands that allow one."""
    try:
        app(prog_name="translator")
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if len(sys.argv) > 1 and sys.argv[1] in _QUICK_EXIT:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except OSError:  # a closed pipe (`| head`): nothing more can be said anyway
                pass
            logging.shutdown()
            os._exit(code)
        raise


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def user_errors(command):
    """Turn the errors a user can cause (translator.errors.UserError, OSError) into one line on
    stderr and an exit code; any other exception is a bug, said as "internal error"."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from translator.errors import UserError

        try:
            return command(*args, **kwargs)
        except typer.Exit:  # already reported (click's Exit is a RuntimeError)
            raise
        except KeyboardInterrupt:
            raise _fail("interrupted", 130) from None
        except Exception as err:
            if os.environ.get("TRANSLATOR_DEBUG"):  # developers: keep the traceback
                raise
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            if isinstance(err, UserError):
                raise _fail(message, err.exit_code) from None
            if isinstance(err, OSError):  # a file or the network: the message names it
                raise _fail(message, 1) from None
            raise _fail(
                f"internal error ({type(err).__name__}: {message}). This is a bug: run again "
                "with TRANSLATOR_DEBUG=1 for the traceback, and report it with that",
                1,
            ) from None

    return wrapper


def _setup_logging() -> None:
    """Log lines go to stdout (stderr is for errors): rich ones on a terminal; in a file or pipe,
    plain lines that never wrap, one event per line, so that a log of a whole run can be
    grepped."""
    if sys.stdout.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
    else:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%X"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for chatty in ("matplotlib", "PIL", "datasets", "filelock", "urllib3"):
        logging.getLogger(chatty).setLevel(logging.ERROR)  # e.g. "building the font cache"


@app.command(
    epilog="Examples: `translator prepare --set vocab.min_freq=3`, `translator prepare --set "
    "data.source=files --set data.train_split=corpus/train --set data.valid_split=corpus/dev.tsv "
    "--set data.test_split=corpus/test.jsonl`"
)
@user_errors
def prepare(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Read the corpus (data.source), clean and tokenize it with spaCy, build the vocabularies.

    The result is cached; a second run with the same settings only opens it. Prints a summary:
    pairs, tokens, out-of-vocabulary rates, what cleaning dropped or changed, how many val and
    test pairs also occur in train, and batch padding.
    """
    from translator.config import load_config
    from translator.corpus import prepare as prepare_corpus

    started = time.perf_counter()
    cfg = load_config(config, set_ or [])
    _setup_logging()
    corpus = prepare_corpus(cfg)
    batches, padding = _batch_estimate(cfg, corpus.splits[cfg.data.train_split])
    _print_summary(cfg, corpus, batches, padding)
    typer.echo(f"cache: {corpus.path}\ntime: {time.perf_counter() - started:.1f} s")


SUMMARY_PAIRS = 500_000  # batches and padding are estimated from at most this many pairs


def _batch_estimate(cfg, train) -> tuple[str, float]:
    """Batches per epoch and padding of train; from a sample on a large corpus (packing is a
    Python loop: seconds per million pairs)."""
    import numpy as np

    from translator.batching import TokenBatchSampler, padded_lengths, padding_ratio

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
    lines = [
        f"vocabulary: {src} {len(corpus.src_vocab):,}, {tgt} {len(corpus.tgt_vocab):,} "
        f"({'joint ' if v.joint else ''}{how}, learned on {meta['vocab_pairs']:,} training pairs)",
        f"train: read {train['read']:,} pairs, dropped {dropped['empty']:,} with an empty side, "
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


@app.command(
    epilog="Examples: `translator train`, `translator train -c configs/tiny.yaml`, "
    "`translator train --resume --run-dir runs/multi30k-20261125-120000`"
)
@user_errors
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(help="Where to write the run [default: `runs/<config-name>-<timestamp>`]."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in --run-dir (default: the latest) where it stopped. "
            "Only train.* budget and logging keys may be changed with --set.",
        ),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    nproc: Annotated[
        int,
        typer.Option(
            help="Data-parallel processes on this machine, launched with torchrun: one per GPU, "
            "or CPU processes (gloo). data.max_tokens is per process."
        ),
    ] = 1,
) -> None:
    """Train a Transformer; prepares the data first when its cache is missing.

    Stops at train.max_steps, train.max_epochs or train.max_minutes, whichever comes first.
    Ctrl-C saves a checkpoint that `--resume` continues from. For several machines, start
    `torchrun ... -m translator train` on each (see the README).
    """
    from translator.config import load_config
    from translator.run_dir import STATE, latest_run, new_run_dir
    from translator.train import Trainer, resume_config

    _check_at_least_one(nproc=nproc)
    _setup_logging()
    if resume:
        run_dir = run_dir or latest_run(needs=STATE)
        if config is not None:
            raise _fail("--resume takes the config from the run dir; drop --config", 2)
        cfg = resume_config(run_dir, set_ or [])
    else:
        cfg = load_config(config, set_ or [])
    if nproc > 1:
        if not resume:  # prepare once here: the workers then only open the cache
            from translator.corpus import prepare as prepare_corpus

            prepare_corpus(cfg)
        args = ["train", "--run-dir", str(run_dir or new_run_dir(cfg))]
        args += ["--resume"] if resume else (["--config", str(config)] if config else [])
        args += [x for pair in set_ or [] for x in ("--set", pair)]
        args += [] if progress else ["--no-progress"]
        raise typer.Exit(_torchrun(nproc, args))
    trainer = Trainer(cfg, run_dir=run_dir, resume=resume, progress=progress)
    trainer.train()
    if trainer.stop_signal:  # saved and resumable, but not done: `train && evaluate` must stop
        raise typer.Exit(128 + int(trainer.stop_signal))


def _torchrun(nproc: int, args: list[str]) -> int:
    """Run `translator <args>` in `nproc` processes with torchrun on this machine."""
    import subprocess

    env = dict(os.environ)
    # torchrun would give each process one thread; share the cores out instead.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={nproc}", "-m", "translator", *args]
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:  # the workers got the Ctrl-C too, and save
        return 130


@app.command(
    epilog='Examples: `translator translate "A man rides a bike."`, '
    "`translator translate --input in.en --output out.de --beam 5`, "
    '`translator translate "A dog runs." --plot-attention attention.png`'
)
@user_errors
def translate(
    text: Annotated[list[str] | None, typer.Argument(help="Sentence(s) to translate.")] = None,
    run: RunOpt = None,
    ensemble: EnsembleOpt = None,
    input_: Annotated[
        Path | None,
        typer.Option("--input", "-i", help="Translate this file line by line (`-`: stdin)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write translations here [default: stdout]."),
    ] = None,
    weights: WeightsOpt = None,
    beam: BeamOpt = None,
    greedy: GreedyOpt = False,
    alpha: AlphaOpt = None,
    max_len: MaxLenOpt = None,
    batch_size: BatchSizeOpt = None,
    threads: ThreadsOpt = None,
    engine: EngineOpt = "torch",
    nbest: Annotated[
        int,
        typer.Option(
            help="Print the N best translations of each input with their scores "
            "(tab-separated), then a blank line."
        ),
    ] = 1,
    plot_attention: Annotated[
        Path | None,
        typer.Option(help="Save a cross-attention heatmap (PNG) of the first sentence."),
    ] = None,
) -> None:
    """Translate English sentences with a trained run (the latest one by default).

    Sentences come from the arguments, from `--input FILE`, or from stdin. Files are read and
    written line by line: an empty line gives an empty line.
    """
    from translator.translate import Translator

    _check_at_least_one(nbest=nbest)
    _check_decoding(beam, greedy, alpha, max_len, batch_size, threads)
    if text and input_:
        raise _fail("give sentences or --input, not both", 2)
    if greedy and nbest > 1:
        raise _fail("--nbest needs beam search; drop --greedy", 2)
    if ensemble and plot_attention is not None:
        raise _fail("--plot-attention shows one model's attention; drop --ensemble", 2)
    lines = list(text) if text else _read_input(input_)
    translator = Translator.load(
        run,
        weights=weights,
        ensemble=ensemble or (),
        engine=_check_engine(engine),
        threads=_load_threads(engine, threads, len(lines)),
    )
    translator.options = translator.options.override(
        beam_size=1 if greedy else beam,
        length_penalty=alpha,
        max_len=max_len,
        batch_size=batch_size,
        threads=threads,
        nbest=nbest,
    )
    typer.echo(_what_decodes(translator), err=True)
    _warn_if_undertrained(translator)
    if plot_attention is not None:
        from translator.plots import plot_attention as plot

        first = next((line for line in lines if line.strip()), "")
        plot(*translator.attention(first), plot_attention)
        typer.echo(f"attention heatmap saved to {plot_attention}", err=True)
    progress = len(lines) > 100
    if nbest > 1:
        results = translator.translate_nbest(lines, progress=progress)
        _write_output(output, ["".join(f"{h}\t{sc:.4f}\n" for h, sc in r) + "\n" for r in results])
        return
    _write_output(output, translator.translate(lines, progress=progress))


@app.command(
    epilog="Examples: `translator evaluate --bleu`, "
    "`translator evaluate --bleu --split val --json`, "
    "`translator evaluate --bleu --src in.en --ref ref.de`, "
    "`translator evaluate --bleu --run runs/a --ensemble runs/b --ensemble runs/c`"
)
@user_errors
def evaluate(
    bleu: Annotated[
        bool,
        typer.Option(
            "--bleu",
            help="Score BLEU: always done, with chrF beside it; the flag is accepted so that "
            "`translator evaluate --bleu` reads as the docs write it.",
        ),
    ] = True,
    run: RunOpt = None,
    ensemble: EnsembleOpt = None,
    split: Annotated[
        str,
        typer.Option(
            help="`test`, `valid` or `train`: the run's configured split; or a split of its "
            "source by name: Multi30k test2016, val, test2017, mscoco, test2018; a Hub split "
            "name; a file or prefix for data.source files."
        ),
    ] = "test",
    src: Annotated[Path | None, typer.Option(help="Score this source file instead.")] = None,
    ref: Annotated[Path | None, typer.Option(help="Reference translations for --src.")] = None,
    weights: WeightsOpt = None,
    beam: BeamOpt = None,
    greedy: GreedyOpt = False,
    alpha: AlphaOpt = None,
    max_len: MaxLenOpt = None,
    batch_size: BatchSizeOpt = None,
    threads: ThreadsOpt = None,
    engine: EngineOpt = "torch",
    lowercase: Annotated[
        bool, typer.Option("--lowercase", help="Also report case-insensitive BLEU.")
    ] = False,
    confidence: Annotated[
        bool,
        typer.Option(
            "--confidence",
            help="Add 95% confidence intervals to BLEU: sacreBLEU's bootstrap resampling of "
            f"the test set ({BOOTSTRAP_SAMPLES:,} samples).",
        ),
    ] = False,
    output: Annotated[Path | None, typer.Option(help="Save the hypotheses here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Translate a test set with a trained run and score it with sacreBLEU (cased, detokenized).

    A run trained on lowercased text (data.lowercase) is scored against lowercased references.
    """
    from translator.data import read_lines
    from translator.evaluate import references_for, score
    from translator.sources import read_texts, resolve_split
    from translator.translate import Translator

    _check_decoding(beam, greedy, alpha, max_len, batch_size, threads)
    if (src is None) != (ref is None):
        raise _fail("--src and --ref go together", 2)
    translator = Translator.load(
        run,
        weights=weights,
        ensemble=ensemble or (),
        engine=_check_engine(engine),
        threads=threads,
    )
    translator.options = opts = translator.options.override(
        beam_size=1 if greedy else beam,
        length_penalty=alpha,
        max_len=max_len,
        batch_size=batch_size,
        threads=threads,
    )
    d = translator.cfg.data
    if src is not None:
        sources, refs = read_lines(src), read_lines(ref)
        if len(sources) != len(refs):
            raise _fail(f"{src} has {len(sources)} lines but {ref} has {len(refs)}", 1)
        name = str(src)
    else:
        sources, refs = read_texts(translator.cfg, split)
        name = resolve_split(translator.cfg, split)
    _warn_if_undertrained(translator)  # once the inputs are known good: errors stay one line
    started = time.perf_counter()
    hyps = translator.translate(sources, progress=not as_json)
    seconds = time.perf_counter() - started
    result = score(
        hyps,
        references_for(refs, d.lowercase),
        d.tgt_lang,
        lowercase=lowercase,
        bootstrap=BOOTSTRAP_SAMPLES if confidence else 0,
    )
    result.update(
        seconds=round(seconds, 2),
        sentences_per_s=round(len(hyps) / seconds, 1),
        split=name,
        beam=opts.beam_size,
        alpha=opts.length_penalty,
        decode=dataclasses.asdict(opts),
        lowercased_references=d.lowercase,
        models=1 + len(ensemble or ()),
        engine=translator.engine,
        run=str(translator.run_dir),
        weights=translator.weights,
        ensemble=[str(path) for path in translator.ensemble],
    )
    if output:
        _write_output(output, hyps)
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(_what_decodes(translator))
    models = f", an ensemble of {result['models']} models" if result["models"] > 1 else ""
    typer.echo(
        f"{name}: {len(hyps)} sentences, beam {result['beam']}{models}, {seconds:.1f} s "
        f"({result['sentences_per_s']} sentences/s)"
    )
    if d.lowercase:
        typer.echo("the run was trained on lowercased text: scored against lowercased references")

    def bleu(key: str) -> str:
        ci = f" ± {result[key + '_ci']:.2f}" if key + "_ci" in result else ""
        return f"BLEU  {result[key]:6.2f}{ci}"

    typer.echo(f"{bleu('bleu')}   {result['signature']}")
    if "bleu_lc" in result:
        typer.echo(f"{bleu('bleu_lc')}   {result['bleu_lc_signature']}")
    typer.echo(f"chrF  {result['chrf']:6.2f}   {result['chrf_signature']}")
    typer.echo(
        f"{bleu('bleu_tok_lc')}   tokenized, lowercased (Moses; the "
        "convention of the Multi30k papers, not comparable with the line above)"
    )


@app.command(
    epilog="Example: `translator average --last 5`, then `translator evaluate --bleu "
    "--weights averaged.safetensors`"
)
@user_errors
def average(
    run: RunOpt = None,
    last: Annotated[
        int | None, typer.Option(help="Average the newest N kept checkpoints [default: all].")
    ] = None,
) -> None:
    """Average a run's kept checkpoints into `averaged.safetensors` in the run dir.

    Training keeps the weights of its last `train.average_checkpoints` validations under
    `checkpoints/` (and averages them itself at the end); this command redoes it for any N.
    """
    from translator.average import average_into
    from translator.run_dir import (
        AVERAGED,
        RunError,
        kept_checkpoints,
        latest_run,
        load_run,
        save_weights,
    )

    _check_at_least_one(last=last)
    loaded = load_run(run or latest_run())
    paths = kept_checkpoints(loaded.path)
    if not paths:
        raise RunError(
            f"{loaded.path} kept no checkpoints (train with --set train.average_checkpoints=10)"
        )
    paths = paths[-last:] if last else paths
    average_into(loaded.model, paths)
    save_weights(loaded.model, loaded.path / AVERAGED)
    typer.echo(f"averaged {len(paths)} checkpoints ({paths[0].name} .. {paths[-1].name})")
    typer.echo(f"wrote {loaded.path / AVERAGED}")


@app.command(
    epilog="Examples: `translator export --quantization int8`, "
    "`translator export --run runs/a --output runs/a/ct2 --no-check`, then "
    "`translator evaluate --bleu --engine ctranslate2`"
)
@user_errors
def export(
    run: RunOpt = None,
    weights: WeightsOpt = None,
    format_: Annotated[
        str, typer.Option("--format", help="Export format: `ctranslate2` (the only one).")
    ] = "ctranslate2",
    quantization: Annotated[
        str,
        typer.Option(
            help="CTranslate2 weight type: float32 (exact), int8 (fastest on CPU), "
            "int8_float32, int8_float16, int16, float16, bfloat16."
        ),
    ] = "float32",
    output: Annotated[
        Path | None, typer.Option(help="Folder to write [default: RUN/ct2, where --engine looks].")
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            help="Decode the validation split with both engines and print their BLEU and the "
            "share of identical outputs."
        ),
    ] = True,
) -> None:
    """Export a run's model to CTranslate2 (int8 CPU inference), with its tokenizer and BPE.

    The folder is self-contained: CTranslate2's model and vocabularies, the run's config,
    vocabularies and BPE, and translator.json (origin, pre- and post-processing). Then
    `translate`, `evaluate` and `serve` take `--engine ctranslate2`.
    """
    from translator.ct2 import EXPORT_DIR, QUANTIZATIONS
    from translator.ct2 import export as export_model
    from translator.run_dir import BEST, latest_run, load_run

    if format_ != "ctranslate2":
        raise _fail(f"--format must be ctranslate2, got {format_!r}", 2)
    if quantization not in QUANTIZATIONS:
        raise _fail(f"--quantization must be one of {', '.join(QUANTIZATIONS)}", 2)
    _setup_logging()
    loaded = load_run(run or latest_run(), weights or BEST)
    output = output or loaded.path / EXPORT_DIR
    started = time.perf_counter()
    export_model(loaded, weights or BEST, output, quantization)
    size = sum(f.stat().st_size for f in output.iterdir()) / 1e6
    typer.echo(
        f"exported {loaded.path} ({weights or BEST}) to {output}: CTranslate2 {quantization}, "
        f"{size:.1f} MB, {time.perf_counter() - started:.1f} s"
    )
    if check:
        _check_export(loaded.path, weights or BEST, output)


def _check_export(run: Path, weights: str, exported: Path) -> None:
    """Both engines on the validation split: BLEU side by side and how many outputs agree."""
    from translator.evaluate import references_for, score
    from translator.sources import read_texts
    from translator.translate import Translator

    engines = [
        Translator.load(run, weights=weights),
        Translator.load(exported, engine="ctranslate2"),
    ]
    sources, refs = read_texts(engines[0].cfg, "valid")
    refs = references_for(refs, engines[0].cfg.data.lowercase)
    opts = engines[0].options
    typer.echo(
        f"parity on the validation split ({len(sources):,} sentences, beam {opts.beam_size}, "
        f"alpha {opts.length_penalty:g}; --no-check skips this):"
    )
    outputs = []
    for translator in engines:
        started = time.perf_counter()
        # CTranslate2 sets OpenMP's thread count, which torch shares: torch's goes with the call.
        hyps = translator.translate(sources, threads=os.cpu_count())
        seconds = time.perf_counter() - started
        bleu = score(hyps, refs, translator.cfg.data.tgt_lang, literature=False)["bleu"]
        typer.echo(
            f"  {translator.engine:<12} BLEU {bleu:6.2f}   {seconds:6.1f} s "
            f"({len(hyps) / seconds:,.0f} sentences/s)"
        )
        outputs.append(hyps)
    same = sum(a == b for a, b in zip(*outputs)) / max(len(sources), 1)
    typer.echo(f"  identical outputs: {same:.1%}")


@app.command(
    epilog="Examples: `translator serve`, `translator serve --run runs/a --port 9000 --engine "
    "ctranslate2`, then `curl -s localhost:8000/v1/translate -H 'content-type: "
    'application/json\' -d \'{"text": "A dog runs."}\'`'
)
@user_errors
def serve(
    run: RunOpt = None,
    weights: WeightsOpt = None,
    engine: EngineOpt = "torch",
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    threads: ThreadsOpt = None,
    max_batch: Annotated[int, typer.Option(help="Sentences decoded together.")] = 64,
    batch_wait_ms: Annotated[
        float, typer.Option(help="How long a batch waits for more requests.")
    ] = 5.0,
    max_sentences: Annotated[int, typer.Option(help="Sentences per request (413).")] = 100,
    max_chars: Annotated[int, typer.Option(help="Characters per sentence (422).")] = 1000,
    max_body_bytes: Annotated[int, typer.Option(help="Request body size (413).")] = 1_000_000,
    timeout: Annotated[float, typer.Option(help="Seconds per request (504).")] = 30.0,
) -> None:
    """Serve a run: an HTTP API, the LibreTranslate API, and a web page at /.

    POST /v1/translate, GET /v1/info, GET /health; POST /translate and GET /languages as
    LibreTranslate has them, so its clients work unchanged. Concurrent requests are decoded
    together in batches.
    """
    import uvicorn

    from translator.serve import ServeSettings, create_app
    from translator.translate import Translator

    _check_at_least_one(
        port=port, max_batch=max_batch, max_sentences=max_sentences, max_chars=max_chars,
        max_body_bytes=max_body_bytes, threads=threads,
    )  # fmt: skip
    if timeout <= 0 or batch_wait_ms < 0:
        raise _fail("--timeout must be > 0 and --batch-wait-ms >= 0", 2)
    _setup_logging()
    translator = Translator.load(
        run, weights=weights, engine=_check_engine(engine), threads=threads
    )
    if translator.engine == "torch":
        # Batches of a few requests' sentences decode fastest side by side, one thread each
        # (as CTranslate2's do): 2 x 1 thread served 28% more requests/s than 1 x 2 threads.
        import torch

        torch.set_num_threads(1)
        translator.parallel_batches = threads or len(os.sched_getaffinity(0))
        translator.options = translator.options.override(threads=1)
    settings = ServeSettings(
        max_body_bytes=max_body_bytes, max_sentences=max_sentences, max_chars=max_chars,
        timeout_s=timeout, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
    )  # fmt: skip
    app = create_app(translator, settings)
    typer.echo(_what_decodes(translator))
    typer.echo(f"serving on http://{host}:{port} (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _check_at_least_one(**options: int | None) -> None:
    for name, value in options.items():
        if value is not None and value < 1:
            raise _fail(f"--{name.replace('_', '-')} must be at least 1, got {value}", 2)


def _read_input(path: Path | None) -> list[str]:
    from translator.data import read_lines

    if path is None or str(path) == "-":
        if path is None and sys.stdin.isatty():
            raise _fail("nothing to translate: give a sentence, --input FILE or pipe text in", 2)
        data = sys.stdin.buffer.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise _fail(f"stdin is not valid UTF-8 (byte {err.start})", 1) from None
        lines = text.split("\n")
        return lines[:-1] if lines and lines[-1] == "" else lines
    if path.is_dir():
        raise _fail(f"{path} is a directory, not a text file", 1)
    if not path.exists():
        raise _fail(f"input file {path} does not exist", 1)
    return read_lines(path)


def _check_decoding(
    beam: int | None,
    greedy: bool,
    alpha: float | None,
    max_len: int | None,
    batch_size: int | None,
    threads: int | None,
) -> None:
    """The decoding flags' own errors, named as flags (the config's checks name keys)."""
    _check_at_least_one(beam=beam, max_len=max_len, batch_size=batch_size, threads=threads)
    if alpha is not None and alpha < 0:
        raise _fail(f"--alpha must be >= 0, got {alpha}", 2)
    if greedy and beam not in (None, 1):
        raise _fail(f"--greedy means --beam 1, not --beam {beam}: drop one", 2)


def _check_engine(engine: str) -> str:
    from translator.translate import ENGINES

    if engine not in ENGINES:
        raise _fail(f"--engine must be {' or '.join(ENGINES)}, got {engine!r}", 2)
    return engine


def _load_threads(engine: str, threads: int | None, n_sentences: int) -> int | None:
    """CTranslate2 fixes its threads when it loads: pick them for this input now (torch picks
    per call, translate._threads)."""
    from translator.translate import SMALL_INPUT

    if engine != "ctranslate2" or threads:
        return threads
    return 1 if n_sentences <= SMALL_INPUT else None


def _what_decodes(translator) -> str:
    """One line that says which model and settings decode."""
    opts = translator.options
    others = f" + {len(translator.ensemble)} ensembled runs" if translator.ensemble else ""
    if translator.engine != "torch":
        others += f", {translator.engine} {translator.quantization}"
    search = "greedy" if opts.beam_size == 1 else f"beam {opts.beam_size}"
    search += f", alpha {opts.length_penalty:g}" if opts.beam_size > 1 else ""
    search += f", at most {opts.max_len} tokens" if opts.max_len else ""
    return f"run {translator.run_dir} ({translator.weights}){others}: {search}"


def _warn_if_undertrained(translator) -> None:
    from translator.run_dir import best_validation

    best = best_validation(translator.run_dir)
    if best is not None and best[0] < 1.0:
        typer.echo(
            f"warning: this run is barely trained: best val BLEU {best[0]:.1f} after "
            f"{best[1]:,} steps; expect empty or repeated output",
            err=True,
        )


def _write_output(path: Path | None, lines: list[str]) -> None:
    """One line per item (an n-best item holds several lines and ends with a newline)."""
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    if path is None or str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from translator.files import atomic_write_text

    atomic_write_text(path, text)
