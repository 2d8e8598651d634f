"""`translator translate`, `synthesize` and `evaluate`: use and score a trained run."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from translator.cli.app import (
    BOOTSTRAP_SAMPLES,
    AlphaOpt,
    BatchSizeOpt,
    BeamOpt,
    EngineOpt,
    EnsembleOpt,
    GreedyOpt,
    MaxLenOpt,
    MbrOpt,
    RerankOpt,
    RunOpt,
    ShortlistOpt,
    ThreadsOpt,
    WeightsOpt,
    _check_at_least_one,
    _fail,
    app,
    user_errors,
)

if TYPE_CHECKING:
    from translator.config import DecodeConfig


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
    shortlist: ShortlistOpt = None,
    mbr: MbrOpt = None,
    rerank: RerankOpt = None,
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
    from translator.decoding.translator import Translator

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
        threads=_load_threads(run, threads, len(lines)),
    )
    _apply_decoding(
        translator, beam, greedy, alpha, max_len, batch_size, shortlist, nbest, mbr, rerank
    )
    if translator.options.rerank and (nbest > 1 or plot_attention is not None):
        flag = "--nbest" if nbest > 1 else "--plot-attention"
        raise _fail(f"reranking picks one translation per input; {flag} shows the beam's", 2)
    typer.echo(_what_decodes(translator), err=True)
    _warn_if_undertrained(translator)
    if plot_attention is not None:
        from translator.data.tokenization import JOINER
        from translator.plots import plot_attention as plot

        first = next((line for line in lines if line.strip()), "")
        *sides, weights = translator.attention(first)  # source and output tokens, weights
        labels = [[token.removeprefix(JOINER) for token in side] for side in sides]
        plot(*labels, weights, plot_attention)
        typer.echo(f"attention heatmap saved to {plot_attention}", err=True)
    progress = len(lines) > 100
    if nbest > 1:
        results = translator.translate_nbest(lines, progress=progress)
        _write_output(output, ["".join(f"{h}\t{sc:.4f}\n" for h, sc in r) + "\n" for r in results])
        return
    _write_output(output, translator.translate(lines, progress=progress))


@app.command(
    epilog="Examples: `translator synthesize --run runs/en-de --out synthetic/forward`, "
    "`translator synthesize --run runs/de-en --out synthetic/back`, then "
    "`translator train --set 'data.extra_train=[synthetic/forward, synthetic/back]'`"
)
@user_errors
def synthesize(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Prefix of the corpus to write: OUT.SRC.gz holds the split's sentences and "
            "OUT.TGT.gz their translations (SRC, TGT: the run's languages, e.g. en and de).",
        ),
    ],
    run: RunOpt = None,
    ensemble: EnsembleOpt = None,
    split: Annotated[
        str,
        typer.Option(help="Which of the run's splits to translate (as for `evaluate --split`)."),
    ] = "train",
    weights: WeightsOpt = None,
    beam: BeamOpt = None,
    greedy: GreedyOpt = False,
    alpha: AlphaOpt = None,
    max_len: MaxLenOpt = None,
    batch_size: BatchSizeOpt = None,
    shortlist: ShortlistOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Translate a split of a run's data (its training split by default) into a synthetic
    parallel corpus, for more training pairs (`data.extra_train`).

    An EN->DE run gives forward translations (real English, synthetic German), a DE->EN run
    trained on the same corpus back-translations (synthetic English, real German). Training on
    the real pairs and both is data diversification (Nguyen et al., 2020).
    """
    from translator.data.sources import read_split_texts
    from translator.decoding.translator import Translator

    _check_decoding(beam, greedy, alpha, max_len, batch_size, threads)
    translator = Translator.load(run, weights=weights, ensemble=ensemble or (), threads=threads)
    _apply_decoding(translator, beam, greedy, alpha, max_len, batch_size, shortlist)
    sources, _ = read_split_texts(translator.cfg, split)
    typer.echo(_what_decodes(translator) + f"; {len(sources):,} sentences of {split}", err=True)
    started = time.perf_counter()
    translations = translator.translate(sources, progress=True)
    seconds = time.perf_counter() - started
    d = translator.cfg.data
    paths = [Path(f"{out}.{lang}.gz") for lang in (d.src_lang, d.tgt_lang)]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for path, lines in zip(paths, (sources, translations)):
        _write_gzip_lines(path, lines)
    typer.echo(
        f"wrote {len(sources):,} pairs in {seconds:.0f} s: {paths[0]} (sources), {paths[1]} "
        f"(translations); train on them with --set data.extra_train={out}",
        err=True,
    )


def _write_gzip_lines(path: Path, lines: list[str]) -> None:
    """Gzipped lines, written atomically; mtime 0 so that the same lines give the same bytes."""
    import gzip

    from translator.files import atomic_write

    data = gzip.compress("".join(line + "\n" for line in lines).encode("utf-8"), mtime=0)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


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
            "name; a file or prefix for data.source files. A fine-tuned run also takes "
            "`parent:test`, `parent:valid`...: a split of the data of the run it started from."
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
    shortlist: ShortlistOpt = None,
    mbr: MbrOpt = None,
    rerank: RerankOpt = None,
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
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="Decode again even when the run dir holds the outputs of this very request.",
        ),
    ] = False,
) -> None:
    """Translate a test set with a trained run and score it with sacreBLEU (cased, detokenized).

    A run trained on lowercased text (data.lowercase) is scored against lowercased references.
    Each evaluation is recorded in the run dir (evaluations/: the outputs and a JSON record);
    the same request again (sentences, decoding options, weights, engine) reuses its outputs.
    """
    from translator.data.multi30k import read_lines
    from translator.data.sources import read_split_texts, resolve_split
    from translator.decoding import evaluations
    from translator.decoding.scoring import references_for, score
    from translator.decoding.translator import Translator
    from translator.run_dir import EVALUATIONS, read_evaluation, read_init_from, read_versions

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
    opts = _apply_decoding(
        translator, beam, greedy, alpha, max_len, batch_size, shortlist, mbr=mbr, rerank=rerank
    )
    d = translator.cfg.data
    if src is not None:
        sources, refs = read_lines(src), read_lines(ref)
        if len(sources) != len(refs):
            raise _fail(f"{src} has {len(sources)} lines but {ref} has {len(refs)}", 1)
        name = str(src)
    else:
        sources, refs = read_split_texts(translator.cfg, split)
        name = split if split.startswith("parent:") else resolve_split(translator.cfg, split)
    _warn_if_undertrained(translator)  # once the inputs are known good: errors stay one line
    key = evaluations.output_key(translator, sources, opts)
    found = None if no_cache else read_evaluation(translator.run_dir, key)
    if found:
        hyps, seconds = found[1], found[0]["seconds"]
    else:
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
    requested = str(src) if src is not None else split
    result.update(
        **evaluations.describe(translator, opts, name, requested, seconds),
        sentences_per_s=round(len(hyps) / seconds, 1),
        lowercased_references=d.lowercase,
        init_from=read_init_from(translator.run_dir),
        versions=read_versions(translator.run_dir),  # what made the run (config.yaml)
        reused=found is not None,
    )
    evaluations.record(translator.run_dir, key, result, hyps)
    if output:
        _write_output(output, hyps)
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(_what_decodes(translator))
    if found:
        typer.echo(f"the outputs of this request were recorded already: reused {EVALUATIONS}/"
                   f"{key}.txt (--no-cache decodes again)")  # fmt: skip
    models = f", an ensemble of {result['models']} models" if result["models"] > 1 else ""
    typer.echo(
        f"{name}: {len(hyps)} sentences, beam {result['beam']}{models}, "
        f"{'decoded earlier in ' if found else ''}{seconds:.1f} s "
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


def _read_input(path: Path | None) -> list[str]:
    from translator.data.multi30k import read_lines

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


def _apply_decoding(
    translator,
    beam,
    greedy,
    alpha,
    max_len,
    batch_size,
    shortlist=None,
    nbest=None,
    mbr=None,
    rerank=None,
) -> DecodeConfig:
    """The decoding flags over the run's `decode` options: what `translator` now decodes
    with (the flags themselves are checked by `_check_decoding`)."""
    translator.options = translator.options.override(
        beam_size=1 if greedy else beam,
        length_penalty=alpha,
        max_len=max_len,
        batch_size=batch_size,
        shortlist=shortlist,
        nbest=nbest,
        mbr=mbr,
        rerank=rerank,
    )
    if translator.options.rerank:  # a missing or broken file is said before any decoding
        from translator.decoding.rerank import RerankWeights

        RerankWeights.load(Path(translator.options.rerank))
        given = {"--beam": beam, "--greedy": greedy or None, "--alpha": alpha,
                 "--shortlist/--no-shortlist": shortlist}  # fmt: skip
        clash = [flag for flag, value in given.items() if value is not None]
        if clash:
            raise _fail(
                f"reranking decodes the n-best its weights file was tuned with: drop {clash[0]}",
                2,
            )
    return translator.options


def _load_threads(run, threads: int | None, n_sentences: int) -> int | None:
    """--threads, else the run's decode.threads, else one thread for a few sentences (both
    engines take their threads when they load), else None: all cores."""
    from translator.decoding.pipeline import default_threads
    from translator.run_dir import RunError, latest_run, read_config

    if threads is None:
        try:
            threads = read_config(Path(run) if run else latest_run()).decode.threads
        except RunError:
            pass  # loading says what is wrong with the run
    return default_threads(threads, n_sentences)


def _check_engine(engine: str) -> str:
    from translator.decoding.translator import ENGINES

    if engine not in ENGINES:
        raise _fail(f"--engine must be {' or '.join(ENGINES)}, got {engine!r}", 2)
    return engine


def _what_decodes(translator) -> str:
    """One line that says which model and settings decode."""
    from translator.run_dir import read_init_from

    opts = translator.options
    others = f" + {len(translator.ensemble)} ensembled runs" if translator.ensemble else ""
    if translator.engine != "torch":
        others += f", {translator.engine} {translator.quantization}"
    origin = read_init_from(translator.run_dir)
    others += f", fine-tuned from {origin['run']}" if origin else ""
    from translator.decoding.rerank import searched_with

    beam, alpha, shortlist = searched_with(opts)  # with --rerank: its weights file's n-best
    search = "greedy" if beam == 1 else f"beam {beam}"
    search += f", alpha {alpha:g}" if beam > 1 else ""
    search += f", at most {opts.max_len} tokens" if opts.max_len else ""
    search += ", shortlist" if shortlist and translator.has_shortlist else ""
    search += f", MBR by {opts.mbr}" if opts.mbr else ""
    search += f", its {beam}-best reranked by {opts.rerank}" if opts.rerank else ""
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
