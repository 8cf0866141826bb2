"""The RouteLLM-compatible SDK on real parts: two backend processes, the shipped routers, a live server."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from service.config import ServerConfig
from service.controller import Controller, LmrouteError, RoutingError
from service.policy.calibration import threshold_for_fraction
from service.routers import RandomRouter
from tests.conftest import MODELS, ROOT
from tests.service_harness import LiveServer, service_config

STRONG = "gpt-4-1106-preview"
WEAK = "mixtral-8x7b-instruct-v0.1"
PROMPTS = [
    "Prove that sqrt(2) is irrational.",
    "hi",
    "a",
    "1",
    "part one",
    "Tell me a joke.",
    "Write a haiku about the sea.",
    "Implement a lock-free concurrent hash map in C++ with resizing.",
    "你好",
    "one two three",
    # a hard multiple-choice physics question, like the pool's: above the 30%-strong threshold
    "Question: A uniform rod of mass M and length L pivots about one end and is released from rest "
    "at 30 degrees above the horizontal. Find the angular speed when it passes the horizontal. "
    "Options: A. sqrt(3g/(2L)) B. sqrt(g/L) C. sqrt(3g/L) D. sqrt(6g/L) E. sqrt(2g/L) F. sqrt(g/(2L)) "
    "G. sqrt(3g/(4L)) H. sqrt(5g/L) I. sqrt(g/(3L)) J. sqrt(4g/L)",
]
EXTRA = {
    "temperature": 0.3,
    "max_tokens": 17,
    "response_format": {"type": "json_object"},
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "look a word up",
                "parameters": {"type": "object", "properties": {"word": {"type": "string"}}},
            },
        }
    ],
    "user": "user-42",
}


def _start_backend(name: str, tmp: Path) -> tuple[subprocess.Popen, str]:
    port_file = tmp / f"{name}.port"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fake_backend.py"), "--name", name, "--port", "0"]
        + ["--port-file", str(port_file)],
    )
    deadline = time.monotonic() + 20
    while not (port_file.exists() and port_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"fake backend {name} did not start")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{int(port_file.read_text())}"


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("backends")
    procs, urls = [], {}
    try:
        for name in ("strong-backend", "weak-backend"):
            proc, url = _start_backend(name, tmp)
            procs.append(proc)
            urls[name] = url
        yield urls
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)


def received(url: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/_requests", timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def controller(backends) -> Controller:
    client = Controller(
        routers=["mf", "bert", "random"],
        strong_model=STRONG,
        weak_model=WEAK,
        config={
            "mf": {"checkpoint_path": str(MODELS / "mf")},
            "bert": {"artifact_dir": str(MODELS / "bert")},
            "random": {"seed": 0},
        },
        api_key="sk-shared",
        strong_api_base=backends["strong-backend"] + "/v1",
        strong_api_key="sk-strong",
        weak_api_base=backends["weak-backend"] + "/v1",
        timeout=10,
    )
    yield client
    client.close()


def score(router, prompt: str) -> float:
    return float(router.score([prompt], STRONG, WEAK)[0])


def below(s: float) -> str:
    """A threshold string just below the score: routes strong."""
    assert 1e-3 < s < 1 - 1e-3
    return f"{s - 1e-4:.6f}"


def above(s: float) -> str:
    return f"{s + 1e-4:.6f}"


def user(text) -> list[dict]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


@pytest.mark.parametrize("side", ["strong", "weak"])
def test_create_routes_and_passes_fields_through(controller, backends, mf_router, side):
    prompt = PROMPTS[0]
    s = score(mf_router, prompt)
    threshold = below(s) if side == "strong" else above(s)
    reply = controller.chat.completions.create(
        model=f"router-mf-{threshold}", messages=user(prompt), extra_body={"custom": [1, 2]}, **EXTRA
    )
    assert reply.choices[0].message.content == f"answer from {side}-backend"
    last = received(backends[f"{side}-backend"])[-1]
    body = last["body"]
    assert body["model"] == (STRONG if side == "strong" else WEAK)
    assert body["messages"] == user(prompt)
    for key, value in EXTRA.items():
        assert body[key] == value, key
    assert body["custom"] == [1, 2]
    # per-tier key, falling back to api_key
    assert last["auth"] == ("Bearer sk-strong" if side == "strong" else "Bearer sk-shared")


def test_create_routes_on_last_user_message_and_text_parts(controller, backends, mf_router):
    first, last = "1", "Prove that sqrt(2) is irrational."
    s_first, s_last = score(mf_router, first), score(mf_router, last)
    assert s_first - s_last > 0.02  # "1" scores above the proof request: a threshold between splits them
    threshold = f"{(s_first + s_last) / 2:.6f}"
    messages = [
        {"role": "user", "content": first},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": last},
        {"role": "assistant", "content": "1"},
    ]
    reply = controller.chat.completions.create(model=f"router-mf-{threshold}", messages=messages)
    assert reply.choices[0].message.content == "answer from weak-backend"
    assert received(backends["weak-backend"])[-1]["body"]["messages"] == messages

    parts = [
        {"type": "text", "text": "part"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "one"},
    ]
    s_parts = score(mf_router, "part\none")
    reply = controller.chat.completions.create(model=f"router-mf-{below(s_parts)}", messages=user(parts))
    assert reply.choices[0].message.content == "answer from strong-backend"
    reply = controller.chat.completions.create(model=f"router-mf-{above(s_parts)}", messages=user(parts))
    assert reply.choices[0].message.content == "answer from weak-backend"
    assert received(backends["weak-backend"])[-1]["body"]["messages"][-1]["content"] == parts


def test_create_stream(controller, backends):
    stream = controller.chat.completions.create(
        model="router-mf-0.0", messages=user("hi"), stream=True, temperature=0.1
    )
    chunks = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(chunks) > 1
    assert "".join(chunks) == "answer from strong-backend"
    body = received(backends["strong-backend"])[-1]["body"]
    assert body["stream"] is True and body["model"] == STRONG and body["temperature"] == 0.1


def test_acreate(controller, backends, mf_router):
    assert score(mf_router, "hi") < 1.0

    async def main():
        reply = await controller.chat.completions.acreate(
            model="router-mf-1.0", messages=user("hi"), max_tokens=5
        )
        stream = await controller.chat.completions.acreate(
            model="router-mf-0", messages=user("hi"), stream=True
        )
        chunks = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        await controller.aclose()  # this loop's AsyncOpenAI clients
        return reply, chunks

    reply, chunks = asyncio.run(main())
    assert reply.choices[0].message.content == "answer from weak-backend"
    body = received(backends["weak-backend"])[-1]["body"]
    assert body["model"] == WEAK and body["max_tokens"] == 5
    assert len(chunks) > 1 and "".join(chunks) == "answer from strong-backend"
    # a second event loop gets working clients too
    reply2, _ = asyncio.run(main())
    assert reply2.choices[0].message.content == "answer from weak-backend"


def test_percent_model_uses_calibrated_threshold(controller, mf_router, bert_router):
    t30 = threshold_for_fraction(mf_router.manifest.calibration, 0.3)
    scores = {p: score(mf_router, p) for p in PROMPTS}
    strong = [p for p, s in scores.items() if s >= t30]
    weak = [p for p, s in scores.items() if s < t30]
    assert strong and weak
    # prefer a prompt between the calibrated threshold and 1 - 0.3: only the calibration routes it strong
    strong.sort(key=lambda p: not (t30 <= scores[p] < 0.7))
    assert controller.chat.completions.create(model="router-mf-p30", messages=user(strong[0])).choices[
        0
    ].message.content == ("answer from strong-backend")
    reply = controller.chat.completions.create(model="router-mf-p30", messages=user(weak[0]))
    assert reply.choices[0].message.content == "answer from weak-backend"
    # bert: its own calibration table
    b30 = threshold_for_fraction(bert_router.manifest.calibration, 0.3)
    for prompt in PROMPTS[:4]:
        want = "strong" if bert_router.score([prompt])[0] >= b30 else "weak"
        reply = controller.chat.completions.create(model="router-bert-p30", messages=user(prompt))
        assert reply.choices[0].message.content == f"answer from {want}-backend"


def test_random_router_seeded_and_percent(backends):
    client = Controller(["random"], "any-strong", "any-weak", config={"random": {"seed": 7}})
    expected = RandomRouter(7).score(PROMPTS)
    assert np.allclose(client.batch_calculate_win_rate(PROMPTS, "random"), expected, atol=0, rtol=0)
    client = Controller(["random"], "any-strong", "any-weak", config={"random": {"seed": 7}})
    first = RandomRouter(7).score(["x"])[0]
    want = "any-strong" if first >= 1 - 0.3 else "any-weak"
    assert client._route_messages("router-random-p30", user("x"))[0] == want


def test_route_win_rates_and_counts(backends, mf_router, bert_router):
    client = Controller(["mf", "bert"], STRONG, WEAK, config={"mf": {"checkpoint_path": str(MODELS / "mf")}})
    s = score(mf_router, PROMPTS[0])
    assert client.route(PROMPTS[0], "mf", float(below(s))) == STRONG
    assert client.route(PROMPTS[0], "mf", float(above(s))) == WEAK
    assert client.route(PROMPTS[0], "mf", 0.0) == STRONG
    assert client.route(PROMPTS[1], "bert", 1.0) == WEAK
    assert client.model_counts == {"mf": Counter({STRONG: 2, WEAK: 1}), "bert": Counter({WEAK: 1})}

    rates = client.batch_calculate_win_rate(PROMPTS, "mf")
    assert isinstance(rates, np.ndarray) and rates.shape == (len(PROMPTS),)
    np.testing.assert_allclose(rates, mf_router.score(PROMPTS, STRONG, WEAK), atol=1e-6, rtol=0)
    np.testing.assert_allclose(
        client.batch_calculate_win_rate(PROMPTS, "bert"), bert_router.score(PROMPTS), atol=1e-6, rtol=0
    )
    assert sum(client.model_counts["mf"].values()) == 3  # scoring in bulk is not a routed call


def test_batch_win_rate_chunks_and_progress(capsys, mf_router):
    client = Controller(["mf"], STRONG, WEAK, progress_bar=True)
    prompts = [f"question number {i}" for i in range(300)]  # two chunks of 256
    rates = client.batch_calculate_win_rate(prompts, "mf")
    np.testing.assert_allclose(rates, mf_router.score(prompts, STRONG, WEAK), atol=1e-6, rtol=0)
    err = capsys.readouterr().err
    assert "256/300" in err and "300/300" in err
    assert "question number" not in err
    assert client.batch_calculate_win_rate([], "mf").shape == (0,)


def test_other_pair_changes_mf_scores(mf_router):
    client = Controller(["mf"], "gpt-4o-2024-05-13", "llama-3.1-8b-instruct")
    np.testing.assert_allclose(
        client.batch_calculate_win_rate(PROMPTS, "mf"),
        mf_router.score(PROMPTS, "gpt-4o-2024-05-13", "llama-3.1-8b-instruct"),
        atol=1e-6,
        rtol=0,
    )


@pytest.fixture(scope="module")
def live():
    # no metrics endpoint: not needed here
    server = LiveServer(
        service_config(server=ServerConfig(host="127.0.0.1", port=0, metrics_port=None))
    ).start()
    yield server
    server.stop(1)


def test_remote_scoring_matches_in_process(live, backends, mf_router, bert_router):
    remote = Controller(
        ["mf", "bert"],
        STRONG,
        WEAK,
        router_address=live.address,
        api_base=backends["strong-backend"] + "/v1",
        timeout=30,
    )
    try:
        for prompt in PROMPTS[:4]:
            s = score(mf_router, prompt)
            assert remote.route(prompt, "mf", float(below(s))) == STRONG
            assert remote.route(prompt, "mf", float(above(s))) == WEAK
        np.testing.assert_allclose(
            remote.batch_calculate_win_rate(PROMPTS, "mf"),
            mf_router.score(PROMPTS, STRONG, WEAK),
            atol=1e-6,
            rtol=0,
        )
        np.testing.assert_allclose(
            remote.batch_calculate_win_rate(PROMPTS, "bert"), bert_router.score(PROMPTS), atol=1e-6, rtol=0
        )
        # strong_fraction goes to the server, which applies the same calibration
        t30 = threshold_for_fraction(mf_router.manifest.calibration, 0.3)
        for prompt in PROMPTS:
            want = STRONG if score(mf_router, prompt) >= t30 else WEAK
            assert remote._route_messages("router-mf-p30", user(prompt))[0] == want
        reply = remote.chat.completions.create(model="router-mf-0", messages=user("hi"))
        assert reply.choices[0].message.content == "answer from strong-backend"
        assert remote.model_counts["mf"][STRONG] >= 5
        with pytest.raises(RoutingError):
            remote.route("hi", "mf", 1.5)
        with pytest.raises(RoutingError):
            remote.route("hi", "mf", math.nan)
    finally:
        remote.close()


def test_remote_errors(live):
    # the server's INVALID_ARGUMENT (an unknown mf model) becomes RoutingError
    remote = Controller(["mf"], "no-such-model", WEAK, router_address=live.address, timeout=30)
    with pytest.raises(RoutingError, match="no-such-model"):
        remote.route("hi", "mf", 0.5)
    with pytest.raises(RoutingError, match="no-such-model"):
        remote.batch_calculate_win_rate(["hi"], "mf")
    remote.close()
    with pytest.raises(RoutingError, match="available routers"):
        Controller(["mf", "nope"], STRONG, WEAK, router_address=live.address, timeout=30)
    # nothing listening: a clear LmrouteError, not a RoutingError
    with pytest.raises(LmrouteError, match="UNAVAILABLE|DEADLINE") as info:
        Controller(["mf"], STRONG, WEAK, router_address="127.0.0.1:1", timeout=3)
    assert not isinstance(info.value, RoutingError)


@pytest.mark.parametrize(
    "model",
    [
        "router-mf",
        "router-mf-abc",
        "router-xx-0.5",
        "router-mf-1.5",
        "router-mf-nan",
        "router-mf-p0",
        "gpt-4",
    ],
)
def test_bad_model_strings(controller, model):
    with pytest.raises(RoutingError):
        controller.chat.completions.create(model=model, messages=user("hi"))

    async def call():
        try:
            await controller.chat.completions.acreate(model=model, messages=user("hi"))
        finally:
            await controller.aclose()

    with pytest.raises(RoutingError):
        asyncio.run(call())


def test_known_router_not_configured(backends):
    client = Controller(["bert"], STRONG, WEAK)
    with pytest.raises(RoutingError, match="unknown router 'mf'"):
        client.chat.completions.create(model="router-mf-0.5", messages=user("hi"))
    with pytest.raises(RoutingError):
        client.route("hi", "mf", 0.5)
    with pytest.raises(RoutingError):
        client.batch_calculate_win_rate(["hi"], "mf")


def test_no_user_message(controller):
    with pytest.raises(RoutingError, match="user"):
        controller.chat.completions.create(
            model="router-mf-0.5", messages=[{"role": "system", "content": "x"}]
        )


def test_unknown_router_in_constructor():
    with pytest.raises(RoutingError) as info:
        Controller(["mf", "sw_ranking"], STRONG, WEAK)
    for name in ("random", "mf", "bert", "sw_ranking"):
        assert name in str(info.value)
    with pytest.raises(RoutingError):
        Controller([], STRONG, WEAK)


@pytest.mark.parametrize("threshold", [-0.1, 1.5, math.nan, math.inf])
def test_route_threshold_out_of_range(controller, threshold):
    with pytest.raises(RoutingError):
        controller.route("hi", "mf", threshold)
    with pytest.raises(RoutingError):
        controller.route("hi", "nope", 0.5)


def test_unknown_mf_model_in_constructor():
    with pytest.raises(RoutingError, match="no-such-model"):
        Controller(["mf"], "no-such-model", WEAK)
    with pytest.raises(RoutingError, match="no-such-model"):
        Controller(["mf"], STRONG, "no-such-model")
    # bert and random accept any names
    client = Controller(["bert", "random"], "no-such-model", "another-one")
    assert client.route("hi", "bert", 0.0) == "no-such-model"


def test_routing_error_is_re_exported():
    from service.policy.model_string import RoutingError as Original

    assert RoutingError is Original and issubclass(RoutingError, LmrouteError)


def test_debug_log_has_no_prompt_text(controller):
    import io

    import structlog

    from service.logging_setup import configure_logging

    stream = io.StringIO()
    configure_logging("debug", stream)
    try:
        controller.route("a very secret prompt", "mf", 0.5)
    finally:
        structlog.reset_defaults()
    out = stream.getvalue()
    assert '"event": "routed"' in out and '"router": "mf"' in out
    assert "secret" not in out
