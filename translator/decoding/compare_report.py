"""A `compare` report as a person reads it: rich tables on the terminal, or one HTML file.

    print_report(report)                    # rich tables
    write_html(report, Path("report.html")) # self-contained: inline CSS and an SVG chart

`report` is what decoding/compare.py returns, plus `config_diff` (key -> value per run).
"""

from __future__ import annotations

import html
import io
from pathlib import Path

from translator.files import atomic_write_text


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" + (" *" if value < 0.05 else "")


def _system_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    if report["mode"] == "groups":
        head = ["group", "runs", "BLEU mean ± sd", "chrF mean ± sd"]
        rows = []
        for label in ("a", "b"):
            g = report["groups"][label]
            rows.append(
                [
                    label.upper(),
                    ", ".join(g["runs"]),
                    f"{g['bleu']['mean']:.2f} ± {g['bleu']['sd']:.2f}",
                    f"{g['chrf']['mean']:.2f} ± {g['chrf']['sd']:.2f}",
                ]
            )
        for key in ("bleu", "chrf"):
            t = report["tests"][key]
            rows.append(
                [
                    f"B - A {key}",
                    "",
                    f"{t['difference']:+.2f} [{t['ci95'][0]:+.2f}, {t['ci95'][1]:+.2f}]",
                    f"p = {_p(t['p_bootstrap'])}",
                ]
            )
        return head, rows
    head = [
        "system",
        "BLEU (95% CI)",
        "p bootstrap",
        "p AR",
        "chrF (95% CI)",
        "p bootstrap",
        "p AR",
    ]
    rows = []
    for s in report["systems"]:
        rows.append(
            [
                s["name"] + (" (baseline)" if s["name"] == report["baseline"] else ""),
                f"{s['bleu']:.2f} ± {s['bleu_ci95']:.2f}",
                _p(s.get("bleu_p_bootstrap")),
                _p(s.get("bleu_p_ar")),
                f"{s['chrf']:.2f} ± {s['chrf_ci95']:.2f}",
                _p(s.get("chrf_p_bootstrap")),
                _p(s.get("chrf_p_ar")),
            ]
        )
    return head, rows


def _bucket_rows(buckets: list[dict], field: str, first: str) -> tuple[list[str], list[list[str]]]:
    names = list(buckets[0][field]) if buckets else []
    count = "sentences" if field == "bleu" else "reference_words"
    head = [first, count.replace("_", " "), *names]
    rows = [[b["bucket"], str(b[count]), *(f"{b[field][n]:.1f}" for n in names)] for b in buckets]
    return head, rows


def _tables(report: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    tables = [("Scores: " + report.get("split", ""), *_system_rows(report))]
    tables.append(
        ("BLEU by source length (words)", *_bucket_rows(report["length_buckets"], "bleu", "length"))
    )
    if report.get("frequency_buckets"):
        tables.append(
            (
                "Word F-measure by frequency in the training targets",
                *_bucket_rows(report["frequency_buckets"], "f", "frequency"),
            )
        )
    if report.get("config_diff"):
        runs = list(next(iter(report["config_diff"].values())))
        rows = [
            [key, *(str(values[r]) for r in runs)] for key, values in report["config_diff"].items()
        ]
        tables.append(("Config keys that differ", ["key", *runs], rows))
    return tables


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for title, head, rows in _tables(report):
        table = Table(title=title, title_justify="left")
        for i, column in enumerate(head):
            table.add_column(column, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    for example in report.get("examples", []):
        console.print(f"[bold]#{example['index']}[/bold] {example['source']}")
        console.print(f"  reference  {example['reference']}")
        for name, output in example["outputs"].items():
            console.print(
                f"  {example['sentence_bleu'][name]:5.1f}  {name}: {output}",
                markup=False,
                highlight=False,
            )
    console.print(_footnote(report), markup=False, highlight=False)


def _footnote(report: dict) -> str:
    tests = f"paired bootstrap ({report['bootstrap_samples']} samples)"
    if report["mode"] == "systems":
        tests += (
            f" and approximate randomization ({report['ar_trials']} trials) against the baseline"
        )
    return (
        f"{report['n']} sentences; p-values: {tests}, seed {report['seed']}; * p < 0.05. "
        "Significance says the difference is unlikely to be chance, not that it matters."
    )


def length_chart_svg(report: dict) -> str:
    """BLEU by source length, one bar per system and bucket, as inline SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buckets = report["length_buckets"]
    names = list(buckets[0]["bleu"]) if buckets else []
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(buckets))]
        ax.bar(xs, [b["bleu"][name] for b in buckets], width, label=name)
    ax.set_xticks(
        [j + width * (len(names) - 1) / 2 for j in range(len(buckets))],
        [f"{b['bucket']}\n({b['sentences']})" for b in buckets],
    )
    ax.set_xlabel("source length in words (sentences)")
    ax.set_ylabel("BLEU")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = io.StringIO()
    fig.savefig(out, format="svg")
    plt.close(fig)
    svg = out.getvalue()
    return svg[svg.index("<svg") :]  # drop the XML prolog: the SVG sits inside the HTML


def write_html(report: dict, path: Path) -> None:
    def table(title: str, head: list[str], rows: list[list[str]]) -> str:
        cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
        )
        return f"<h2>{html.escape(title)}</h2><table><tr>{cells}</tr>{body}</table>"

    parts = [table(*t) for t in _tables(report)]
    parts.insert(2, f"<figure>{length_chart_svg(report)}</figure>")
    examples = []
    for ex in report.get("examples", []):
        outputs = "".join(
            f"<tr><td>{ex['sentence_bleu'][n]:.1f}</td><td>{html.escape(n)}</td>"
            f"<td>{html.escape(o)}</td></tr>"
            for n, o in ex["outputs"].items()
        )
        examples.append(
            f"<div class=ex><p><b>#{ex['index']}</b> {html.escape(ex['source'])}</p>"
            f"<p class=ref>reference: {html.escape(ex['reference'])}</p>"
            f"<table>{outputs}</table></div>"
        )
    if examples:
        parts.append("<h2>Sentences whose sentence-BLEU differs most</h2>" + "".join(examples))
    parts.append(f"<p class=note>{html.escape(_footnote(report))}</p>")
    page = f"""<!doctype html><html lang=en><meta charset=utf-8>
<title>translator compare</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; max-width: 62rem; margin: 2rem auto; color: #222;
  padding: 0 1rem; }}
h1 {{ font-size: 1.5rem; }} h2 {{ font-size: 1.1rem; margin-top: 2rem; }}
table {{ border-collapse: collapse; margin: .5rem 0; }}
th, td {{ padding: .3rem .7rem; border-bottom: 1px solid #ddd; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
.ex td {{ text-align: left; }} .ex {{ margin: 1rem 0; }} .ref {{ color: #555; }}
.note {{ color: #555; font-size: .9rem; }} svg {{ max-width: 100%; height: auto; }}
</style>
<h1>translator compare: {html.escape(report.get("split", ""))}</h1>
{"".join(parts)}
</html>
"""
    atomic_write_text(Path(path), page)
