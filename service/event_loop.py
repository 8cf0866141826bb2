"""Which asyncio event loop a server process runs on: uvloop where it is installed, else asyncio's.

gRPC's asyncio stack runs on any asyncio loop. On 2 cores uvloop cut the server's CPU per
single-prompt Route RPC (decision cache warm, so no model run) from 254-279 to 240-247 us in
4 of 4 alternating pairs, and served 2-14% more requests in each pair
(benchmarks/results/profile_service.md).
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, TypeVar

EVENT_LOOPS = ("auto", "uvloop", "asyncio")

T = TypeVar("T")


class EventLoopUnavailable(RuntimeError):
    """The configured event loop cannot run in this environment."""


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def resolve_event_loop(kind: str) -> str:
    """The loop `kind` ("auto", "uvloop", "asyncio") means here: "auto" is uvloop where it is
    installed (not on Windows), else asyncio. An explicit "uvloop" that is not installed raises."""
    if kind not in EVENT_LOOPS:
        raise EventLoopUnavailable(f"event_loop must be one of {', '.join(EVENT_LOOPS)}, got {kind!r}")
    if kind == "asyncio":
        return "asyncio"
    if uvloop_installed():
        return "uvloop"
    if kind == "uvloop":
        raise EventLoopUnavailable(
            "event_loop is uvloop but uvloop is not installed (pip install uvloop; it has no Windows build)"
        )
    return "asyncio"


def run_on_event_loop(main: Coroutine[Any, Any, T], kind: str) -> T:
    """`asyncio.run(main)` on the loop `resolve_event_loop(kind)` names."""
    try:
        resolved = resolve_event_loop(kind)
    except EventLoopUnavailable:
        main.close()  # never started: no "coroutine was never awaited" warning on top of the error
        raise
    if resolved == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def running_loop_name() -> str:
    """ "uvloop" or "asyncio": the loop this coroutine runs on (for the startup log line)."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
