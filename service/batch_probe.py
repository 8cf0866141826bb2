"""Pick a model's batch-size cap at startup by timing it on this machine.

Batching pays where one run of many prompts costs less per prompt than many runs of one (a
GPU, a big many-core CPU). On a small CPU it does not: measured on 2 cores, a single-threaded
session runs 8 equal-length prompts about 30% slower per prompt in one batch than one by one
(the batch's activations leave the core's cache). So the cap is measured, not assumed: the
probe times synthetic prompts at rising batch sizes and keeps the largest size that is
clearly cheaper per prompt than every smaller one. The prompts' lengths spread as widely as
the batcher lets a batch spread (max_padding_ratio), so batches pay their padding: with equal
lengths, batches of 4-8 looked 10% cheaper on 2 cores and the cap flipped between 1 and 8 from
one start to the next, while in service batching lost (0.87x req/s, twice the p99). Sizes are
timed in interleaved rounds, so a drift of the machine's speed weighs on every size alike
(timed one after another, size 1 went first and paid for the warm-up), and a larger batch must
be clearly cheaper (MIN_GAIN), not cheaper within the timing noise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

PROBE_WORDS = "route this request to the model that answers it best at the lowest cost".split()
PROBE_BASE_WORDS = 48  # about 60 tokens: the bench mix's median prompt
# a larger batch must cost at most 80% per prompt of the best smaller one: at server startup
# on 2 cores mf's batches of 8 timed 0.86-0.91 of a single prompt's cost (6 starts), yet in
# service (every core busy) they served the same req/s at 1.5x the p99: a gain that small is none
MIN_GAIN = 0.8


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
    prompts (at least one batch), best of `repeats` rounds. Every size scores the same prompts,
    whose lengths spread over `padding_ratio` (the batcher's max_padding_ratio): one at a time
    they run unpadded, in a batch they pad to its longest, as they would in service.

    The first round times rising sizes until two in a row are no cheaper; the later rounds time
    the sizes reached in turn, so a slow drift of the machine's speed (a neighbour's load, a
    clock change) weighs on every size alike instead of on whichever was timed last."""
    per_prompt: dict[int, float] = {}
    misses = 0
    for size in [s for s in sizes if s <= cap] or [1]:
        if misses >= 2:  # two sizes in a row no cheaper per prompt: larger ones will not be either
            break
        cost = _seconds_per_prompt(run, size, prompts_per_size, padding_ratio)
        misses = misses + 1 if per_prompt and cost >= min(per_prompt.values()) else 0
        per_prompt[size] = cost
    for _ in range(repeats - 1):
        for size in per_prompt:
            cost = _seconds_per_prompt(run, size, prompts_per_size, padding_ratio)
            per_prompt[size] = min(per_prompt[size], cost)
    chosen, best_cost = 1, per_prompt[min(per_prompt)]
    for size, cost in sorted(per_prompt.items()):
        if cost <= MIN_GAIN * best_cost:
            chosen, best_cost = size, cost
    return chosen, per_prompt


def _seconds_per_prompt(
    run: Callable[[list[str]], Any], size: int, prompts: int, padding_ratio: float
) -> float:
    """One timing: `prompts` prompts (at least one batch) in batches of `size`."""
    n = max(prompts, size)
    singles = probe_prompts(n, padding_ratio) if size == 1 else []
    batch = probe_prompts(size, padding_ratio)
    started = time.perf_counter()
    if size == 1:
        for prompt in singles:
            run([prompt])
    else:
        for _ in range(n // size):
            run(batch)
    return (time.perf_counter() - started) / (n // size * size)
