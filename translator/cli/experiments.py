"""`translator runs` and `translator compare`: see the experiments, and decide between them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from translator.cli.app import (
    AlphaOpt,
    BatchSizeOpt,
    BeamOpt,
    GreedyOpt,
    MaxLenOpt,
    MbrOpt,
    ShortlistOpt,
    _fail,
    app,
    user_errors,
)


@app.command(
    epilog="Examples: `translator runs`, `translator runs --sort val_bleu`, "
    "`translator runs runs/ --json | jq '.[0]'`"
)
@user_errors
def runs(
    folder: Annotated[
        Path | None,
        typer.Argument(
            help="The folder of run dirs [default: runs, or $TRANSLATOR_RUNS_DIR].",
            show_default=False,
        ),
    ] = None,
    sort: Annotated[
        str | None,
        typer.Option(help="Sort by a column: val_bleu, test_bleu, started, steps, name, ..."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list.")] = False,
) -> None:
    """A table of every run under FOLDER: status, config and its changed keys, budget spent,
    parameters, best validation BLEU, the latest test BLEU `evaluate` recorded, size, start.

    Status: training (its process is alive), complete, stopped (by a signal; resumable),
    failed, incomplete (killed; resumable), unrecorded (older runs).
    """
    from translator.run_dir import runs_root
    from translator.run_table import run_rows, sort_rows

    folder = folder or runs_root()
    rows = run_rows(folder)
    rows = sort_rows(rows, sort) if sort else sorted(rows, key=lambda r: r.get("started") or "")
    if as_json:
        typer.echo(json.dumps(rows))
        return
    if not rows:
        typer.echo(f"no runs in {folder}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} runs in {folder}", title_justify="left")
    columns = (
        "name",
        "status",
        "config",
        "parent",
        "steps",
        "epochs",
        "minutes",
        "params",
        "val BLEU",
        "test BLEU",
        "MB",
        "started",
    )
    for column in columns:
        table.add_column(
            column, justify="left" if column in {"name", "status", "config"} else "right"
        )
    for r in rows:
        config = r.get("config") or "-"
        if r.get("changes"):
            config += " " + " ".join(r["changes"])
        table.add_row(
            r["name"],
            r["status"],
            config,
            r.get("parent") or "",
            *(_show(r.get(k)) for k in ("steps", "epochs", "minutes")),
            f"{r['parameters'] / 1e6:.2f}M" if r.get("parameters") else "-",
            *(_show(r.get(k)) for k in ("val_bleu", "test_bleu", "size_mb")),
            (r.get("started") or "-").replace("T", " "),
        )
    Console().print(table)


def _show(value) -> str:
    return "-" if value is None else str(value)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog="Examples: `translator compare runs/a runs/b`; `translator compare runs/a runs/b "
    "--html report.html`; seeds: `translator compare --a runs/a1 runs/a2 runs/a3 --b runs/b1 "
    "runs/b2 runs/b3`.",
)
@user_errors
def compare(
    runs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Run dirs; the first is the baseline. Or two groups of runs (training seeds): "
            "--a RUN... --b RUN...",
            show_default=False,
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="The split to decode and score.")] = "test",
    src: Annotated[Path | None, typer.Option(help="Score this source file instead.")] = None,
    ref: Annotated[Path | None, typer.Option(help="Reference translations for --src.")] = None,
    beam: BeamOpt = None,
    greedy: GreedyOpt = False,
    alpha: AlphaOpt = None,
    max_len: MaxLenOpt = None,
    batch_size: BatchSizeOpt = None,
    shortlist: ShortlistOpt = None,
    mbr: MbrOpt = None,
    examples: Annotated[
        int, typer.Option(help="Sentences shown whose sentence-BLEU differs most.")
    ] = 5,
    html: Annotated[
        Path | None, typer.Option(help="Also write the report as one self-contained HTML file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Decode again, ignoring recorded outputs.")
    ] = False,
) -> None:
    """Score two or more runs on the same sentences and test whether they differ.

    Each run decodes the split with the same decoding options (the baseline's, changed by the
    flags), unless `evaluate` or an earlier `compare` recorded those very outputs in its run dir.
    Scores are sacreBLEU's BLEU and chrF; the p-values are sacreBLEU's paired bootstrap and
    approximate randomization against the baseline. Then: BLEU by source length, word F-measure
    by training frequency, the sentences that differ most, and the config keys that differ.
    """
    from translator.cli.decoding import _check_decoding
    from translator.decoding import compare_inputs as inputs
    from translator.decoding.compare import compare_groups, compare_systems
    from translator.decoding.compare_report import print_report, write_html

    _check_decoding(beam, greedy, alpha, max_len, batch_size, None)
    paths, groups = _parse_runs(runs or [])
    if (src is None) != (ref is None):
        raise _fail("--src and --ref go together", 2)
    cfgs = inputs.load_configs(paths)
    sources, references, name = inputs.texts_to_compare(paths, cfgs, split, src, ref)
    flags = {
        "beam_size": 1 if greedy else beam,
        "length_penalty": alpha,
        "max_len": max_len,
        "batch_size": batch_size,
        "shortlist": shortlist,
        "mbr": mbr,
    }
    outputs = inputs.outputs_of(paths, cfgs, sources, references, name, flags, no_cache, as_json)
    counts = inputs.train_word_counts(paths[0], cfgs[0])
    tgt = cfgs[0].data.tgt_lang
    if groups:
        a, b = ({str(p): outputs[str(p)] for p in group} for group in groups)
        report = compare_groups(a, b, sources, references, tgt, counts, examples)
    else:
        report = compare_systems(outputs, sources, references, tgt, counts, examples)
    report.update(
        split=name, runs=[str(p) for p in paths], config_diff=inputs.config_diff(paths, cfgs)
    )
    if html:
        write_html(report, html)
    if as_json:
        typer.echo(json.dumps(report))
        return
    print_report(report)
    if html:
        typer.echo(f"report written to {html}")


def _parse_runs(tokens: list[str]) -> tuple[list[Path], tuple[list[Path], list[Path]] | None]:
    """RUN_A RUN_B [RUN...], or --a RUN... --b RUN...: the run paths and, for groups, both."""
    if "--a" not in tokens and "--b" not in tokens:
        unknown = [t for t in tokens if t.startswith("-")]
        if unknown:
            raise _fail(f"no such option: {unknown[0]}", 2)
        if len(tokens) < 2:
            raise _fail("compare needs at least two runs (the first is the baseline)", 2)
        return [Path(t) for t in tokens], None
    if tokens.count("--a") != 1 or tokens.count("--b") != 1 or tokens[0] not in ("--a", "--b"):
        raise _fail("groups are given as --a RUN... --b RUN... (each flag once)", 2)
    i, j = tokens.index("--a"), tokens.index("--b")
    a = tokens[i + 1 : j] if i < j else tokens[i + 1 :]
    b = tokens[j + 1 : i] if j < i else tokens[j + 1 :]
    for label, group in (("--a", a), ("--b", b)):
        if len(group) < 2:
            raise _fail(
                f"{label} needs at least two runs to give a mean and a spread; "
                f"compare two single runs as RUN_A RUN_B",
                2,
            )
    group_a, group_b = [Path(t) for t in a], [Path(t) for t in b]
    return group_a + group_b, (group_a, group_b)
