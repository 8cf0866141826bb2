"""The gateway end to end: the real openai client -> gateway -> real gRPC router service ->
real backend HTTP processes playing strong and weak."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai
import pytest

from service.routers import load_router
from service.workers import free_port
from tests.conftest import MODELS
from tests.gateway_harness import (
    STRONG_MODEL,
    WEAK_MODEL,
    Backend,
    LiveGateway,
    acme_keys,
    gateway_config,
)
from tests.service_harness import LiveServer, service_config

PROMPT = "Prove that there are infinitely many primes of the form 4k+3."
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}]


@pytest.fixture(scope="module")
def router_service():
    server = LiveServer(service_config()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("backends")
    made = {"strong": Backend("strong-backend", tmp), "weak": Backend("weak-backend", tmp)}
    yield made
    for b in made.values():
        b.kill()


@pytest.fixture(scope="module")
def gateway(router_service, backends):
    config = gateway_config(
        router_service.address,
        [backends["strong"]],
        [backends["weak"]],
        keys=acme_keys(),
        label_headers=["workload"],
    )
    live = LiveGateway(config)
    yield live
    live.stop()


def client(gateway, key: str = "key-plain") -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=30)


def mf_score(prompt: str = PROMPT) -> float:
    return float(load_router("mf", MODELS / "mf").score([prompt])[0])


# -- routing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["strong", "weak"])
def test_decision_known_from_the_score_picks_the_backend(gateway, side) -> None:
    score = mf_score()
    threshold = round(score - 0.01, 5) if side == "strong" else round(score + 0.01, 5)
    raw = client(gateway).chat.completions.with_raw_response.create(
        model=f"router-mf-{threshold}", messages=MESSAGES
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == f"answer from {side}-backend"
    expected_model = STRONG_MODEL if side == "strong" else WEAK_MODEL
    assert raw.headers["x-lmroute-model"] == expected_model
    assert raw.headers["x-lmroute-router"] == "mf"
    assert float(raw.headers["x-lmroute-score"]) == pytest.approx(score, abs=1e-5)
    assert float(raw.headers["x-lmroute-threshold"]) == pytest.approx(threshold)
    assert len(raw.headers["x-lmroute-request-id"]) >= 16


@pytest.mark.parametrize("side", ["strong", "weak"])
def test_streaming_passes_chunks_through(gateway, side) -> None:
    model = "router-mf-0.0" if side == "strong" else "router-mf-1.0"
    stream = client(gateway).chat.completions.create(model=model, messages=MESSAGES, stream=True)
    parts = [chunk.choices[0].delta.content or "" for chunk in stream]
    assert len(parts) >= 3 and "".join(parts) == f"answer from {side}-backend"


def test_raw_stream_ends_with_done_and_has_headers(gateway) -> None:
    request = urllib.request.Request(
        gateway.base_url + "/chat/completions",
        data=json.dumps({"model": "router-bert-0.0", "messages": MESSAGES, "stream": True}).encode(),
        headers={"Authorization": "Bearer key-plain", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read().decode()
        assert response.headers["x-lmroute-router"] == "bert"
        assert response.headers["Content-Type"].startswith("text/event-stream")
    assert body.rstrip().endswith("data: [DONE]")


def test_every_other_field_passes_through_untouched(gateway, backends) -> None:
    extra = {
        "temperature": 0.3,
        "max_tokens": 17,
        "seed": 7,
        "user": "user-42",
        "response_format": {"type": "json_object"},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    }
    client(gateway).chat.completions.create(model="router-mf-0.0", messages=MESSAGES, **extra)
    sent = backends["strong"].requests()[-1]["body"]
    assert sent["model"] == STRONG_MODEL
    assert sent["messages"] == MESSAGES
    for key, value in extra.items():
        assert sent[key] == value


def test_calibrated_percentage_model(gateway) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(model="router-mf-p30", messages=MESSAGES)
    table = load_router("mf", MODELS / "mf").manifest.calibration
    expected = table["threshold"][table["strong_fraction"].index(0.3)]
    assert float(raw.headers["x-lmroute-threshold"]) == pytest.approx(expected, abs=1e-6)


def test_a_backend_model_name_passes_straight_through(gateway, backends) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(model=WEAK_MODEL, messages=MESSAGES)
    assert raw.parse().choices[0].message.content == "answer from weak-backend"
    assert raw.headers["x-lmroute-router"] == "none"


def test_routes_on_the_last_user_message(gateway) -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": [{"type": "text", "text": PROMPT}]},
    ]
    raw = client(gateway).chat.completions.with_raw_response.create(model="router-mf-0.5", messages=messages)
    assert float(raw.headers["x-lmroute-score"]) == pytest.approx(mf_score(), abs=1e-5)


# -- errors, auth, labels ---------------------------------------------------------------------


def post_route(gateway, body: dict, key: str = "key-plain") -> tuple[int, dict]:
    request = urllib.request.Request(
        gateway.base_url + "/route",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.mark.parametrize("side", ["strong", "weak"])
def test_route_endpoint_answers_the_decision_without_calling_a_backend(gateway, backends, side) -> None:
    score = mf_score()
    threshold = round(score - 0.01, 5) if side == "strong" else round(score + 0.01, 5)
    calls_before = {name: len(b.requests()) for name, b in backends.items()}
    status, body = post_route(gateway, {"model": f"router-mf-{threshold}", "messages": MESSAGES})
    assert status == 200
    assert body["tier"] == side and body["model"] == (STRONG_MODEL if side == "strong" else WEAK_MODEL)
    assert body["router"] == "mf" and body["reason"] == "score"
    assert body["strong_win_rate"] == pytest.approx(score, abs=1e-5)
    assert body["threshold"] == pytest.approx(threshold)
    assert {name: len(b.requests()) for name, b in backends.items()} == calls_before  # no backend call


def test_route_endpoint_refuses_bad_input(gateway) -> None:
    assert post_route(gateway, {"model": "router-mf-1.5", "messages": MESSAGES})[0] == 400
    status, body = post_route(gateway, {"model": "gpt-17", "messages": MESSAGES})
    assert status == 400 and body["error"]["code"] == "invalid_model"
    assert post_route(gateway, {"model": "router-mf-0.5", "messages": MESSAGES}, key="wrong")[0] == 401
    assert post_route(gateway, ["not", "an", "object"])[1]["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("model", ["router-mf", "router-mf-abc", "router-xx-0.5", "router-mf-1.5"])
def test_bad_model_strings_get_400_with_an_openai_error(gateway, model) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(gateway).chat.completions.create(model=model, messages=MESSAGES)
    error = info.value.body
    assert info.value.status_code == 400
    assert set(error) >= {"message", "type", "code"} and error["code"] == "invalid_model"
    assert model in error["message"] or "unknown router 'xx'" in error["message"]


def test_unknown_plain_model_is_404(gateway) -> None:
    with pytest.raises(openai.NotFoundError):
        client(gateway).chat.completions.create(model="gpt-17", messages=MESSAGES)


@pytest.mark.parametrize("key", ["wrong-key", ""])
def test_auth_is_enforced(gateway, key) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        client(gateway, key=key or "x").chat.completions.create(model="router-mf-0.5", messages=MESSAGES)
    assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"


def test_key_labels_drive_the_policy_rule(gateway) -> None:
    # threshold 1.0 would route weak; acme's key carries tier: vip, and the service forces strong
    raw = client(gateway, key="key-acme").chat.completions.with_raw_response.create(
        model="router-mf-1.0", messages=MESSAGES
    )
    assert raw.headers["x-lmroute-reason"] == "policy:vip"
    assert raw.parse().choices[0].message.content == "answer from strong-backend"
    plain = client(gateway).chat.completions.with_raw_response.create(
        model="router-mf-1.0", messages=MESSAGES
    )
    assert plain.headers["x-lmroute-reason"] == "score"


def test_models_health_and_metrics(gateway) -> None:
    ids = [m.id for m in client(gateway).models.list()]
    assert STRONG_MODEL in ids and WEAK_MODEL in ids
    assert any(i.startswith("router-mf-") for i in ids) and "router-mf-p50" in ids
    base = gateway.base_url.removesuffix("/v1")
    with urllib.request.urlopen(base + "/health", timeout=10) as r:
        assert json.load(r) == {"status": "ok", "router": "up"}
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        text = r.read().decode()
    assert "lmroute_gateway_requests_total" in text and "lmroute_gateway_overhead_seconds" in text


# -- failures ---------------------------------------------------------------------------------


def test_a_killed_backend_fails_over_then_the_other_tier_answers(router_service, tmp_path) -> None:
    first, second, weak = (Backend(n, tmp_path) for n in ("strong-a", "strong-b", "weak-c"))
    live = LiveGateway(gateway_config(router_service.address, [first, second], [weak]))
    try:
        openai_client = client(live)
        assert openai_client.chat.completions.create(model="router-mf-0.0", messages=MESSAGES) is not None
        first.kill()  # mid-test
        for _ in range(3):
            reply = openai_client.chat.completions.create(model="router-mf-0.0", messages=MESSAGES)
            assert reply.choices[0].message.content == "answer from strong-b"
        stream = openai_client.chat.completions.create(model="router-mf-0.0", messages=MESSAGES, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream) == "answer from strong-b"
        second.fail()  # now every strong endpoint is down: the weak tier answers
        raw = openai_client.chat.completions.with_raw_response.create(
            model="router-mf-0.0", messages=MESSAGES
        )
        assert raw.parse().choices[0].message.content == "answer from weak-c"
        assert raw.headers["x-lmroute-model"] == WEAK_MODEL
        metrics = live.gateway.metrics.failovers
        assert metrics.labels("strong", "endpoint")._value.get() >= 1  # noqa: SLF001
        assert metrics.labels("weak", "tier")._value.get() >= 1  # noqa: SLF001
    finally:
        live.stop()
        for b in (second, weak):
            b.kill()


def test_router_service_down_uses_the_fallback_tier(backends) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    live = LiveGateway(gateway_config(dead, [backends["strong"]], [backends["weak"]]))
    try:
        raw = client(live).chat.completions.with_raw_response.create(model="router-mf-1.0", messages=MESSAGES)
        assert raw.parse().choices[0].message.content == "answer from strong-backend"
        assert raw.headers["x-lmroute-reason"].startswith("fallback:router_")
        assert live.gateway.metrics.fallbacks.labels(raw.headers["x-lmroute-reason"])._value.get() == 1  # noqa: SLF001
    finally:
        live.stop()
