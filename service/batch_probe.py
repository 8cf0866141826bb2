"""Pick a model's batch-size cap at startup by timing it on this machine.

Batching pays where one run of many prompts costs less per prompt than many runs of one (a
GPU, a big many-core CPU). On a small CPU it does not: measured on 2 cores, a single-threaded
session runs 8 equal-length prompts about 30% slower per prompt in one batch than one by one
(the batch's activations leave the core's cache). So the cap is measured, not assumed: the
probe times synthetic prompts at rising batch sizes and keeps the largest size that is
clearly cheaper per prompt than every smaller one. The prompts' lengths spread as widely as
the batcher lets a batch spread (max_padding_ratio), so batches pay their padding: with equal
lengths, batches of 4-8 looked 10% cheaper on 2 cores and the cap flipped between 1 and 8 from
one start to the next, while in service batching lost (0.87x req/s, twice the p99).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

PROBE_WORDS = "route this request to the model that answers it best at the lowest cost".split()
PROBE_BASE_WORDS = 48  # about 60 tokens: the bench mix's median prompt
MIN_GAIN = 0.9  # a larger batch must cost at most 90% per prompt of the best smaller one


def probe_prompts(size: int, padding_ratio: float) -> list[str]:
    """`size` prompts whose lengths spread evenly from the base length to `padding_ratio`
    times it: the widest batch the batcher forms, so a batch pays the padding it may carry."""
    out = []
    for i in range(size):
        spread = (padding_ratio - 1.0) * (i / (size - 1) if size > 1 else 0.5)
        words = round(PROBE_BASE_WORDS * (1.0 + spread))
        out.append(" ".join(PROBE_WORDS[k % len(PROBE_WORDS)] for k in range(words)))
    return out


def probe_batch_cap(
    run: Callable[[list[str]], Any],
    cap: int,
    sizes: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    prompts_per_size: int = 16,
    repeats: int = 3,
    padding_ratio: float = 1.3,
) -> tuple[int, dict[int, float]]:
    """(chosen cap, seconds per prompt by batch size): each size runs `prompts_per_size`
    prompts (at least one batch), best of `repeats`. Every size scores the same prompts, whose
    lengths spread over `padding_ratio` (the batcher's max_padding_ratio): one at a time they
    run unpadded, in a batch they pad to its longest, as they would in service."""
    per_prompt: dict[int, float] = {}
    misses = 0
    for size in [s for s in sizes if s <= cap] or [1]:
        if misses >= 2:  # two sizes in a row no cheaper per prompt: larger ones will not be either
            break
        n = max(prompts_per_size, size)
        batch = probe_prompts(size, padding_ratio)
        singles = probe_prompts(n, padding_ratio) if size == 1 else []
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            if size == 1:
                for prompt in singles:
                    run([prompt])
            else:
                for _ in range(n // size):
                    run(batch)
            best = min(best, (time.perf_counter() - started) / (n // size * size))
        misses = misses + 1 if per_prompt and best >= min(per_prompt.values()) else 0
        per_prompt[size] = best
    chosen, best_cost = 1, per_prompt[min(per_prompt)]
    for size, cost in sorted(per_prompt.items()):
        if cost <= MIN_GAIN * best_cost:
            chosen, best_cost = size, cost
    return chosen, per_prompt
