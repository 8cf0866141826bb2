"""The servers' event loop choice (service/event_loop.py, runtime.event_loop, the gateway's event_loop)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from service import event_loop
from service.config import Config, ConfigError, RuntimeConfig
from service.event_loop import EventLoopUnavailable, resolve_event_loop, run_on_event_loop, running_loop_name
from service.gateway.config import load_gateway_config
from service.grpc.gen.lmroute.v1 import router_pb2 as pb
from service.grpc.gen.lmroute.v1 import router_pb2_grpc
from service.grpc.server import RouteServer
from tests.service_harness import service_config

needs_uvloop = pytest.mark.skipif(not event_loop.uvloop_installed(), reason="uvloop has no build here")


@needs_uvloop
def test_auto_is_uvloop_where_installed_and_each_choice_runs_on_its_loop() -> None:
    assert resolve_event_loop("auto") == "uvloop"

    async def which() -> str:
        return running_loop_name()

    assert run_on_event_loop(which(), "auto") == "uvloop"
    assert run_on_event_loop(which(), "uvloop") == "uvloop"
    assert run_on_event_loop(which(), "asyncio") == "asyncio"


def test_without_uvloop_auto_falls_back_and_an_explicit_uvloop_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(event_loop, "uvloop_installed", lambda: False)
    assert resolve_event_loop("auto") == "asyncio"
    with pytest.raises(ConfigError, match="runtime.event_loop is uvloop but uvloop is not installed"):
        Config(runtime=RuntimeConfig(event_loop="uvloop")).validate()

    async def never_started() -> None:  # pragma: no cover - must not run
        raise AssertionError

    with pytest.raises(EventLoopUnavailable, match="uvloop is not installed"):
        run_on_event_loop(never_started(), "uvloop")


def test_the_gateway_config_checks_its_event_loop(tmp_path: Path) -> None:
    body = (
        "tiers:\n"
        "  strong: {model: s, endpoints: [{base_url: 'http://127.0.0.1:1/v1'}]}\n"
        "  weak: {model: w, endpoints: [{base_url: 'http://127.0.0.1:2/v1'}]}\n"
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(body + "event_loop: asyncio\n")
    assert load_gateway_config(path).event_loop == "asyncio"
    path.write_text(body + "event_loop: gevent\n")
    with pytest.raises(ConfigError, match="event_loop must be one of auto, uvloop, asyncio"):
        load_gateway_config(path)


@needs_uvloop
def test_a_route_server_on_uvloop_serves_concurrent_rpcs(mf_router) -> None:
    """The gRPC asyncio server and its batcher on uvloop: concurrent Route calls score as the
    router does in-process, and a bad request among them fails alone."""
    prompts = [f"Explain step {i} of proving that sqrt(2) is irrational." for i in range(16)]

    async def main() -> tuple[str, list]:
        server = RouteServer(service_config())
        port = await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = router_pb2_grpc.RouterStub(channel)
                calls = [stub.Route(pb.RouteRequest(prompt=p, router="mf")) for p in prompts]
                calls.append(stub.Route(pb.RouteRequest(prompt="x", router="nope")))
                replies = await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await server.stop()
        return running_loop_name(), replies

    loop, replies = run_on_event_loop(main(), "uvloop")
    assert loop == "uvloop"
    expected = mf_router.score(prompts)
    assert [r.router for r in replies[:16]] == ["mf"] * 16
    assert [r.strong_win_rate for r in replies[:16]] == pytest.approx(expected.tolist(), abs=1e-5)
    assert isinstance(replies[16], grpc.aio.AioRpcError)
    assert replies[16].code() == grpc.StatusCode.INVALID_ARGUMENT
