"""The inference library on the shipped ONNX artifacts: scores, truncation, names, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from service.errors import InvalidThresholdError, UnknownModelError, UnknownRouterError
from service.routers import RandomRouter, SessionOptions, check_threshold, load_router
from service.routers.session import MAX_AUTO_INSTANCES, cpu_cores, plan_instances
from tests.conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures"
TRAIN_DATA = ROOT.parent / "shared" / "data" / "train"
EDGE_PROMPTS = ["", "   \n\t ", "🙂🚀🔥", "请用三句话解释量子纠缠。", "a"]


def reference() -> tuple[list[str], dict]:
    prompts = json.loads((FIXTURES / "reference_prompts.json").read_text(encoding="utf-8"))
    scores = json.loads((FIXTURES / "reference_scores.json").read_text(encoding="utf-8"))
    return prompts, scores


@pytest.mark.parametrize("name", ["mf", "bert", "mf-fast"])
def test_scores_match_the_stored_reference(name: str, request: pytest.FixtureRequest) -> None:
    router = request.getfixturevalue(f"{name.replace('-', '_')}_router")
    prompts, stored = reference()
    assert len(prompts) == 20
    assert stored[name]["artifact_hash"] == router.artifact_hash, (
        "the shipped artifact changed: re-run `python -m export.reference` if that was intended"
    )
    np.testing.assert_allclose(router.score(prompts), stored[name]["scores"], atol=1e-5)


@pytest.mark.parametrize("name", ["mf", "bert", "mf-fast"])
def test_tokenization_skips_offsets_but_gives_the_librarys_ids_and_masks(name: str) -> None:
    # BatchTokenizer uses encode_batch_fast (no character offsets): it must stay identical to
    # the offset-tracking encode_batch, one prompt at a time and in mixed-length batches
    from tokenizers import Tokenizer

    from service.routers.tokenization import BatchTokenizer

    file = ROOT / "models_onnx" / name / "tokenizer.json"
    ours = BatchTokenizer(file, 128)
    library = Tokenizer.from_file(str(file))
    library.enable_truncation(max_length=128)
    library.enable_padding(pad_id=library.token_to_id("[PAD]"), pad_token="[PAD]")
    prompts, _ = reference()
    texts = prompts + EDGE_PROMPTS + ["naïve café déjà vu " * 40, "x " * 300]
    for batch in [[t] for t in texts] + [texts[:9], texts[9:]]:
        ids, mask = ours(batch)
        expected = library.encode_batch(batch)
        assert ids.tolist() == [e.ids for e in expected]
        assert mask.tolist() == [e.attention_mask for e in expected]


@pytest.mark.parametrize("name", ["mf", "bert", "mf-fast"])
def test_batched_scores_equal_one_at_a_time(name: str, request: pytest.FixtureRequest) -> None:
    # static int8: a prompt's score must not depend on what shares its batch
    router = request.getfixturevalue(f"{name.replace('-', '_')}_router")
    prompts, _ = reference()
    batched = router.score(prompts)
    single = np.array([router.score([p])[0] for p in prompts])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    reordered = router.score(prompts[::-1])[::-1]
    np.testing.assert_allclose(batched, reordered, atol=1e-5)


@pytest.mark.parametrize("name", ["mf", "bert", "mf-fast"])
def test_a_10000_token_prompt_is_truncated_not_rejected(name: str, request) -> None:
    router = request.getfixturevalue(f"{name.replace('-', '_')}_router")
    long_prompt = "word " * 10_000
    ids, mask = router.tokenizer([long_prompt, "short"])
    assert ids.shape == (2, router.manifest.max_tokens)
    assert mask[1].sum() < router.manifest.max_tokens  # padded to the longest, not beyond
    truncated = "word " * (router.manifest.max_tokens * 2)
    score_long, score_cut = router.score([long_prompt, truncated])
    assert 0.0 <= score_long <= 1.0
    assert score_long == pytest.approx(score_cut, abs=1e-6)  # only the first max_tokens count


@pytest.mark.parametrize("name", ["mf", "bert", "mf-fast"])
def test_empty_whitespace_emoji_and_chinese_prompts_get_a_defined_score(name: str, request) -> None:
    router = request.getfixturevalue(f"{name.replace('-', '_')}_router")
    scores = router.score(EDGE_PROMPTS)
    assert scores.shape == (len(EDGE_PROMPTS),)
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    # whitespace-only normalises to the empty prompt: the same defined score
    assert scores[0] == pytest.approx(scores[1], abs=1e-6)


def test_mf_scores_any_known_pair(mf_router) -> None:
    prompts = ["Prove Fermat's little theorem.", "hello"]
    default = mf_router.score(prompts)
    explicit = mf_router.score(prompts, "gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1")
    np.testing.assert_allclose(default, explicit)
    # the raw spellings used in eval data canonicalise through the aliases
    aliased = mf_router.score(prompts, "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1")
    np.testing.assert_allclose(default, aliased)
    other = mf_router.score(prompts, "gpt-4o", "llama-3.1-8b-instruct")
    assert not np.allclose(other, default)
    # the shipped rule: sigmoid((logit_strong - logit_weak + tilt * difficulty) / (1 + tilt))
    assert mf_router.scoring == "difficulty_tilted" and mf_router.tilt > 0
    logits = mf_router.logits(prompts).astype(np.float64)
    s, w = mf_router.column("gpt-4o"), mf_router.column("llama-3.1-8b-instruct")
    difficulty = logits[:, len(mf_router.models)]
    for a, b, got in ((s, w, other), (w, s, mf_router.score(prompts, "llama-3.1-8b-instruct", "gpt-4o"))):
        gap = (logits[:, a] - logits[:, b] + mf_router.tilt * difficulty) / (1 + mf_router.tilt)
        expected = 1 / (1 + np.exp(-gap))
        np.testing.assert_allclose(got, expected, atol=1e-9)


def test_mf_tilt_favours_the_strong_model_on_harder_prompts(mf_router) -> None:
    n = len(mf_router.models)
    rows = np.zeros((5, n + 1))
    rows[:, 0], rows[:, 1] = 0.3, -0.2  # the same MF gap on every row
    rows[:, n] = [-2.0, -1.0, 0.0, 1.0, 2.0]  # rising difficulty
    scores = mf_router.scores_from_logits(rows, 0, 1)
    assert np.all(np.diff(scores) > 0)
    assert scores[2] == pytest.approx(1 / (1 + np.exp(-0.5 / (1 + mf_router.tilt))))
    # with the same difficulty, a larger MF gap still wins
    rows[:, 0] = [0.0, 0.5, 1.0, 1.5, 2.0]
    rows[:, n] = 0.0
    assert np.all(np.diff(mf_router.scores_from_logits(rows, 0, 1)) > 0)


def test_mf_logits_cover_every_known_model(mf_router) -> None:
    logits = mf_router.logits(["one", "two", "three"])
    # one logit per known model, then the prompt's difficulty (the tilt's input)
    assert logits.shape == (3, len(mf_router.models) + 1)
    assert len(mf_router.models) >= 70


def test_mf_unknown_model_lists_the_known_ones(mf_router) -> None:
    with pytest.raises(UnknownModelError) as info:
        mf_router.score(["hi"], "gpt-17-ultra", "mixtral-8x7b-instruct-v0.1")
    assert "gpt-17-ultra" in str(info.value) and "gpt-4o" in str(info.value)


def test_bert_accepts_any_model_names(bert_router) -> None:
    prompts = ["Prove Fermat's little theorem.", "hello"]
    np.testing.assert_allclose(bert_router.score(prompts), bert_router.score(prompts, "any", "names"))
    probs = bert_router.probabilities(prompts)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_bert_score_is_its_class_margin_tilted_by_difficulty(bert_router) -> None:
    prompts = ["Prove Fermat's little theorem.", "hello", "What is 17 * 23?", "Write a haiku about rain."]
    assert bert_router.scoring == "difficulty_tilted" and bert_router.tilt > 0
    rows = bert_router.run_rows(prompts)
    assert rows.shape == (4, 4)  # P(strong), P(tie), P(weak), difficulty
    np.testing.assert_allclose(rows[:, :3], bert_router.probabilities(prompts), atol=1e-6)
    std = bert_router.manifest.raw["strong_logit"]
    p = rows[:, 0].astype(np.float64)
    z = (np.log(p / (1 - p)) - std["mean"]) / std["sd"]
    expected = 1 / (1 + np.exp(-(z + bert_router.tilt * rows[:, 3]) / (1 + bert_router.tilt)))
    np.testing.assert_allclose(bert_router.score(prompts), expected, atol=1e-6)
    # same class probabilities, harder prompt: a higher score
    harder = rows.copy()
    harder[:, 3] += 1.0
    assert np.all(bert_router.scores_from_rows(harder) > bert_router.scores_from_rows(rows))


def test_random_router_is_seedable() -> None:
    a = RandomRouter(7).score(["x"] * 100)
    b = RandomRouter(7).score(["x"] * 100)
    c = RandomRouter(8).score(["x"] * 100)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert ((a >= 0) & (a < 1)).all()
    assert RandomRouter(7).with_seed(8).score(["x"] * 100).tolist() == c.tolist()


def test_unknown_router_lists_the_available_ones() -> None:
    with pytest.raises(UnknownRouterError) as info:
        load_router("sw_rankingz")
    message = str(info.value)
    assert "sw_rankingz" in message and "mf" in message and "bert" in message and "random" in message


@pytest.mark.parametrize("bad", [-0.01, 1.5, math.nan, "abc", None])
def test_bad_thresholds_are_refused(bad) -> None:
    with pytest.raises(InvalidThresholdError):
        check_threshold(bad)


@pytest.mark.parametrize("good", [0.0, 0.116, 1.0, "0.5"])
def test_good_thresholds_pass(good) -> None:
    assert 0.0 <= check_threshold(good) <= 1.0


def test_instance_plan_is_one_single_threaded_session_per_core_on_cpu() -> None:
    cores = cpu_cores()
    auto = min(cores, MAX_AUTO_INSTANCES)
    assert plan_instances(0, 0, ("CPUExecutionProvider",)) == (auto, max(1, cores // auto))
    assert plan_instances(1, 0, ("CPUExecutionProvider",)) == (1, cores)
    assert plan_instances(3, 2, ("CPUExecutionProvider",)) == (3, 2)  # explicit values are kept


def test_router_instances_are_separate_sessions_with_the_same_scores(mf_router) -> None:
    options = SessionOptions(providers=("CPUExecutionProvider",), intra_op_threads=1)
    router = load_router("mf", instances=2, session_options=options)
    assert len(router.sessions) == 2 and router.sessions[0] is not router.sessions[1]
    prompts = ["Prove that sqrt(2) is irrational.", "hi"]
    np.testing.assert_allclose(router.run_rows(prompts, 1), router.run_rows(prompts, 0), atol=1e-6)
    np.testing.assert_allclose(router.run_rows(prompts, 0), mf_router.run_rows(prompts), atol=1e-5)
    with pytest.raises(ValueError, match="instances must be >= 1"):
        load_router("mf", instances=0)


def test_instance_plan_on_cuda_is_one_instance_that_batches(monkeypatch) -> None:
    # no GPU here: pretend the CUDA provider resolved first, as it does on a GPU machine
    monkeypatch.setattr(
        "service.routers.session.resolve_providers",
        lambda wanted: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    assert plan_instances(0, 0, ("CUDAExecutionProvider", "CPUExecutionProvider")) == (1, 0)


def test_mf_fast_is_the_mf_router_with_a_distilled_encoder(mf_router, mf_fast_router) -> None:
    # same head, same models, pair, stand-in, tilt and scoring: only the encoder differs
    fast, full = mf_fast_router.manifest.raw, mf_router.manifest.raw
    assert mf_fast_router.kind == "mf" and fast["name"] == "mf-fast"
    for key in ("models", "stand_ins", "scoring", "difficulty_tilt", "default_pair"):
        assert fast[key] == full[key], key
    assert fast["training"]["teacher"]["model_sha256"] == full["files"]["model.onnx"]["sha256"]
    assert fast["training"]["student"]["hidden_layers"] < 6


@pytest.mark.skipif(not TRAIN_DATA.is_dir(), reason="training pool not found at ../shared/data/train")
def test_mf_fast_agrees_with_mf_on_held_out_training_prompts(mf_router, mf_fast_router) -> None:
    from export.data import load_pool, split_prompts

    pool = load_pool(TRAIN_DATA)
    _, holdout = split_prompts(pool, 0.2, 0)  # the split the student never trained on
    texts = [pool.texts[i] for i in holdout[::4]]
    for pair in ((), ("gpt-4o", "llama-3.1-8b-instruct")):
        full, fast = mf_router.score(texts, *pair), mf_fast_router.score(texts, *pair)
        assert np.corrcoef(full, fast)[0, 1] > 0.93, pair
        assert np.abs(full - fast).mean() < 0.06, pair
