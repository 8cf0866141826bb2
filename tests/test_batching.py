"""The continuous batcher, driven with a controllable run function on a real event loop."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from service.batching import Batcher, DeadlineExceededError, QueueFullError, estimate_tokens
from service.config import BatchingConfig
from service.metrics import Metrics


class Model:
    """Records every batch; `gate` holds a run until released; 'BAD' prompts make a run fail."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.gate.wait(10)
        self.batches.append(list(texts))
        if any("BAD" in t for t in texts):
            raise ValueError("cannot score this prompt")
        return np.array([[len(t)] for t in texts], dtype=np.float32)


def make(model: Model, **cfg) -> Batcher:
    batcher = Batcher("m", model, estimate_tokens(128), BatchingConfig(**cfg), Metrics())
    batcher.start()
    return batcher


def run(coro):
    return asyncio.run(coro)


def test_a_lone_request_runs_at_once() -> None:
    async def main():
        model = Model()
        batcher = make(model)
        row, size = await asyncio.wait_for(batcher.submit("hello"), 5)
        await batcher.close(5)
        return model, row, size

    model, row, size = run(main())
    assert model.batches == [["hello"]] and row[0] == 5 and size == 1


def test_arrivals_during_a_run_form_the_next_batch() -> None:
    async def main():
        model = Model()
        model.gate.clear()
        batcher = make(model, max_batch_size=64)
        first = asyncio.create_task(batcher.submit("first"))
        await asyncio.sleep(0.05)  # the first run is now blocked inside the model
        rest = [asyncio.create_task(batcher.submit(f"p{i}")) for i in range(10)]
        await asyncio.sleep(0.05)
        model.gate.set()
        results = await asyncio.gather(first, *rest)
        await batcher.close(5)
        return model, results

    model, results = run(main())
    assert [len(b) for b in model.batches] == [1, 10]
    assert [size for _, size in results] == [1] + [10] * 10
    assert [row[0] for row, _ in results] == [5] + [len(f"p{i}") for i in range(10)]


def test_one_bad_prompt_fails_alone() -> None:
    async def main():
        model = Model()
        model.gate.clear()
        batcher = make(model)
        blocker = asyncio.create_task(batcher.submit("blocker"))
        await asyncio.sleep(0.05)
        tasks = [asyncio.create_task(batcher.submit(t)) for t in ("good one", "BAD one", "good two")]
        await asyncio.sleep(0.05)
        model.gate.set()
        results = await asyncio.gather(blocker, *tasks, return_exceptions=True)
        await batcher.close(5)
        return results

    blocker, good1, bad, good2 = run(main())
    assert isinstance(bad, ValueError)
    assert good1[0][0] == len("good one") and good2[0][0] == len("good two") and blocker[0][0] == 7


def test_full_queue_is_refused_at_once() -> None:
    async def main():
        model = Model()
        model.gate.clear()
        batcher = make(model, max_queue=3, max_batch_size=1, queued_batches=0)
        running = asyncio.create_task(batcher.submit("running"))
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(batcher.submit(f"q{i}")) for i in range(3)]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFullError, match="queue full"):
            await batcher.submit("one too many")
        model.gate.set()
        await asyncio.gather(running, *queued)
        await batcher.close(5)
        return model

    assert len(run(main()).batches) == 4


def test_expired_and_cancelled_requests_are_dropped_before_inference() -> None:
    async def main():
        model = Model()
        model.gate.clear()
        batcher = make(model)
        running = asyncio.create_task(batcher.submit("running"))
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        expired = asyncio.create_task(batcher.submit("expired", deadline=loop.time() + 0.01))
        cancelled = asyncio.create_task(batcher.submit("cancelled"))
        kept = asyncio.create_task(batcher.submit("kept"))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        model.gate.set()
        with pytest.raises(DeadlineExceededError):
            await expired
        await asyncio.gather(running, kept)
        await batcher.close(5)
        return model

    model = run(main())
    assert model.batches == [["running"], ["kept"]]


def test_at_a_batch_cap_of_1_a_deep_queue_runs_in_order_and_drops_the_dead() -> None:
    async def main():
        model = Model()
        model.gate.clear()
        batcher = make(model, max_batch_size=1, queued_batches=0)
        running = asyncio.create_task(batcher.submit("running"))
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        tasks = {}
        for i in range(60):
            deadline = loop.time() + 0.01 if i % 7 == 3 else None
            tasks[i] = asyncio.create_task(batcher.submit(f"p{i}", deadline=deadline))
        await asyncio.sleep(0.05)
        for i in range(0, 60, 5):
            tasks[i].cancel()
        model.gate.set()
        results = await asyncio.gather(running, *tasks.values(), return_exceptions=True)
        await batcher.close(5)
        return model, results[1:]

    model, results = run(main())
    live = [i for i in range(60) if i % 5 and i % 7 != 3]
    assert model.batches == [["running"]] + [[f"p{i}"] for i in live]  # oldest first, one at a time
    for i, result in enumerate(results):
        if i % 5 == 0:
            assert isinstance(result, asyncio.CancelledError)
        elif i % 7 == 3:
            assert isinstance(result, DeadlineExceededError)
        else:
            assert result[0][0] == len(f"p{i}")


def test_a_batch_alone_runs_on_run_alone_and_arrivals_meanwhile_on_the_instances() -> None:
    async def main():
        wide, narrow = Model(), Model()
        wide.gate.clear()
        config = BatchingConfig(max_batch_size=1)
        batcher = Batcher("m", [narrow, narrow], estimate_tokens(128), config, Metrics(), run_alone=wide)
        batcher.start()
        lone = asyncio.create_task(batcher.submit("lone"))
        await asyncio.sleep(0.05)  # it runs alone: nothing else queued or running
        during = [asyncio.create_task(batcher.submit(f"during {i}")) for i in range(3)]
        await asyncio.gather(*during)  # they did not wait for the wide run
        assert not lone.done()
        wide.gate.set()
        await lone
        await asyncio.sleep(0.05)
        after = await batcher.submit("after")  # alone again
        await batcher.close(5)
        return wide.batches, narrow.batches, after

    wide, narrow, after = run(main())
    assert wide == [["lone"], ["after"]] and after[0][0] == len("after")
    assert sorted(narrow) == [["during 0"], ["during 1"], ["during 2"]]


def test_with_one_instance_nothing_runs_alone() -> None:
    async def main():
        wide, narrow = Model(), Model()
        batcher = Batcher("m", narrow, estimate_tokens(128), BatchingConfig(), Metrics(), run_alone=wide)
        batcher.start()
        await batcher.submit("lone")
        await batcher.close(5)
        return wide.batches, narrow.batches

    assert run(main()) == ([], [["lone"]])  # the alone run would take the only thread


def test_token_budget_caps_batches_and_groups_similar_lengths() -> None:
    async def main():
        model = Model()
        model.gate.clear()
        batcher = make(model, max_batch_size=64, max_batch_tokens=4 * 34)  # 4 short prompts' worth
        blocker = asyncio.create_task(batcher.submit("x"))
        await asyncio.sleep(0.05)
        short = ["s" * 120 + str(i) for i in range(6)]  # ~32 tokens each
        long = ["l" * 500 + str(i) for i in range(2)]  # capped at 128 tokens
        tasks = [asyncio.create_task(batcher.submit(t)) for t in (short[0], long[0], *short[1:], long[1])]
        await asyncio.sleep(0.05)
        model.gate.set()
        await asyncio.gather(blocker, *tasks)
        await batcher.close(5)
        return model

    batches = run(main()).batches[1:]
    for batch in batches:  # padded tokens within the budget (a lone prompt always runs)
        assert len(batch) == 1 or max(estimate_tokens(128)(t) for t in batch) * len(batch) <= 4 * 34
    assert batches[0] == ["s" * 120 + str(i) for i in (0, 1, 2, 3)]  # the oldest + closest lengths


def test_max_wait_gathers_company() -> None:
    async def main():
        model = Model()
        batcher = make(model, max_wait_us=100_000)
        tasks = [asyncio.create_task(batcher.submit(f"p{i}")) for i in range(1)]
        await asyncio.sleep(0.02)
        tasks += [asyncio.create_task(batcher.submit(f"q{i}")) for i in range(5)]
        await asyncio.gather(*tasks)
        await batcher.close(5)
        return model

    assert [len(b) for b in run(main()).batches] == [6]


def test_a_malformed_model_output_fails_alone_and_the_worker_keeps_serving() -> None:
    def model(texts: list[str]) -> np.ndarray:
        extra = 1 if any("broken" in t for t in texts) else 0  # one row too many: a broken output
        return np.array([[len(t)] for t in texts] + [[0]] * extra, dtype=np.float32)

    async def main():
        batcher = Batcher("m", model, estimate_tokens(128), BatchingConfig(), Metrics())
        batcher.start()
        with pytest.raises(ValueError, match="returned 2 rows for 1 prompts"):
            await asyncio.wait_for(batcher.submit("broken"), 5)
        row, _ = await asyncio.wait_for(batcher.submit("fine"), 5)
        await batcher.close(5)
        return row

    assert run(main())[0] == len("fine")


def test_batches_run_at_once_on_separate_model_instances() -> None:
    # each instance's run waits at a barrier for the other: serial runs would break it
    barrier = threading.Barrier(2, timeout=5)
    seen: list[tuple[int, list[str]]] = []

    def instance(index: int):
        def run(texts: list[str]) -> np.ndarray:
            barrier.wait()
            seen.append((index, list(texts)))
            return np.array([[len(t) + 100 * index] for t in texts], dtype=np.float32)

        return run

    async def main():
        batcher = Batcher(
            "m", [instance(0), instance(1)], estimate_tokens(128), BatchingConfig(max_batch_size=1), Metrics()
        )
        batcher.start()
        rows = await asyncio.wait_for(asyncio.gather(batcher.submit("ab"), batcher.submit("abcd")), 10)
        await batcher.close(5)
        return batcher, rows

    batcher, rows = run(main())
    assert batcher.instances == 2 and sorted(index for index, _ in seen) == [0, 1]
    # every caller gets its own prompt's row, whichever instance ran it
    by_instance = {texts[0]: index for index, texts in seen}
    assert [row[0] for row, _ in rows] == [2 + 100 * by_instance["ab"], 4 + 100 * by_instance["abcd"]]


def test_a_failing_instance_fails_only_its_own_prompts() -> None:
    def broken(texts: list[str]) -> np.ndarray:
        raise RuntimeError("instance down")

    def healthy(texts: list[str]) -> np.ndarray:
        return np.array([[len(t)] for t in texts], dtype=np.float32)

    async def main():
        batcher = Batcher(
            "m", [broken, healthy], estimate_tokens(128), BatchingConfig(max_batch_size=1), Metrics()
        )
        batcher.start()
        results = await asyncio.wait_for(
            asyncio.gather(*(batcher.submit(f"p{i}") for i in range(8)), return_exceptions=True), 10
        )
        await batcher.close(5)
        return results

    results = run(main())
    failed = [r for r in results if isinstance(r, Exception)]
    served = [r for r in results if not isinstance(r, Exception)]
    assert served and all(row[0] == 2 for row, _ in served)
    assert all("instance down" in str(e) for e in failed)
    assert len(failed) + len(served) == 8


def test_with_a_batch_cap_of_1_the_next_batch_is_formed_while_one_runs() -> None:
    async def main():
        model = Model()
        model.gate.clear()
        batcher = make(model, max_batch_size=1)  # queued_batches unset: 1 at this cap
        assert batcher.queued_batches == 1
        running = asyncio.create_task(batcher.submit("a"))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(batcher.submit(t)) for t in ("b", "c")]
        await asyncio.sleep(0.05)
        # "b" already waits in the model's thread pool; "c" waits for a slot
        assert batcher.depth == 1
        model.gate.set()
        results = await asyncio.gather(running, *rest)
        await batcher.close(5)
        return model, results

    model, results = run(main())
    assert model.batches == [["a"], ["b"], ["c"]]
    assert [float(row[0]) for row, _ in results] == [float(len(t)) for t in ("a", "b", "c")]


def test_larger_caps_form_batches_only_when_an_instance_is_free() -> None:
    def queued(**cfg) -> int:
        return Batcher("m", Model(), estimate_tokens(128), BatchingConfig(**cfg)).queued_batches

    assert queued(max_batch_size=8) == 0
    assert queued(max_batch_size=8, queued_batches=2) == 2
