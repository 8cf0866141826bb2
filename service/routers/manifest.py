"""Router artifact manifests: what an exported router folder holds, verified before use."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import ArtifactError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
ROUTER_KINDS = ("mf", "bert")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """A verified manifest. `raw` keeps every field (metrics, calibration, notes)."""

    directory: Path
    raw: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.raw["kind"]

    @property
    def name(self) -> str:
        return self.raw.get("name", self.kind)

    @property
    def version(self) -> str:
        return self.raw.get("artifact_version", "")

    @property
    def max_tokens(self) -> int:
        return int(self.raw["max_tokens"])

    @property
    def model_file(self) -> Path:
        return self.directory / self.raw["onnx"]["model"]

    @property
    def tokenizer_file(self) -> Path:
        return self.directory / self.raw["tokenizer"]

    @property
    def artifact_hash(self) -> str:
        """One hash over every file's checksum: keys score and decision caches."""
        files = self.raw["files"]
        joined = "".join(f"{name}:{files[name]['sha256']};" for name in sorted(files))
        return hashlib.sha256(joined.encode()).hexdigest()[:16]

    @property
    def default_pair(self) -> tuple[str, str]:
        pair = self.raw["default_pair"]
        return pair["strong"], pair["weak"]

    @property
    def calibration(self) -> dict[str, list[float]]:
        return self.raw["calibration"]


def load_manifest(directory: str | Path, verify_checksums: bool = True) -> Manifest:
    """Read `directory/manifest.json`; refuse unknown format versions and bad checksums."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{path}: no router manifest here (expected an exported router folder)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable manifest: {exc}") from exc
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: unsupported format_version {version!r}; this lmroute reads version {FORMAT_VERSION}"
        )
    for key in ("kind", "files", "onnx", "tokenizer", "max_tokens", "default_pair", "calibration"):
        if key not in raw:
            raise ArtifactError(f"{path}: manifest lacks the field {key!r}")
    if raw["kind"] not in ROUTER_KINDS:
        raise ArtifactError(f"{path}: unknown router kind {raw['kind']!r}; known: {', '.join(ROUTER_KINDS)}")
    manifest = Manifest(directory=directory, raw=raw)
    for name in (raw["onnx"]["model"], raw["tokenizer"]):
        if name not in raw["files"]:
            raise ArtifactError(f"{path}: {name} is used but not listed under 'files'")
    if verify_checksums:
        for name, entry in raw["files"].items():
            file = directory / name
            if not file.is_file():
                raise ArtifactError(f"{file}: listed in the manifest but missing")
            actual = sha256_file(file)
            if actual != entry.get("sha256"):
                raise ArtifactError(
                    f"{file}: checksum mismatch (manifest {entry.get('sha256')}, file {actual}); "
                    "the artifact is corrupt or was changed after export"
                )
    return manifest
