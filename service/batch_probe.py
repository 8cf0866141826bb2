"""Pick a model's batch-size cap at startup by timing it on this machine.

Batching pays where one run of many prompts costs less per prompt than many runs of one (a
GPU, a big many-core CPU). On a small CPU it does not: measured on 2 cores, a single-threaded
session runs 8 equal-length prompts about 30% slower per prompt in one batch than one by one
(the batch's activations leave the core's cache). So the cap is measured, not assumed: the
probe times equal-length synthetic prompts at rising batch sizes and keeps the largest size
that is clearly cheaper per prompt than every smaller one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

PROBE_TEXT = "route this request to the model that answers it best at the lowest cost " * 4
MIN_GAIN = 0.9  # a larger batch must cost at most 90% per prompt of the best smaller one


def probe_batch_cap(
    run: Callable[[list[str]], Any],
    cap: int,
    sizes: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    prompts_per_size: int = 16,
    repeats: int = 3,
) -> tuple[int, dict[int, float]]:
    """(chosen cap, seconds per prompt by batch size): each size runs `prompts_per_size`
    prompts (at least one batch), best of `repeats`."""
    per_prompt: dict[int, float] = {}
    misses = 0
    for size in [s for s in sizes if s <= cap] or [1]:
        if misses >= 2:  # two sizes in a row no cheaper per prompt: larger ones will not be either
            break
        n = max(prompts_per_size, size)
        batch = [PROBE_TEXT] * size
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
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
