"""The server under load on loopback: requests/s and latency at several concurrencies, against
offline decoding of the same sentences with the same engine and beam.

    python scripts/bench_serve.py --run runs/X                         # torch, the run's beam
    python scripts/bench_serve.py --run runs/X --engine ctranslate2 --beam 5 --requests 1000

Starts `translator serve` in a subprocess on 127.0.0.1 (a free port), sends a bounded number of
one-sentence requests from test2016 at each concurrency (asyncio + httpx, in this process), and
stops the server. The load generator shares the machine's cores with the server: on two cores
that costs the server some throughput, so the ratio to offline decoding is a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from translator.data.sources import read_texts
from translator.decoding.translator import Translator
from translator.run_dir import latest_run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, engine: str, port: int, threads: int | None) -> subprocess.Popen:
    command = [sys.executable, "-m", "translator", "serve", "--run", str(run)]
    command += ["--engine", engine, "--port", str(port)]
    command += ["--threads", str(threads)] if threads else []
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
        if server.poll() is not None:
            raise SystemExit(f"the server exited: {server.stderr.read().decode()[-2000:]}")
    server.terminate()
    raise SystemExit("the server did not answer /health within 120 s")


async def load(port: int, sentences: list[str], concurrency: int, beam: int) -> dict:
    """Send every sentence once, `concurrency` requests in flight; latencies in seconds."""
    latencies: list[float] = []
    queue = list(reversed(sentences))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=120
    ) as client:

        async def worker() -> None:
            while queue:
                text = queue.pop()
                started = time.perf_counter()
                answer = await client.post("/v1/translate", json={"text": text, "beam_size": beam})
                answer.raise_for_status()
                latencies.append(time.perf_counter() - started)

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
    latencies.sort()
    return {
        "client_cores": cpu / seconds,  # what the load generator itself took from the machine
        "requests_s": len(sentences) / seconds,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="run dir (default: latest)")
    parser.add_argument("--engine", default="torch", choices=["torch", "ctranslate2"])
    parser.add_argument("--beam", type=int, default=None, help="default: the run's beam")
    parser.add_argument("--split", default="test2016")
    parser.add_argument("--requests", type=int, default=1000, help="per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    run = args.run or latest_run()
    translator = Translator.load(run, engine=args.engine, threads=args.threads)
    beam = args.beam or translator.options.beam_size
    sources, _ = read_texts(translator.cfg, args.split)
    sentences = sources[: args.requests]
    translator.translate(sentences[:64], beam_size=beam)  # warm-up
    started = time.perf_counter()
    translator.translate(sentences, beam_size=beam)
    offline = len(sentences) / (time.perf_counter() - started)
    del translator  # the server process loads its own

    port = free_port()
    server = start_server(run, args.engine, port, args.threads)
    try:
        asyncio.run(load(port, sentences[:32], 4, beam))  # warm-up
        rows = [(c, asyncio.run(load(port, sentences, c, beam))) for c in args.concurrency]
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(
        f"{args.engine}, beam {beam}, {len(sentences)} one-sentence requests per level, "
        f"{os.cpu_count()} cores; offline: {offline:.1f} sentences/s"
    )
    header = f"{'concurrency':>11}{'requests/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'of offline':>12}"
    print(header + f"{'client cores':>14}")
    for concurrency, r in rows:
        print(
            f"{concurrency:>11}{r['requests_s']:>12.1f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
            f"{r['requests_s'] / offline:>12.0%}{r['client_cores']:>14.2f}"
        )


if __name__ == "__main__":
    main()
