"""The server's batcher: a free decoding thread takes what is queued, at once, up to a cap."""

import asyncio
import time

from translator.serving.queue import Batcher

A, B = (1, 0.6, 1), (5, 0.6, 1)  # two sets of decoding options (beam, alpha, nbest)


def run_batcher(jobs, *, wait_s: float, max_tokens: int = 2048, later=()):
    """Queue `jobs` ((sentences, options)) before the batcher starts, `later` ones (delay,
    sentences, options) after; return the batches decoded (sentences, options), the answers,
    and the seconds it all took."""
    batches = []

    def decode(sentences, *options):
        batches.append((list(sentences), options))
        time.sleep(0.02)
        return [s.upper() for s in sentences]

    async def main():
        batcher = Batcher(decode, max_tokens=max_tokens, wait_s=wait_s, workers=1)
        started = time.perf_counter()
        tasks = [asyncio.ensure_future(batcher.submit(s, o)) for s, o in jobs]
        await asyncio.sleep(0)  # queued before the batcher starts
        batcher.start()
        for delay, sentences, options in later:
            await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(batcher.submit(sentences, options)))
        answers = await asyncio.gather(*tasks)
        seconds = time.perf_counter() - started
        await batcher.stop()
        return answers, seconds

    answers, seconds = asyncio.run(main())
    return batches, answers, seconds


def test_a_free_worker_takes_every_queued_request_at_once_without_waiting():
    jobs = [([f"sentence {i}"], A) for i in range(7)]
    batches, answers, seconds = run_batcher(jobs, wait_s=10)
    assert [len(sentences) for sentences, _ in batches] == [7]
    assert seconds < 5  # no timer while requests are queued (the old batcher waited 10 s)
    assert answers == [[f"SENTENCE {i}"] for i in range(7)]  # each answer to its request


def test_a_lone_request_waits_for_company_at_most_the_batch_wait():
    batches, _, _ = run_batcher([(["alone"], A)], wait_s=0.5, later=[(0.1, ["company"], A)])
    assert batches == [(["alone", "company"], A)]
    batches, _, seconds = run_batcher([(["alone"], A)], wait_s=0.3)
    assert batches == [(["alone"], A)] and 0.3 <= seconds < 3


def test_batches_are_capped_by_source_words_and_hold_one_set_of_options():
    eight_words = "one two three four five six seven eight"  # 9 tokens with <eos>
    jobs = [([eight_words], A)] * 5
    batches, _, _ = run_batcher(jobs, wait_s=0, max_tokens=20)
    assert [len(sentences) for sentences, _ in batches] == [2, 2, 1]
    batches, answers, _ = run_batcher([(["a"], A), (["b"], B), (["c"], A)], wait_s=0)
    assert [options for _, options in batches] == [A, B, A]
    assert answers == [["A"], ["B"], ["C"]]
