"""The committed gRPC stubs match proto/, and the codegen detects drift."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from service.grpc import codegen
from service.grpc.gen.lmroute.v1 import router_pb2, router_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
PROTO = ROOT / "proto"
GEN = ROOT / "service" / "grpc" / "gen"


def _codegen(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.grpc.codegen", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_committed_stubs_are_up_to_date() -> None:
    result = _codegen("--check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout


def test_generation_is_deterministic_and_path_independent(tmp_path: Path) -> None:
    proto_copy = tmp_path / "proto"
    shutil.copytree(PROTO, proto_copy)
    first = codegen.generate(PROTO)
    assert codegen.generate(proto_copy) == first
    assert set(first) >= {
        "__init__.py",
        "lmroute/__init__.py",
        "lmroute/v1/__init__.py",
        "lmroute/v1/router_pb2.py",
        "lmroute/v1/router_pb2.pyi",
        "lmroute/v1/router_pb2_grpc.py",
    }

    out = tmp_path / "gen"
    for _ in range(2):
        assert _codegen("--proto-root", proto_copy, "--out", out).returncode == 0
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == first
    assert _codegen("--check", "--proto-root", proto_copy, "--out", out).returncode == 0


def test_imports_are_rewritten_to_relative() -> None:
    grpc_src = (GEN / "lmroute" / "v1" / "router_pb2_grpc.py").read_text()
    assert "from . import router_pb2 as" in grpc_src
    assert "from lmroute" not in grpc_src and "import lmroute" not in grpc_src
    assert codegen.fix_imports("from lmroute.v1 import a_pb2 as x\n", ["lmroute", "v2"], {"lmroute"}) == (
        "from ..v1 import a_pb2 as x\n"
    )
    untouched = "from google.protobuf import timestamp_pb2 as _timestamp_pb2\n"
    assert codegen.fix_imports(untouched, ["lmroute", "v1"], {"lmroute"}) == untouched


def test_modified_proto_is_detected_as_stale(tmp_path: Path) -> None:
    proto_copy = tmp_path / "proto"
    shutil.copytree(PROTO, proto_copy)
    router_proto = proto_copy / "lmroute" / "v1" / "router.proto"
    text = router_proto.read_text()
    router_proto.write_text(
        text.replace("string request_id = 9;", "string request_id = 9;\n  string extra = 10;")
    )
    assert router_proto.read_text() != text

    result = _codegen("--check", "--proto-root", proto_copy, "--out", GEN)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "stale" in result.stderr
    assert "router_pb2.py" in result.stderr and "router_pb2.pyi" in result.stderr
    assert "__init__.py" not in result.stderr  # only the files that really differ are listed
    assert "python -m service.grpc.codegen" in result.stderr


def test_missing_and_orphaned_files_are_stale(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    assert _codegen("--out", out).returncode == 0
    (out / "lmroute" / "v1" / "router_pb2.pyi").unlink()
    orphan = out / "lmroute" / "v1" / "old_pb2.py"
    orphan.write_text(codegen.MARKER + " from proto/\n")
    result = _codegen("--check", "--out", out)
    assert result.returncode == 1
    assert "router_pb2.pyi  (missing)" in result.stderr
    assert "old_pb2.py  (no longer generated)" in result.stderr

    assert _codegen("--out", out).returncode == 0  # a write repairs both
    assert not orphan.exists()
    assert _codegen("--check", "--out", out).returncode == 0


def test_route_request_round_trip() -> None:
    request = router_pb2.RouteRequest(
        prompt="Prove that there are infinitely many primes.",
        messages=[router_pb2.ChatMessage(role="user", content="hi")],
        router="mf",
        threshold=0.0,  # explicitly set to the default value: presence must survive the wire
        labels={"tenant": "acme", "tier": "gold"},
        request_id="req-1",
    )
    assert request.HasField("threshold")
    assert not request.HasField("strong_fraction")

    decoded = router_pb2.RouteRequest.FromString(request.SerializeToString())
    assert decoded == request
    assert decoded.HasField("threshold") and decoded.threshold == 0.0
    assert not decoded.HasField("strong_fraction")
    assert dict(decoded.labels) == {"tenant": "acme", "tier": "gold"}
    assert decoded.messages[0].content == "hi"

    unset = router_pb2.RouteRequest.FromString(router_pb2.RouteRequest(prompt="x").SerializeToString())
    assert not unset.HasField("threshold") and unset.threshold == 0.0
    assert len(unset.labels) == 0

    decoded.ClearField("threshold")
    decoded.strong_fraction = 0.25
    again = router_pb2.RouteRequest.FromString(decoded.SerializeToString())
    assert not again.HasField("threshold") and again.HasField("strong_fraction")


def test_service_surface() -> None:
    service = router_pb2.DESCRIPTOR.services_by_name["Router"]
    assert [m.name for m in service.methods] == ["Route", "RouteBatch", "ListRouters"]
    assert hasattr(router_pb2_grpc, "RouterStub") and hasattr(router_pb2_grpc, "add_RouterServicer_to_server")
    info = router_pb2.RouterInfo(
        name="mf",
        models=["gpt-4", "mixtral"],
        calibration=[router_pb2.CalibrationPoint(strong_fraction=0.5, threshold=0.11)],
    )
    response = router_pb2.ListRoutersResponse(routers=[info])
    assert router_pb2.ListRoutersResponse.FromString(response.SerializeToString()) == response
