"""Artifact manifests: checksums and format versions are enforced, with errors naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from service.errors import ArtifactError
from service.routers import BertRouter, MFRouter
from service.routers.manifest import FORMAT_VERSION, load_manifest
from service.routers.session import CPU, SessionOptions, resolve_providers
from tests.conftest import MODELS


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    return copy_artifact("mf", tmp_path)


def copy_artifact(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    target.mkdir()
    for item in (MODELS / name).iterdir():
        # the model is large: link it; tests that corrupt files replace the link with a copy
        (target / item.name).symlink_to(item) if item.suffix == ".onnx" else shutil.copy(item, target)
    return target


def edit_manifest(directory: Path, **changes) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_shipped_manifests_verify() -> None:
    for name in ("mf", "bert"):
        manifest = load_manifest(MODELS / name)
        assert manifest.raw["format_version"] == FORMAT_VERSION
        assert manifest.kind == name
        table = manifest.calibration
        assert table["strong_fraction"][0] == 0.05 and table["strong_fraction"][-1] == 0.95
        assert table["threshold"] == sorted(table["threshold"], reverse=True)
        assert manifest.default_pair == ("gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1")
        assert "Apache-2.0" in manifest.raw["license"]


def test_bad_checksum_names_the_file(artifact: Path) -> None:
    tokenizer = artifact / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text().replace("[UNK]", "[UNKNOWN]", 1))
    with pytest.raises(ArtifactError, match=r"tokenizer\.json: checksum mismatch"):
        MFRouter(artifact)


def test_corrupt_model_file_is_refused(artifact: Path) -> None:
    model = artifact / "model.onnx"
    data = model.read_bytes()
    model.unlink()
    model.write_bytes(data[:-10] + b"0123456789")
    with pytest.raises(ArtifactError, match=r"model\.onnx: checksum mismatch"):
        load_manifest(artifact)


def test_unknown_format_version_is_refused(artifact: Path) -> None:
    edit_manifest(artifact, format_version=99)
    with pytest.raises(ArtifactError, match=r"manifest\.json: unsupported format_version 99"):
        load_manifest(artifact)


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"scoring": "vibes"}, "unknown scoring rule 'vibes'"), ({"difficulty_tilt": "nan"}, "difficulty_tilt")],
)
def test_bad_scoring_fields_are_refused(artifact: Path, changes: dict, message: str) -> None:
    edit_manifest(artifact, **changes)
    with pytest.raises(ValueError, match=message):
        MFRouter(artifact)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scoring": "vibes"}, "unknown scoring rule 'vibes'"),
        ({"difficulty_tilt": -1}, "difficulty_tilt"),
        ({"strong_logit": {"mean": 0.0, "sd": 0.0}}, "strong_logit"),
    ],
)
def test_bad_bert_scoring_fields_are_refused(tmp_path: Path, changes: dict, message: str) -> None:
    bert = copy_artifact("bert", tmp_path)
    edit_manifest(bert, **changes)
    with pytest.raises(ValueError, match=message):
        BertRouter(bert)


def test_missing_listed_file_is_refused(artifact: Path) -> None:
    (artifact / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match=r"tokenizer\.json: listed in the manifest but missing"):
        load_manifest(artifact)


def test_missing_manifest_and_unreadable_json(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no router manifest"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable manifest"):
        load_manifest(tmp_path)


def test_cuda_falls_back_to_cpu_when_unavailable(artifact: Path) -> None:
    wanted = ("CUDAExecutionProvider", CPU)
    chosen = resolve_providers(wanted)
    assert chosen[-1] == CPU
    router = MFRouter(artifact, session_options=SessionOptions(providers=wanted, intra_op_threads=1))
    assert router.provider in chosen
    assert router.score(["still works"]).shape == (1,)
