"""Wall time of `translator translate` for one sentence, as a user meets it: a fresh process,
imports, loading the run, decoding, printing. Optionally with the other cores kept busy.

    python scripts/bench_startup.py --run runs/X                  # torch and, if exported, ct2
    python scripts/bench_startup.py --run runs/X --busy 1         # one core spinning meanwhile
    python scripts/bench_startup.py --run runs/X --code /tmp/old  # an older checkout's code

Prints the median and the range of --repeat runs per engine, and the import times of the
heaviest modules (python -X importtime) for the torch engine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SENTENCE = "A man in a blue shirt is riding a bike down the street."


def spin() -> None:
    while True:
        pass


def timed(command: list[str], env: dict, cwd: Path | None) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--busy", type=int, default=0, help="cores to keep busy meanwhile")
    parser.add_argument("--code", type=Path, default=None, help="PYTHONPATH of another checkout")
    parser.add_argument("--engines", nargs="+", default=["torch", "ctranslate2"])
    parser.add_argument("extra", nargs="*", help="more translate options, after --")
    args = parser.parse_args()

    env, cwd = dict(os.environ), None
    args.run = args.run.resolve()
    if args.code:  # run from there too: `python -m` puts the current folder first on the path
        env["PYTHONPATH"] = cwd = str(args.code.resolve())
    burners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy)]
    for burner in burners:
        burner.start()
    try:
        for engine in args.engines:
            if engine == "ctranslate2" and not (args.run / "ct2" / "model.bin").exists():
                print(f"{engine}: no export in {args.run}/ct2, skipped")
                continue
            command = [sys.executable, "-m", "translator", "translate", "--run", str(args.run)]
            command += ([] if engine == "torch" else ["--engine", engine]) + args.extra
            timed(command + [SENTENCE], env, cwd)  # warm the file cache
            times = sorted(timed(command + [SENTENCE], env, cwd) for _ in range(args.repeat))
            print(
                f"{engine:<12} median {statistics.median(times):.2f} s "
                f"(min {times[0]:.2f}, max {times[-1]:.2f}) over {args.repeat} runs, "
                f"{args.busy} busy core(s)"
            )
        importtime = subprocess.run(
            [
                sys.executable,
                "-X",
                "importtime",
                "-c",
                "import translator.decoding.translator, torch, spacy",
            ],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
        ).stderr.splitlines()
        rows = [line.split("|") for line in importtime if line.startswith("import time:")]
        top = [(int(r[1]), r[2].strip()) for r in rows[1:] if r[2].strip() in {"torch", "spacy"}]
        print("imports: " + ", ".join(f"{name} {us / 1e6:.2f} s" for us, name in top))
    finally:
        for burner in burners:
            burner.terminate()


if __name__ == "__main__":
    main()
