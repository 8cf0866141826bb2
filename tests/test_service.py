"""The Route service through a real gRPC server on a loopback port and a real gRPC client."""

from __future__ import annotations

import asyncio
import concurrent.futures
import math

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.config import BatchingConfig
from service.grpc.gen.lmroute.v1 import router_pb2 as pb
from service.grpc.gen.lmroute.v1 import router_pb2_grpc
from service.routers import load_router
from tests.conftest import BATCH_INVARIANCE_ATOL, MODELS, SERVICE_PROVIDER
from tests.service_harness import LiveServer, service_config

OK = grpc.StatusCode.OK


@pytest.fixture(scope="module")
def live():
    server = LiveServer(service_config()).start()
    yield server
    server.stop()


def route(live, **fields) -> pb.RouteResponse:
    return live.stub.Route(pb.RouteRequest(**fields), timeout=30)


def error_of(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


# -- happy paths ------------------------------------------------------------------------------


@pytest.mark.parametrize("router", ["mf", "bert", "random"])
def test_route_answers_with_model_score_and_threshold(live, router) -> None:
    reply = route(live, prompt="Prove that the square root of 2 is irrational.", router=router, threshold=0.5)
    assert reply.router == router and reply.reason == "score"
    assert 0.0 <= reply.strong_win_rate <= 1.0 and reply.threshold == 0.5
    assert reply.strong == (reply.strong_win_rate >= 0.5)
    expected = "gpt-4-1106-preview" if reply.strong else "mixtral-8x7b-instruct-v0.1"
    assert reply.model == expected
    assert len(reply.request_id) == 32  # generated when not given


def test_route_scores_match_the_inference_library(live) -> None:
    prompt = "Write a SQL query returning the top 3 salaries per department."
    for name in ("mf", "bert"):
        reply = route(live, prompt=prompt, router=name, request_id="abc-1")
        direct = load_router(name, MODELS / name).score([prompt])[0]
        assert reply.strong_win_rate == pytest.approx(direct, abs=1e-6)
        assert reply.request_id == "abc-1"


def test_threshold_extremes_and_default_threshold(live) -> None:
    prompt = "Summarise the plot of Hamlet."
    assert route(live, prompt=prompt, router="mf", threshold=0.0).strong
    assert not route(live, prompt=prompt, router="mf", threshold=1.0).strong
    reply = route(live, prompt=prompt, router="mf")
    manifest_default = load_router("mf", MODELS / "mf").default_threshold
    assert reply.threshold == pytest.approx(manifest_default)


def test_strong_fraction_uses_the_calibration_table(live) -> None:
    info = {r.name: r for r in live.stub.ListRouters(pb.ListRoutersRequest(), timeout=30).routers}
    point = next(p for p in info["mf"].calibration if abs(p.strong_fraction - 0.3) < 1e-9)
    reply = route(live, prompt="hello", router="mf", strong_fraction=0.3)
    assert reply.threshold == pytest.approx(point.threshold)


def test_any_known_pair_for_mf(live) -> None:
    reply = route(
        live,
        prompt="Integrate x^2 e^x.",
        router="mf",
        strong_model="gpt-4o",
        weak_model="llama-3.1-8b-instruct",
        threshold=0.0,
    )
    assert reply.model == "gpt-4o"
    bert = route(
        live,
        prompt="Integrate x^2 e^x.",
        router="bert",
        strong_model="my-big",
        weak_model="my-small",
        threshold=0.0,
    )
    assert bert.model == "my-big"  # bert and random accept any names


def test_messages_route_on_the_last_user_turn(live) -> None:
    messages = [
        pb.ChatMessage(role="system", content="You are helpful."),
        pb.ChatMessage(role="user", content="hi"),
        pb.ChatMessage(role="assistant", content="Hello!"),
        pb.ChatMessage(role="user", content="Prove Fermat's little theorem."),
    ]
    via_messages = route(live, messages=messages, router="mf", threshold=0.5)
    via_prompt = route(live, prompt="Prove Fermat's little theorem.", router="mf", threshold=0.5)
    assert via_messages.strong_win_rate == pytest.approx(via_prompt.strong_win_rate)


def test_policy_rule_forces_strong(live) -> None:
    reply = route(live, prompt="hi", router="mf", threshold=1.0, labels={"tier": "vip", "tenant": "acme"})
    assert reply.strong and reply.reason == "policy:vip" and reply.strong_win_rate == -1.0
    normal = route(live, prompt="hi", router="mf", threshold=1.0, labels={"tier": "free"})
    assert not normal.strong and normal.reason == "score"


def test_route_batch_and_list_routers(live) -> None:
    reqs = [
        pb.RouteRequest(prompt=f"question {i}: explain recursion", router="mf", threshold=0.5)
        for i in range(5)
    ]
    reqs.append(pb.RouteRequest(prompt="hola", router="bert", threshold=0.5))
    replies = live.stub.RouteBatch(pb.RouteBatchRequest(requests=reqs), timeout=30).responses
    assert [r.router for r in replies] == ["mf"] * 5 + ["bert"]
    routers = live.stub.ListRouters(pb.ListRoutersRequest(), timeout=30).routers
    by_name = {r.name: r for r in routers}
    assert set(by_name) == {"mf", "bert", "random"}
    mf = by_name["mf"]
    assert mf.kind == "mf" and len(mf.models) >= 70 and mf.artifact_hash and mf.artifact_version
    assert mf.default_strong_model == "gpt-4-1106-preview" and len(mf.calibration) == 19
    assert mf.provider == SERVICE_PROVIDER


def test_empty_and_whitespace_prompts_are_defined(live) -> None:
    empty = route(live, prompt="", router="mf")
    blank = route(live, prompt="   \n ", router="mf")
    assert empty.strong_win_rate == pytest.approx(blank.strong_win_rate)


def test_long_text_within_the_size_limit_is_truncated(live) -> None:
    reply = route(live, prompt="word " * 10_000, router="bert", threshold=0.5)  # 50 kB < 64 kB
    assert 0.0 <= reply.strong_win_rate <= 1.0


# -- batching ---------------------------------------------------------------------------------


def test_200_concurrent_requests_match_one_at_a_time_and_batch(live) -> None:
    prompts = [
        f"Request {i}: {'explain' if i % 2 else 'prove'} topic number {i * 37 % 101} " + "x" * (i % 17)
        for i in range(200)
    ]
    before = live.metric("lmroute_batch_size_count", model="mf")
    before_sum = live.metric("lmroute_batch_size_sum", model="mf")

    async def burst():
        async with grpc.aio.insecure_channel(live.address) as channel:
            stub = router_pb2_grpc.RouterStub(channel)
            calls = [
                stub.Route(pb.RouteRequest(prompt=p, router="mf", threshold=0.5), timeout=60) for p in prompts
            ]
            return await asyncio.gather(*calls)

    replies = asyncio.run(burst())
    router = load_router("mf", MODELS / "mf")
    single = np.array([router.score([p])[0] for p in prompts])
    np.testing.assert_allclose([r.strong_win_rate for r in replies], single, atol=BATCH_INVARIANCE_ATOL)
    runs = live.metric("lmroute_batch_size_count", model="mf") - before
    batched = live.metric("lmroute_batch_size_sum", model="mf") - before_sum
    assert batched == 200 and runs < 200, f"{runs} runs for 200 prompts: no batching happened"


def test_cache_hits(live) -> None:
    hits = live.metric("lmroute_cache_hits_total")
    first = route(live, prompt="A fresh prompt for the cache test.", router="bert", threshold=0.5)
    second = route(live, prompt="  A fresh   prompt for the cache test. ", router="bert", threshold=0.9)
    assert not first.cached and second.cached
    assert second.strong_win_rate == first.strong_win_rate
    assert live.metric("lmroute_cache_hits_total") == hits + 1


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"router": "mf"}, None),  # an empty prompt is defined, not an error
        (
            {"prompt": "a", "messages": [pb.ChatMessage(role="user", content="b")]},
            "either prompt or messages",
        ),
        ({"messages": [pb.ChatMessage(role="system", content="b")]}, "no user turn"),
        ({"prompt": "a", "router": "nope"}, "unknown router 'nope'; available routers: bert, mf, random"),
        ({"prompt": "a", "threshold": 1.5}, "threshold must be in [0, 1]"),
        ({"prompt": "a", "threshold": -0.1}, "threshold must be in [0, 1]"),
        ({"prompt": "a", "threshold": math.nan}, "threshold must be in [0, 1]"),
        ({"prompt": "a", "strong_fraction": 1.0}, "strong_fraction must be in (0, 1)"),
        ({"prompt": "a", "strong_fraction": 0.0}, "strong_fraction must be in (0, 1)"),
        ({"prompt": "a", "threshold": 0.5, "strong_fraction": 0.5}, "either threshold or strong_fraction"),
        ({"prompt": "a", "router": "mf", "strong_model": "gpt-17"}, "unknown model 'gpt-17'; known models:"),
        ({"prompt": "a", "labels": {f"k{i}": "v" for i in range(17)}}, "at most 16 labels"),
        ({"prompt": "a", "labels": {"k": "v" * 257}}, "at most 256 characters"),
        ({"prompt": "x" * (65 * 1024)}, "the limit is 65536"),
    ],
)
def test_bad_input_is_invalid_argument(live, fields, message) -> None:
    if message is None:
        assert route(live, **fields).router == "mf"
        return
    error = error_of(lambda: route(live, **fields))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()


def test_bert_and_random_accept_unknown_model_names(live) -> None:
    for router in ("bert", "random"):
        assert route(live, prompt="a", router=router, strong_model="gpt-17", threshold=0.0).model == "gpt-17"


def test_deadline_exceeded_and_the_server_keeps_serving(live) -> None:
    error = error_of(
        lambda: live.stub.Route(pb.RouteRequest(prompt="slow? " * 300, router="bert"), timeout=1e-4)
    )
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert route(live, prompt="still alive", router="bert").router == "bert"


def test_metric_counters_match_the_requests_sent(live) -> None:
    ok = live.metric("lmroute_requests_total", rpc="Route", code="OK")
    bad = live.metric("lmroute_requests_total", rpc="Route", code="INVALID_ARGUMENT")
    weak = live.metric(
        "lmroute_route_decisions_total",
        router="mf",
        tier="weak",
        model="mixtral-8x7b-instruct-v0.1",
        reason="score",
    )
    for i in range(7):
        route(live, prompt=f"metrics {i}", router="mf", threshold=1.0)
    for _ in range(3):
        error_of(lambda: route(live, prompt="x", router="mf", threshold=2.0))
    assert live.metric("lmroute_requests_total", rpc="Route", code="OK") == ok + 7
    assert live.metric("lmroute_requests_total", rpc="Route", code="INVALID_ARGUMENT") == bad + 3
    assert (
        live.metric(
            "lmroute_route_decisions_total",
            router="mf",
            tier="weak",
            model="mixtral-8x7b-instruct-v0.1",
            reason="score",
        )
        == weak + 7
    )
    text = live.metrics_text()
    for name in (
        "lmroute_request_seconds_bucket",
        "lmroute_strong_win_rate_bucket",
        "lmroute_batch_tokens_bucket",
        "lmroute_queue_wait_seconds_bucket",
        "lmroute_inference_seconds_bucket",
        "lmroute_queue_depth",
        "lmroute_cache_misses_total",
    ):
        assert name in text


def test_health_is_serving_and_reflection_lists_the_service(live) -> None:
    health = health_pb2_grpc.HealthStub(live.channel)
    for service in ("", "lmroute.v1.Router"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(live.channel)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in replies for s in r.list_services_response.service}
    assert "lmroute.v1.Router" in names


# -- separate servers: queue bound, health transitions, graceful shutdown ---------------------


def test_full_queue_gives_resource_exhausted_while_serving() -> None:
    server = LiveServer(service_config(batching=BatchingConfig(max_batch_size=1, max_queue=2))).start()
    try:

        async def flood():
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = router_pb2_grpc.RouterStub(channel)
                calls = [
                    stub.Route(pb.RouteRequest(prompt=f"{i} " + "long text " * 60, router="bert"), timeout=60)
                    for i in range(40)
                ]
                return await asyncio.gather(*calls, return_exceptions=True)

        results = asyncio.run(flood())
        codes = [r.code() if isinstance(r, grpc.RpcError) else OK for r in results]
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes and OK in codes
        assert set(codes) <= {OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        exhausted = [r for r in results if isinstance(r, grpc.RpcError)]
        assert "queue full" in exhausted[0].details()
        assert route(server, prompt="after the flood", router="bert").router == "bert"
    finally:
        server.stop()


def test_health_not_serving_until_routers_are_warm() -> None:
    server = LiveServer(service_config())
    gate = asyncio.Event()
    original = server.server.engine.start

    async def slow_start():
        await gate.wait()
        await original()

    server.server.engine.start = slow_start
    future = asyncio.run_coroutine_threadsafe(server.server.start(), server.loop)
    try:
        port = None
        for _ in range(100):
            port = server.server.port
            if port:
                break
            import time

            time.sleep(0.05)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest(service="lmroute.v1.Router")
        assert health.Check(check, timeout=10).status == health_pb2.HealthCheckResponse.NOT_SERVING
        server.loop.call_soon_threadsafe(gate.set)
        future.result(60)
        assert health.Check(check, timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        channel.close()
    finally:
        server.address = f"127.0.0.1:{server.server.port}"
        server.channel = grpc.insecure_channel(server.address)
        server.stop()


def test_graceful_shutdown_loses_no_in_flight_request() -> None:
    server = LiveServer(service_config(batching=BatchingConfig(max_batch_size=4))).start()
    prompts = [f"In flight {i}: " + "details " * 80 for i in range(24)]
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        futures = [pool.submit(route, server, prompt=p, router="bert") for p in prompts]
        import time

        time.sleep(0.3)  # let the calls reach the server, then shut down under load
        server.call(server.server.stop(grace=30))
        replies = [f.result(60) for f in futures]
    assert len(replies) == 24 and all(r.router == "bert" for r in replies)
    with pytest.raises(grpc.RpcError):  # new calls are refused after shutdown
        grpc.insecure_channel(server.address)
        route(server, prompt="too late", router="bert")
    server.loop.call_soon_threadsafe(server.loop.stop)


def test_routers_on_one_artifact_share_a_session_and_batches() -> None:
    from service.config import RouterConfig

    config = service_config(
        routers=[
            RouterConfig("mf", str(MODELS / "mf")),
            RouterConfig("mf-gpt4o", str(MODELS / "mf"), strong_model="gpt-4o", weak_model="gpt-3.5-turbo"),
        ]
    )
    server = LiveServer(config).start()
    try:
        engine = server.server.engine
        assert engine.slot("mf").batcher is engine.slot("mf-gpt4o").batcher
        assert engine.slot("mf").router is engine.slot("mf-gpt4o").router
        a = route(server, prompt="Shared prompt", router="mf", threshold=0.0)
        b = route(server, prompt="Shared prompt", router="mf-gpt4o", threshold=0.0)
        assert a.model == "gpt-4-1106-preview" and b.model == "gpt-4o"
        assert not a.cached and b.cached  # the prompt ran once; its logits serve both pairs
    finally:
        server.stop()


@pytest.mark.parametrize("low_load_threads", [2, 0])
def test_a_lone_prompt_runs_on_the_wide_session_and_scores_the_same(low_load_threads: int) -> None:
    from service.config import RouterConfig, RuntimeConfig

    runtime = RuntimeConfig(
        providers=[SERVICE_PROVIDER], instances=2, intra_op_threads=1, low_load_threads=low_load_threads
    )
    config = service_config(routers=[RouterConfig("mf", str(MODELS / "mf"))], runtime=runtime)
    server = LiveServer(config).start()
    try:
        engine = server.server.engine
        router = engine.slot("mf").router
        assert engine.describe()["low_load_threads"] == low_load_threads
        assert router.wide_instance == (2 if low_load_threads else None)
        assert len(router.sessions) == 2 + (low_load_threads > 0)
        prompts = ["A lone prompt at low load", "Prove that the square root of 2 is irrational."]
        reference = load_router("mf", MODELS / "mf").score(prompts)
        before = engine.slot("mf").batcher.alone_runs
        for prompt, expected in zip(prompts, reference, strict=True):
            reply = route(server, prompt=prompt, router="mf", threshold=0.5)
            assert abs(reply.strong_win_rate - expected) <= BATCH_INVARIANCE_ATOL
        # one at a time, each prompt had the model to itself: it ran on the wide session
        assert engine.slot("mf").batcher.alone_runs - before == (len(prompts) if low_load_threads else 0)
    finally:
        server.stop()


def test_scoring_failure_falls_back_to_the_configured_tier() -> None:
    server = LiveServer(service_config()).start()
    try:
        bert = server.server.engine.slot("bert").router

        def broken(texts, outputs):
            raise RuntimeError("onnxruntime exploded")

        bert.run = broken
        reply = route(server, prompt="anything new", router="bert", threshold=0.0)
        assert reply.strong and reply.reason == "fallback:scoring_error"
        assert route(server, prompt="mf still fine", router="mf").reason == "score"
    finally:
        server.stop()
