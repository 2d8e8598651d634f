"""The server under load on loopback, against offline decoding on the same cores.

    python scripts/bench_serve.py --run runs/X                         # torch, the run's beam
    python scripts/bench_serve.py --run runs/X --engine ctranslate2 --beam 5 --requests 1000

Fair by construction: the server runs pinned to its own cores (`--server-cores`, default all
but the last) and the load generator (asyncio, in this process) to the others, so the
client never takes the server's CPU. The reference is the server's engine decoding offline on
the server's cores with as many threads, at batch sizes 1/8/16/32/128: a server whose clients
send one sentence each can at best form batches of about its concurrency. For each concurrency
it sends one-sentence requests from the split (a minimal asyncio HTTP/1.1 client, one
kept-alive connection per concurrent client), then reports requests/s, p50/p99 latency, the
sentences per batch the server formed (from /health), and the share of offline throughput at
that batch size and at 128.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    run: Path, engine: str, port: int, cores: set[int], wait_ms: float | None
) -> subprocess.Popen:
    command = [sys.executable, "-m", "translator", "serve", "--run", str(run)]
    command += ["--engine", engine, "--port", str(port), "--threads", str(len(cores))]
    command += ["--batch-wait-ms", str(wait_ms)] if wait_ms is not None else []
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: os.sched_setaffinity(0, cores),  # before the engine loads
    )
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


async def post_json(reader, writer, path: str, body: dict) -> dict:
    """One POST on a kept-alive HTTP/1.1 connection: a few lines of asyncio instead of an HTTP
    library, so that one client core can keep a server busy (httpx took ~9 ms of CPU a request
    here and saturated its core before the server did)."""
    data = json.dumps(body).encode()
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    answer = json.loads(await reader.readexactly(length))
    if status != 200:
        raise SystemExit(f"the server answered {status}: {answer}")
    return answer


async def load(port: int, sentences: list[str], concurrency: int, beam: int) -> dict:
    """Send every sentence once, `concurrency` requests in flight (one kept-alive connection
    each); latencies in seconds."""
    latencies: list[float] = []
    queue = list(reversed(sentences))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                text = queue.pop()
                started = time.perf_counter()
                await post_json(reader, writer, "/v1/translate", {"text": text, "beam_size": beam})
                latencies.append(time.perf_counter() - started)
        finally:
            writer.close()

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


BATCH_SIZES = (1, 8, 16, 32, 128)


def offline_rates(run: Path, engine: str, beam: int, sentences: list[str], cores: set[int]):
    """Sentences/s of the engine decoding `sentences` at each batch size, on `cores`."""
    import torch

    from translator.decoding.translator import Translator

    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        translator = Translator.load(run, engine=engine, threads=len(cores))
        if engine == "torch":
            torch.set_num_threads(len(cores))
        translator.translate(sentences[:64], beam_size=beam)  # warm-up
        rates = {}
        for size in BATCH_SIZES:
            started = time.perf_counter()
            translator.translate(sentences, beam_size=beam, batch_size=size)
            rates[size] = len(sentences) / (time.perf_counter() - started)
        return rates
    finally:
        os.sched_setaffinity(0, mine)


def at_batch_size(rates: dict[int, float], size: float) -> float:
    """Offline throughput at a batch of `size` sentences, interpolated between those measured."""
    sizes = sorted(rates)
    if size <= sizes[0]:
        return rates[sizes[0]]
    for low, high in zip(sizes, sizes[1:]):
        if size <= high:
            share = (size - low) / (high - low)
            return rates[low] + share * (rates[high] - rates[low])
    return rates[sizes[-1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="run dir (default: latest)")
    parser.add_argument("--engine", default="torch", choices=["torch", "ctranslate2"])
    parser.add_argument("--beam", type=int, default=None, help="default: the run's beam")
    parser.add_argument("--split", default="test2016")
    parser.add_argument("--requests", type=int, default=1000, help="per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--batch-wait-ms", type=float, default=None, help="the server's option")
    parser.add_argument(
        "--server-cores",
        type=int,
        nargs="+",
        default=None,
        help="cores the server (and the offline reference) runs on [default: all but the last]",
    )
    args = parser.parse_args()

    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        raise SystemExit("needs two cores at least: one for the server, one for the client")
    server_cores = set(args.server_cores or available[:-1])
    client_cores = set(available) - server_cores
    if not client_cores or not server_cores <= set(available):
        raise SystemExit(f"--server-cores must leave a core of {available} to the client")

    from translator.data.sources import read_texts
    from translator.run_dir import latest_run, read_config

    run = args.run or latest_run()
    cfg = read_config(run)
    beam = args.beam or cfg.decode.beam_size
    sources, _ = read_texts(cfg, args.split)
    sentences = sources[: args.requests]
    rates = offline_rates(run, args.engine, beam, sentences, server_cores)

    os.sched_setaffinity(0, client_cores)
    port = free_port()
    server = start_server(run, args.engine, port, server_cores, args.batch_wait_ms)
    rows = []
    try:
        asyncio.run(load(port, sentences[:32], 4, beam))  # warm-up
        for concurrency in args.concurrency:
            before = httpx.get(f"http://127.0.0.1:{port}/health").json()
            result = asyncio.run(load(port, sentences, concurrency, beam))
            after = httpx.get(f"http://127.0.0.1:{port}/health").json()
            batches = after["batches"] - before["batches"]
            result["batch"] = (after["sentences"] - before["sentences"]) / max(batches, 1)
            rows.append((concurrency, result))
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(
        f"{args.engine}, beam {beam}, {len(sentences)} one-sentence requests per level; server "
        f"on cores {sorted(server_cores)}, client on {sorted(client_cores)}"
    )
    print("offline, sentences/s at batch size: " + ", ".join(
        f"{size}: {rate:.1f}" for size, rate in rates.items()
    ))  # fmt: skip
    header = f"{'concurrency':>11}{'requests/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'batch':>8}"
    print(header + f"{'of offline at batch':>21}{'of offline at 128':>19}{'client cores':>14}")
    for concurrency, r in rows:
        print(
            f"{concurrency:>11}{r['requests_s']:>12.1f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
            f"{r['batch']:>8.1f}{r['requests_s'] / at_batch_size(rates, r['batch']):>21.0%}"
            f"{r['requests_s'] / rates[128]:>19.0%}{r['client_cores']:>14.2f}"
        )


if __name__ == "__main__":
    main()
