"""Dynamic batching for the server: sentences of concurrent requests decoded in shared batches.

    batcher = Batcher(decode, max_tokens=2048, wait_s=0.005, workers=2)
    batcher.start()                                     # inside the running event loop
    results = await batcher.submit(sentences, (beam_size, alpha, nbest))
    await batcher.stop()

A decoding worker that comes free takes every job queued at that moment (no timer: as TF-Serving
and Triton's default batcher do), up to `max_tokens` source words, and only jobs whose decoding
options agree; a job alone in the queue waits at most `wait_s` for company. The decoder sorts a
batch's sentences by length itself. `decode` runs on worker threads, off the event loop, up to
`workers` batches at a time; a request that timed out meanwhile is dropped from its batch, and a
decoding error fails only that batch's requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

log = logging.getLogger("translator")


@dataclass
class _Job:
    sentences: list[str]
    options: tuple  # (beam_size, alpha, nbest): jobs batch together only when these agree
    future: asyncio.Future
    tokens: int = field(init=False)  # source words, <eos> included: what a batch is capped by

    def __post_init__(self) -> None:
        self.tokens = sum(len(sentence.split()) + 1 for sentence in self.sentences)


class Batcher:
    """Queue sentences from concurrent requests and decode them in shared batches, `workers`
    batches at a time (one thread each)."""

    def __init__(self, decode, max_tokens: int, wait_s: float, workers: int = 1) -> None:
        self.decode = decode  # (sentences, beam_size, alpha, nbest) -> results, in a thread
        self.max_tokens, self.wait_s = max_tokens, wait_s
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.held: deque[_Job] = deque()  # jobs whose options did not match the last batch
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
        self.free = asyncio.Semaphore(workers)
        self.task: asyncio.Task | None = None
        self.batches = self.sentences = 0  # decoded so far: what batching achieves

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, sentences: list[str], options: tuple) -> list:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(sentences, options, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.free.acquire()  # a decoding thread is free: gather its batch
            jobs = await self._gather(loop)
            loop.create_task(self._decode(loop, jobs))

    def _queued(self) -> _Job | None:
        """The oldest job waiting, without waiting."""
        if self.held:
            return self.held.popleft()
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def _gather(self, loop) -> list[_Job]:
        """The next batch: the oldest job and every job queued now with the same options, up
        to max_tokens; a job alone waits up to wait_s for a second one."""
        first = self._queued() or await self.queue.get()
        jobs, size = [first], first.tokens
        deadline = loop.time() + self.wait_s
        while size < self.max_tokens:
            job = self._queued()
            if job is None:
                if len(jobs) > 1 or loop.time() >= deadline:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
            if job.options != first.options or size + job.tokens > self.max_tokens:
                self.held.appendleft(job)  # first in the next batch
                break
            jobs.append(job)
            size += job.tokens
        return jobs

    async def _decode(self, loop, jobs: list[_Job]) -> None:
        try:
            jobs = [job for job in jobs if not job.future.done()]  # timed out meanwhile
            if not jobs:
                return
            sentences = [s for job in jobs for s in job.sentences]
            self.batches += 1
            self.sentences += len(sentences)
            try:
                results = await loop.run_in_executor(
                    self.executor, self.decode, sentences, *jobs[0].options
                )
            except Exception as err:  # a bug: fail these requests, keep serving
                log.exception("decoding failed")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(err)
                return
            start = 0
            for job in jobs:
                part = results[start : start + len(job.sentences)]
                start += len(job.sentences)
                if not job.future.done():
                    job.future.set_result(part)
        finally:
            self.free.release()
