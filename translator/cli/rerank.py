"""`translator tune-rerank`: weights for n-best reranking, tuned on a split, tested on others."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer

from translator.cli.app import (
    AlphaOpt,
    EnsembleOpt,
    RunOpt,
    ShortlistOpt,
    WeightsOpt,
    _fail,
    app,
    user_errors,
)


@app.command(
    "tune-rerank",
    epilog="Example: `translator tune-rerank --run runs/a --right-to-left runs/a-r2l "
    "--channel runs/a-deen --test test2016`, then `translator evaluate --run runs/a "
    "--rerank runs/a/rerank.json`.",
)
@user_errors
def tune_rerank(
    run: RunOpt = None,
    ensemble: EnsembleOpt = None,
    weights: WeightsOpt = None,
    right_to_left: Annotated[
        list[Path] | None,
        typer.Option(
            "--right-to-left",
            help="A run trained with model.right_to_left=true on the same languages "
            "(repeatable: an ensemble).",
        ),
    ] = None,
    channel: Annotated[
        list[Path] | None,
        typer.Option(
            help="A run translating the other way (e.g. DE->EN), scoring how well each "
            "candidate explains the source (repeatable: an ensemble). Any vocabulary."
        ),
    ] = None,
    nbest: Annotated[
        int,
        typer.Option(
            help="Candidates per sentence (the beam size; on Multi30k 20 gained more than 10)."
        ),
    ] = 20,
    split: Annotated[str, typer.Option(help="The split the weights are tuned on.")] = "valid",
    test: Annotated[
        list[str] | None,
        typer.Option(
            help="Then score this split with and without reranking, with paired tests (repeatable)."
        ),
    ] = None,
    alpha: AlphaOpt = None,
    shortlist: ShortlistOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Where to save the weights [default: RUN/rerank.json].")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Tune n-best reranking: the beam's `--nbest` candidates, rescored by the run's own model,
    a right-to-left model, a reverse-direction (channel) model and length, weighted for the
    best corpus BLEU on `--split`. The weights file is what `--rerank` takes.
    """
    from translator.data.sources import read_split_texts, resolve_split
    from translator.decoding.rerank import FILE, Reranker, RerankSetup, tune
    from translator.decoding.scoring import references_for
    from translator.decoding.translator import Translator

    if not right_to_left and not channel:
        raise _fail("give --right-to-left RUN and/or --channel RUN: the models that rescore", 2)
    if nbest < 2:
        raise _fail(f"--nbest must be at least 2, got {nbest}", 2)
    translator = Translator.load(run, weights=weights, ensemble=ensemble or ())
    # the run's own decoding, the baseline: its beam (no reranking or MBR of its config)
    translator.options = dataclasses.replace(
        translator.options.override(length_penalty=alpha, shortlist=shortlist),
        rerank=None,
        mbr=None,
    )
    opts = translator.options
    setup = RerankSetup(
        nbest, opts.length_penalty, opts.shortlist,
        tuple(map(str, right_to_left or ())), tuple(map(str, channel or ())),
    )  # fmt: skip
    reranker = Reranker(translator, setup, Translator.load)
    cfg = translator.cfg

    def texts(name: str) -> tuple[list[str], list[str], str]:
        sources, refs = read_split_texts(cfg, name)
        return sources, references_for(refs, cfg.data.lowercase), resolve_split(cfg, name)

    sources, refs, tuned_on = texts(split)
    tests = {resolved: (s, r) for s, r, resolved in map(texts, test or ())}  # bad names: now
    tuned = tune(reranker, sources, refs, cfg.data.tgt_lang, progress=not as_json)
    tuned.tuned.update(
        split=tuned_on, run=str(translator.run_dir), ensemble=[str(p) for p in ensemble or ()]
    )
    path = out or translator.run_dir / FILE
    tuned.save(path)  # before the tests: they cannot lose it
    report = {"weights": tuned.weights, "tuned": tuned.tuned, "tests": {}, "file": str(path)}
    for name, (sources, refs) in tests.items():
        report["tests"][name] = _test(reranker, tuned.weights, sources, refs, cfg)
    if tests:
        tuned.tuned["tests"] = report["tests"]
        tuned.save(path)
    if as_json:
        typer.echo(json.dumps(report))
        return
    shown = ", ".join(f"{k} {v:g}" for k, v in tuned.weights.items())
    typer.echo(f"weights ({tuned_on}, {tuned.tuned['sentences']} sentences): {shown}")
    typer.echo(
        f"{tuned_on}: BLEU {tuned.tuned['beam_bleu']:.2f} (the first of a beam {nbest}) -> "
        f"{tuned.tuned['bleu']:.2f} reranked (tuned on it: optimistic)"
    )
    beam = opts.beam_size
    for name, row in report["tests"].items():
        typer.echo(
            f"{name}: BLEU {row['beam']['bleu']:.2f} (beam {beam}) -> "
            f"{row['reranked']['bleu']:.2f} reranked "
            f"(p {row['p_bootstrap']:.3f} paired bootstrap, {row['p_ar']:.3f} AR), chrF "
            f"{row['beam']['chrf']:.2f} -> {row['reranked']['chrf']:.2f}, papers' tok-lc "
            f"{row['beam']['bleu_tok_lc']:.2f} -> {row['reranked']['bleu_tok_lc']:.2f}"
        )
    typer.echo(f"saved to {path}: use it with --rerank {path}")


def _test(reranker, weights: dict, sources: list[str], refs: list[str], cfg) -> dict:
    """The run's own decoding (its beam, without reranking) against reranked on one split:
    scores and paired tests."""
    from translator.decoding.compare import compare_systems
    from translator.decoding.rerank import chosen_texts
    from translator.decoding.scoring import score

    beam = reranker.translator.translate(sources)
    reranked = chosen_texts(*reranker.candidates(sources), weights)
    tgt = cfg.data.tgt_lang
    report = compare_systems({"beam": beam, "reranked": reranked}, sources, refs, tgt, None, 0)
    row = report["systems"][1]
    keys = ("bleu", "chrf", "bleu_tok_lc")
    return {
        "beam": {k: v for k, v in score(beam, refs, tgt).items() if k in keys},
        "reranked": {k: v for k, v in score(reranked, refs, tgt).items() if k in keys},
        "p_bootstrap": row["bleu_p_bootstrap"],
        "p_ar": row["bleu_p_ar"],
        "bleu_ci95": row["bleu_ci95"],
        "changed": sum(a != b for a, b in zip(beam, reranked, strict=True)),
        "sentences": len(sources),
    }
