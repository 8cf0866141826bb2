"""The mf-fast distillation pieces (export/student.py, export/mf_fast.py) on the real encoder.

Runs where the train extra (torch, transformers, the bundled encoder) is installed."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from export.difficulty import DifficultyHead  # noqa: E402
from export.encoder import load_encoder, load_tokenizer, locate_encoder  # noqa: E402
from export.mf import MFConfig, MFHead  # noqa: E402
from export.mf_fast import linear_maps  # noqa: E402
from export.student import (  # noqa: E402
    HIDDEN,
    StudentConfig,
    distill,
    embed_ids,
    keep_layers,
    readout_matrix,
    token_crops,
)
from tests.conftest import ROOT  # noqa: E402

PROMPTS = json.loads((ROOT / "tests/fixtures/reference_prompts.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def folder():
    try:
        return locate_encoder()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def test_crops_are_contiguous_spans_wrapped_in_cls_and_sep() -> None:
    prompts = [[101, *range(1000, 1000 + n), 102] for n in (3, 10, 40, 300)]
    crops = token_crops(prompts, per_prompt=3, max_tokens=32, min_tokens=4, seed=0)
    assert len(crops) == 9  # the 3-token prompt is too short to crop
    for crop in crops:
        assert crop[0] == 101 and crop[-1] == 102
        body = crop[1:-1]
        assert 4 <= len(body) <= 30  # fits max_tokens with [CLS] and [SEP]
        assert body == list(range(body[0], body[0] + len(body)))  # one contiguous span
    assert crops == token_crops(prompts, 3, 32, 4, seed=0)
    assert crops != token_crops(prompts, 3, 32, 4, seed=1)


def test_the_mf_head_and_difficulty_are_read_as_exact_linear_maps() -> None:
    torch.manual_seed(0)
    head = MFHead(7, HIDDEN, MFConfig(dim=16, point_weight=0.0, difficulty=False)).eval()
    with torch.no_grad():
        head.ability.normal_()
    difficulty = DifficultyHead(HIDDEN)
    torch.nn.init.normal_(difficulty.linear.weight)
    logit_map, difficulty_map = linear_maps(head, difficulty)
    emb = torch.randn(5, HIDDEN)
    with torch.no_grad():
        expected = head(emb)
        np.testing.assert_allclose(emb @ logit_map.T + head(torch.zeros(1, HIDDEN)), expected, atol=1e-5)
        mask = torch.ones(5, 9, dtype=torch.long)
        offset = difficulty(torch.zeros(5, HIDDEN), mask)[:, 0]
        np.testing.assert_allclose(emb @ difficulty_map + offset, difficulty(emb, mask)[:, 0], atol=1e-5)


def test_the_readout_error_measures_the_routed_margin() -> None:
    rng = np.random.default_rng(0)
    logit_map, difficulty_map = torch.randn(6, HIDDEN), torch.randn(HIDDEN)
    teacher = rng.normal(size=(50, HIDDEN)).astype(np.float32)
    tilt, pair = 16.0, (2, 4)
    rows = readout_matrix(logit_map, difficulty_map, pair, tilt, teacher, pair_weight=2.0)
    assert rows.shape == (6 + 2, HIDDEN)
    delta = torch.randn(HIDDEN)
    margin = (logit_map[2] - logit_map[4] + tilt * difficulty_map) / (1 + tilt)
    spread = float((torch.as_tensor(teacher) @ margin).std())
    assert float(rows[-1] @ delta) == pytest.approx(2.0 * float(margin @ delta) / spread, rel=1e-4)
    # a shift shared by every model's logit moves no decision, so the read-outs ignore it
    shifted = readout_matrix(logit_map + torch.randn(HIDDEN), difficulty_map, pair, tilt, teacher, 2.0)
    assert torch.allclose(shifted, rows, atol=1e-5)


def test_keep_layers_takes_the_teacher_blocks_in_order(folder) -> None:
    teacher = load_encoder(folder)
    blocks = list(teacher.bert.encoder.layer)
    student = keep_layers(load_encoder(folder), (0, 5))
    assert len(student.bert.encoder.layer) == 2
    for kept, index in zip(student.bert.encoder.layer, (0, 5), strict=True):
        for a, b in zip(kept.parameters(), blocks[index].parameters(), strict=True):
            assert torch.equal(a, b)
    tok = load_tokenizer(folder, 128)
    ids = [e.ids for e in tok.encode_batch(PROMPTS[:6])]
    full = embed_ids(keep_layers(load_encoder(folder), range(6)), ids)
    np.testing.assert_allclose(full, embed_ids(teacher, ids), atol=1e-6)  # all six layers: the teacher
    assert not np.allclose(embed_ids(student, ids), full, atol=1e-2)


def test_distill_moves_the_student_towards_the_teacher_and_keeps_the_best_epoch(folder) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    tok = load_tokenizer(folder, 64)
    ids = [e.ids for e in tok.encode_batch(PROMPTS[:16])]
    targets = embed_ids(load_encoder(folder), ids)
    student = keep_layers(load_encoder(folder), (0,))
    readout = torch.zeros(1, HIDDEN)  # the cosine term alone
    snapshots = []

    def evaluate(model) -> dict:
        cos = float((embed_ids(model, ids) * targets).sum(1).mean())
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"score": -len(snapshots), "cosine": cos}  # prefer the first epoch, whatever happens

    before = float((embed_ids(student, ids) * targets).sum(1).mean())
    cfg = StudentConfig(layers=(0,), epochs=3, lr=3e-4, batch_size=8, warmup_steps=1)
    student, history = distill(student, ids, targets, readout, cfg, evaluate)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["cosine"] > before + 0.05
    kept = student.state_dict()
    assert all(torch.equal(kept[k], snapshots[0][k]) for k in kept)  # epoch 1 restored
