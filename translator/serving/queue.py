"""Dynamic batching for the server: sentences of concurrent requests decoded in shared batches.

    batcher = Batcher(decode, max_batch=64, wait_s=0.01, workers=1)
    batcher.start()                                     # inside the running event loop
    results = await batcher.submit(sentences, (beam_size, alpha, nbest))
    await batcher.stop()

A batch closes at `max_batch` sentences or `wait_s` after its first job, and holds only jobs
whose decoding options agree. `decode` runs on worker threads, off the event loop; a request
that timed out meanwhile is dropped from its batch, and a decoding error fails only that
batch's requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

log = logging.getLogger("translator")


@dataclass
class _Job:
    sentences: list[str]
    options: tuple  # (beam_size, alpha, nbest): jobs batch together only when these agree
    future: asyncio.Future


class Batcher:
    """Queue sentences from concurrent requests and decode them in shared batches, `workers`
    batches at a time (CTranslate2 decodes batches in parallel; torch's one at a time)."""

    def __init__(self, decode, max_batch: int, wait_s: float, workers: int = 1) -> None:
        self.decode = decode  # (sentences, beam_size, alpha, nbest) -> results, in a thread
        self.max_batch, self.wait_s = max_batch, wait_s
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.held: deque[_Job] = deque()  # jobs whose options did not match the last batch
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
        self.free = asyncio.Semaphore(workers)
        self.task: asyncio.Task | None = None

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

    async def _gather(self, loop) -> list[_Job]:
        """The next batch: the oldest job, and more with the same options until the batch is
        full or `wait_s` has passed."""
        first = self.held.popleft() if self.held else await self.queue.get()
        jobs, size = [first], len(first.sentences)
        deadline = loop.time() + self.wait_s
        while size < self.max_batch:
            try:
                job = self.held.popleft() if self.held else None
                job = job or await asyncio.wait_for(
                    self.queue.get(), max(0.0, deadline - loop.time())
                )
            except asyncio.TimeoutError:
                break
            if job.options != first.options:
                self.held.append(job)  # first in the next batch
                break
            jobs.append(job)
            size += len(job.sentences)
        return jobs

    async def _decode(self, loop, jobs: list[_Job]) -> None:
        try:
            jobs = [job for job in jobs if not job.future.done()]  # timed out meanwhile
            if not jobs:
                return
            sentences = [s for job in jobs for s in job.sentences]
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
