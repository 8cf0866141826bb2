"""The startup probe that picks a model's batch-size cap from timings on this machine."""

from __future__ import annotations

import time

from service.batch_probe import probe_batch_cap, probe_prompts


def sleeper(fixed_ms: float, per_prompt_ms: float, growth: float = 0.0):
    """A fake model: a fixed cost per run plus a per-prompt cost that can grow with batch size."""
    calls: list[int] = []

    def run(batch: list[str]) -> None:
        calls.append(len(batch))
        n = len(batch)
        time.sleep((fixed_ms + per_prompt_ms * n * (1 + growth * (n - 1))) / 1000)

    return run, calls


def test_a_gpu_like_model_gets_large_batches() -> None:
    run, _ = sleeper(fixed_ms=4.0, per_prompt_ms=0.02)  # a run costs about the same at any size
    # best of 3 rounds: one scheduling stall in a single timing must not decide the cap
    chosen, per_prompt = probe_batch_cap(run, cap=64, prompts_per_size=8, repeats=3)
    assert chosen == 64
    assert per_prompt[64] < per_prompt[1] / 10


def test_a_small_cpu_like_model_stays_unbatched() -> None:
    run, calls = sleeper(fixed_ms=0.05, per_prompt_ms=1.0, growth=0.5)  # bigger batches cost more per prompt
    chosen, per_prompt = probe_batch_cap(run, cap=64, prompts_per_size=8, repeats=3)
    assert chosen == 1
    # it stops after two sizes that are no cheaper instead of timing up to 64: after 2 and 4,
    # or after 4 and 8 where a stall on a loaded machine made size 1's first timing look slow
    assert max(calls) <= 8 and set(per_prompt) in ({1, 2, 4}, {1, 2, 4, 8})


def test_the_cap_is_never_exceeded() -> None:
    run, calls = sleeper(fixed_ms=2.0, per_prompt_ms=0.01)
    chosen, _ = probe_batch_cap(run, cap=6, prompts_per_size=4, repeats=3)
    assert chosen == 4 and max(calls) <= 6


def test_probe_batches_spread_their_lengths_over_the_padding_ratio() -> None:
    batch = probe_prompts(8, padding_ratio=1.3)
    words = [len(p.split()) for p in batch]
    assert words == sorted(words) and len(set(words)) > 4
    assert 1.25 <= words[-1] / words[0] <= 1.31
    assert len(probe_prompts(1, 1.3)) == 1


def test_a_model_that_pays_for_padding_stays_unbatched() -> None:
    # batches are 15% cheaper per token, but a batch pays for its longest prompt: with the
    # lengths spread over the padding ratio that gain is gone (with equal lengths it would not be)
    def run(batch: list[str]) -> None:
        longest = max(len(p.split()) for p in batch)
        time.sleep(0.1 * longest * len(batch) * (0.85 if len(batch) > 1 else 1.0) / 1000)

    chosen, _ = probe_batch_cap(run, cap=64, prompts_per_size=8, repeats=2, padding_ratio=1.3)
    assert chosen == 1


def test_a_machine_that_speeds_up_during_the_probe_does_not_make_batches_look_cheaper() -> None:
    # the first 48 prompts run at 2 ms, the rest at 1.2 ms; batches cost 30% more per prompt
    # for every extra prompt. Timing each size's repeats back to back saw size 1 only at the
    # slow speed and picked batches of 2; rounds over all sizes see every size at both speeds.
    seen = 0

    def run(batch: list[str]) -> None:
        nonlocal seen
        n = len(batch)
        per_prompt_ms = 2.0 if seen < 48 else 1.2
        seen += n
        time.sleep(per_prompt_ms * n * (1 + 0.3 * (n - 1)) / 1000)

    chosen, per_prompt = probe_batch_cap(run, cap=64, prompts_per_size=16, repeats=3)
    assert chosen == 1, per_prompt
    assert per_prompt[1] < 1.6e-3  # size 1 was timed again at the faster speed
