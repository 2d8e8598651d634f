"""Decoding speed and quality on a split: greedy and beam, cached and uncached, per engine.

    python scripts/bench_decode.py                      # latest run, test2016
    python scripts/bench_decode.py --run runs/X --split val --beams 1 5 --alphas 0.6 1.0
    python scripts/bench_decode.py --engine torch ctranslate2 --ct2 runs/X/ct2 runs/X/ct2-int8
    python scripts/bench_decode.py --shortlist off on   # every output token, then the shortlist
    python scripts/bench_decode.py --attention          # also: the cost of heatmaps (300 sentences)

Prints, for each mode, seconds, sentences/s, output tokens/s, cased sacreBLEU and chrF, and for
other engines the share of outputs identical to torch's at the same beam. The uncached greedy
search re-feeds the whole prefix at every step (as JoeyNMT does); comparing it with the cached one
in the same run shows what the key/value cache buys.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from translator.data.sources import read_texts
from translator.data.tokenization import Tokenizer
from translator.decoding import search as decode
from translator.decoding.scoring import references_for, score
from translator.decoding.translator import Translator
from translator.run_dir import latest_run


def uncached_search(model, src, options, *, sos_id, eos_id):
    """Greedy search without the key/value cache, in `search`'s signature."""
    return decode.greedy_search_uncached(model, src, options, sos_id=sos_id, eos_id=eos_id)


def timed(
    translator: Translator,
    sources: list[str],
    refs: list[str],
    beam: int,
    alpha: float | None = None,
    shortlist: bool = True,
) -> dict:
    """Translate all sources once; tok/s counts output tokens including <eos>."""
    started = time.perf_counter()
    hyps = translator.translate(sources, beam_size=beam, length_penalty=alpha, shortlist=shortlist)
    seconds = time.perf_counter() - started
    tokens = sum(len(t) + 1 for t in Tokenizer(translator.cfg.data.tgt_lang).tokenize(hyps))
    result = score(hyps, refs, translator.cfg.data.tgt_lang)
    return {
        "hyps": hyps,
        "seconds": seconds,
        "sent_s": len(sources) / seconds,
        "tok_s": tokens / seconds,
        "bleu": result["bleu"],
        "bleu_tok_lc": result["bleu_tok_lc"],
        "chrf": result["chrf"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="run dir (default: latest)")
    parser.add_argument("--split", default="test2016")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument(
        "--alphas",
        type=float,
        nargs="*",
        default=[],
        help="also sweep these length penalties at the largest beam",
    )
    parser.add_argument("--uncached", action="store_true", help="also time uncached greedy")
    parser.add_argument(
        "--shortlist",
        nargs="+",
        default=["on"],
        choices=["on", "off"],
        help="decode.shortlist settings to time, in this order (where the run has a shortlist)",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--attention", action="store_true", help="also time translate_with_attention (heatmaps)"
    )
    parser.add_argument("--engine", nargs="+", default=["torch"], choices=["torch", "ctranslate2"])
    parser.add_argument(
        "--ct2",
        type=Path,
        nargs="*",
        default=[],
        help="CTranslate2 export folders to time (default: RUN/ct2)",
    )
    args = parser.parse_args()
    # CTranslate2 sets OpenMP's thread count when it loads, which torch shares: torch's are set
    # again before it decodes.
    torch_threads = args.threads or os.cpu_count()

    run = args.run or latest_run()
    engines = []
    if "torch" in args.engine:
        engines.append(("torch", Translator.load(run)))
    if "ctranslate2" in args.engine:
        for folder in args.ct2 or [run]:
            ct2 = Translator.load(folder, engine="ctranslate2", threads=args.threads)
            engines.append((f"ct2 {ct2.quantization}", ct2))
    cfg = engines[0][1].cfg
    sources, refs = read_texts(cfg, args.split)
    refs = references_for(refs, cfg.data.lowercase)  # lowercased for a run trained on lowercase

    rows, reference = [], {}
    for engine, translator in engines:
        if engine == "torch":
            torch.set_num_threads(torch_threads)
        translator.translate(sources[:64], beam_size=1)  # warm-up: allocator, oneDNN kernels
        for b in args.beams:
            for setting in args.shortlist:
                result = timed(translator, sources, refs, b, shortlist=setting == "on")
                reference.setdefault(b, result["hyps"])  # the first engine's outputs
                same = sum(x == y for x, y in zip(result["hyps"], reference[b])) / len(sources)
                mode = (f"beam {b}" if b > 1 else "greedy") + (
                    f", shortlist {setting}" if len(args.shortlist) > 1 else ""
                )
                rows.append((engine, mode, result, same))
        for alpha in args.alphas:
            beam = max(args.beams)
            result = timed(translator, sources, refs, beam, alpha)
            rows.append((engine, f"beam {beam} alpha {alpha}", result, None))
        if args.uncached and engine == "torch":
            cached = decode.search
            decode.search = uncached_search  # swap the search the Translator calls
            try:
                result = timed(translator, sources, refs, 1)
                rows.append((engine, "greedy, no cache", result, None))
            finally:
                decode.search = cached

    if args.attention:
        attention_rows = []
        for engine, translator in engines:
            if engine == "torch":
                torch.set_num_threads(torch_threads)
            for b in args.beams:
                plain = timed(translator, sources[:300], refs[:300], b)["seconds"]
                started = time.perf_counter()
                translator.translate_with_attention(sources[:300], beam_size=b)
                attention_rows.append((engine, b, plain, time.perf_counter() - started))

    print(f"{args.split}: {len(sources)} sentences, {torch_threads} threads")
    header = f"{'engine':<14}{'mode':<26}{'seconds':>9}{'sent/s':>9}{'tok/s':>9}{'BLEU':>8}"
    print(header + f"{'tok-lc':>8}{'chrF':>8}{'same':>8}")
    for engine, name, r, same in rows:
        print(
            f"{engine:<14}{name:<26}{r['seconds']:>9.2f}{r['sent_s']:>9.1f}{r['tok_s']:>9.0f}"
            f"{r['bleu']:>8.2f}{r['bleu_tok_lc']:>8.2f}{r['chrf']:>8.2f}"
            + (f"{same:>8.1%}" if same is not None else "")
        )
    if args.attention:
        print("heatmaps, 300 sentences: translate, translate_with_attention (one search)")
        for engine, beam, plain, heat in attention_rows:
            print(f"{engine:<14}beam {beam:<4}{plain:>8.2f} s{heat:>8.2f} s{heat / plain:>7.2f}x")


if __name__ == "__main__":
    main()
