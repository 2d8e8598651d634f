"""The data layer at scale: prepare and train on a synthetic corpus of N WMT-length pairs.

    python scripts/bench_data.py --pairs 1000000                     # text files, then training
    python scripts/bench_data.py --pairs 5000000 --formats text parquet --work /tmp/bench

Each synthetic pair is two random Multi30k training pairs joined (~26 tokens a side, the length
of WMT sentences), written as plain-text files (train.en, train.de) and/or one parquet table;
val and test are 1,000 such pairs each. For each format, `translator prepare` runs cold (empty
cache) and warm, in a child process whose peak memory is measured: the sum of PSS over the
process and its workers, sampled every 0.1 s, and its anonymous part (the rest is file pages that
Arrow and numpy memory-map: page cache the kernel can drop). Then the default config trains
`--steps` steps on the prepared corpus, and the same steps on Multi30k, each in a child process:
seconds from start to the first training step, target tokens/s and peak memory.
Needs TRANSLATOR_DATA_DIR (the Multi30k files). Compare figures from one run only.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TRAIN_CHILD = """
import json, sys, time
started = time.perf_counter()
from translator.config import load_config
from translator.training.trainer import Trainer
first = []
step = Trainer.train_step
def timed_step(self, group):
    result = step(self, group)
    if not first:
        first.append(time.perf_counter() - started)
    return result
Trainer.train_step = timed_step
cfg = load_config(None, sys.argv[2:])
Trainer(cfg, run_dir=sys.argv[1], progress=False).train()
print(json.dumps({"first_step_s": first[0]}))
"""


def read_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


def write_corpus(folder: Path, n: int, formats: list[str], seed: int) -> None:
    if not os.environ.get("TRANSLATOR_DATA_DIR"):
        sys.exit("set TRANSLATOR_DATA_DIR to the folder with the Multi30k files")
    data = Path(os.environ["TRANSLATOR_DATA_DIR"])
    en, de = read_lines(data / "train.en.gz"), read_lines(data / "train.de.gz")
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", n), ("dev", 1000), ("test", 1000)):
        files = [open(folder / f"{name}.{lang}", "w", encoding="utf-8") for lang in ("en", "de")]
        writer = None
        for start in range(0, count, 100_000):
            picks = rng.integers(0, len(en), size=(min(100_000, count - start), 2))
            src = [f"{en[a]} {en[b]}" for a, b in picks]
            tgt = [f"{de[a]} {de[b]}" for a, b in picks]
            files[0].write("\n".join(src) + "\n")
            files[1].write("\n".join(tgt) + "\n")
            if "parquet" in formats:
                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.table({"en": src, "de": tgt})
                writer = writer or pq.ParquetWriter(folder / f"{name}.parquet", table.schema)
                writer.write_table(table)
        for f in files:
            f.close()
        if writer:
            writer.close()


class PeakMemory:
    """Peaks of the summed PSS of a process and its descendants, sampled in a thread: all of it,
    and the anonymous part alone (file pages memory-mapped by Arrow and numpy are page cache
    the kernel can drop; anonymous memory is what the process really holds)."""

    def __init__(self, pid: int):
        self.pid, self.peak, self.peak_anon, self._done = pid, 0, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.1):
            sizes = [_pss(p) for p in _tree(self.pid)]
            self.peak = max(self.peak, sum(total for total, _ in sizes))
            self.peak_anon = max(self.peak_anon, sum(anon for _, anon in sizes))

    def stop(self) -> tuple[int, int]:
        self._done.set()
        self._thread.join()
        return self.peak, self.peak_anon


def _tree(pid: int) -> list[int]:
    pids, frontier = [pid], [pid]
    while frontier:
        children = []
        for p in frontier:
            try:
                text = Path(f"/proc/{p}/task/{p}/children").read_text()
            except OSError:
                continue
            children += [int(c) for c in text.split()]
        pids += children
        frontier = children
    return pids


def _pss(pid: int) -> tuple[int, int]:
    """(PSS, anonymous PSS) of a process in bytes."""
    sizes = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("Pss", "Pss_Anon"):
                sizes[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return sizes.get("Pss", 0), sizes.get("Pss_Anon", 0)


def run_child(command: list[str], env: dict) -> tuple[float, tuple[int, int], str]:
    """(seconds, (peak bytes, peak anonymous bytes), stdout) of a child process; exits if it
    fails."""
    started = time.perf_counter()
    child = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    memory = PeakMemory(child.pid)
    out, err = child.communicate()
    seconds, peak = time.perf_counter() - started, memory.stop()
    if child.returncode:
        sys.exit(f"{' '.join(command[:4])}... failed ({child.returncode}):\n{err[-3000:]}")
    return seconds, peak, out


def gb(peak: tuple[int, int]) -> str:
    return f"{peak[0] / 1e9:.2f} GB ({peak[1] / 1e9:.2f} GB anonymous)"


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def train(overrides: list[str], run: Path, steps: int, env: dict) -> dict:
    sets = overrides + [
        f"train.max_steps={steps}",
        "train.max_minutes=null",
        "train.log_every=20",
        "train.valid_max_sentences=200",
    ]
    command = [sys.executable, "-c", TRAIN_CHILD, str(run), *sets]
    seconds, peak, out = run_child(command, env)
    from translator.run_dir import read_metrics

    records = read_metrics(run)
    speeds = [r["tokens_per_s"] for r in records if "tokens_per_s" in r][1:]  # first: warm-up
    return {
        "first_step_s": json.loads(out.splitlines()[-1])["first_step_s"],
        "seconds": seconds,
        "peak_gb": peak[0] / 1e9,
        "peak_anon_gb": peak[1] / 1e9,
        "tokens_per_s": float(np.median(speeds)),
    }


def compare_layouts(cache: Path, batches: int = 2000, rows: int = 150) -> dict:
    """The cache's flat .npy ids + offsets against the same ids as an Arrow list column (what
    `datasets` writes): seconds to open, and to gather `batches` random batches of `rows`."""
    import pyarrow as pa

    offsets = np.load(cache / "train.src.offsets.npy")
    ids = np.load(cache / "train.src.ids.npy", mmap_mode="r")
    arrow_file = cache.parent / "train.src.arrow"
    with pa.OSFile(str(arrow_file), "wb") as sink:
        column = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(ids))
        table = pa.table({"ids": column})
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=1000)  # datasets' record batches
    picks = np.random.default_rng(0).integers(0, len(offsets) - 1, size=(batches, rows))
    result = {}
    started = time.perf_counter()
    offsets = np.load(cache / "train.src.offsets.npy")
    ids = np.load(cache / "train.src.ids.npy", mmap_mode="r")
    result["npy_open_s"] = time.perf_counter() - started
    started = time.perf_counter()
    for batch in picks:
        [ids[offsets[i] : offsets[i + 1]] for i in batch]
    result["npy_gather_s"] = time.perf_counter() - started
    started = time.perf_counter()
    column = pa.ipc.open_file(pa.memory_map(str(arrow_file))).read_all().column("ids")
    result["arrow_open_s"] = time.perf_counter() - started
    started = time.perf_counter()
    for batch in picks:
        taken = column.take(pa.array(batch)).combine_chunks()
        flat, ends = taken.flatten().to_numpy(), taken.offsets.to_numpy()
        [flat[ends[j] : ends[j + 1]] for j in range(len(batch))]
    result["arrow_gather_s"] = time.perf_counter() - started
    arrow_file.unlink()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--formats", nargs="+", default=["text"], choices=["text", "parquet"])
    parser.add_argument("--steps", type=int, default=200, help="training steps (0: no training)")
    parser.add_argument("--work", type=Path, help="folder for the corpus, caches and runs")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse the corpus and caches already in --work (the 'cold' prepare is then warm)",
    )
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-data-"))
    corpus = work / "corpus"
    started = time.perf_counter()
    if not (args.reuse and (corpus / "train.en").exists()):
        write_corpus(corpus, args.pairs, args.formats, seed=0)
        print(f"{args.pairs:,} pairs written in {time.perf_counter() - started:.0f} s to {corpus}")
    env = dict(os.environ)
    results = {}
    for fmt in args.formats:
        train_split = corpus / ("train.parquet" if fmt == "parquet" else "train")
        sets = [
            "data.source=files",
            f"data.train_split={train_split}",
            f"data.valid_split={corpus / 'dev'}",
            f"data.test_split={corpus / 'test'}",
        ]
        env["TRANSLATOR_CACHE_DIR"] = str(work / f"cache-{fmt}")
        if not args.reuse:
            shutil.rmtree(env["TRANSLATOR_CACHE_DIR"], ignore_errors=True)
        prepare = [sys.executable, "-m", "translator", "prepare"]
        prepare += [x for s in sets for x in ("--set", s)]
        cold, cold_peak, _ = run_child(prepare, env)
        warm, warm_peak, _ = run_child(prepare, env)
        (meta_path,) = Path(env["TRANSLATOR_CACHE_DIR"]).glob("*/meta.json")
        meta = json.loads(meta_path.read_text())
        stages = meta["seconds"]
        print(
            f"\n{fmt}: prepare cold {cold:.1f} s ({args.pairs / cold:,.0f} pairs/s), "
            f"peak {gb(cold_peak)}; warm {warm:.1f} s, peak {gb(warm_peak)}; "
            f"cache {folder_size(meta_path.parent) / 1e9:.2f} GB"
        )
        print(
            "  stages: "
            + ", ".join(
                f"{stage} {s:.1f} s ({args.pairs / s:,.0f} pairs/s)" for stage, s in stages.items()
            )
        )
        results[fmt] = {
            "cold_s": cold,
            "cold_peak_gb": cold_peak[0] / 1e9,
            "cold_peak_anon_gb": cold_peak[1] / 1e9,
            "warm_s": warm,
            "cache_gb": folder_size(meta_path.parent) / 1e9,
            "stages": stages,
        }
        if fmt == args.formats[0]:
            layouts = compare_layouts(meta_path.parent)
            results["layouts"] = layouts
            print(
                f"  ids layout, open / 2000 random batches: .npy "
                f"{layouts['npy_open_s'] * 1e3:.1f} ms / {layouts['npy_gather_s']:.2f} s, Arrow "
                f"{layouts['arrow_open_s'] * 1e3:.1f} ms / {layouts['arrow_gather_s']:.2f} s"
            )
        if args.steps and fmt == args.formats[0]:
            ours = train(sets, work / f"run-{fmt}", args.steps, env)
            env.pop("TRANSLATOR_CACHE_DIR")
            base = train([], work / "run-multi30k", args.steps, env)
            results["train"], results["train_multi30k"] = ours, base
            for name, r in (("synthetic", ours), ("multi30k", base)):
                print(
                    f"  train {name}: first step after {r['first_step_s']:.1f} s, "
                    f"{r['tokens_per_s']:,.0f} target tokens/s, "
                    f"peak {r['peak_gb']:.2f} GB ({r['peak_anon_gb']:.2f} GB anonymous)"
                )
            ratio = ours["tokens_per_s"] / base["tokens_per_s"]
            print(f"  tokens/s synthetic / multi30k: {ratio:.2f}")
    print(json.dumps(results))
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
