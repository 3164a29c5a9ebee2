"""The checked-in protobuf modules are exactly what protoc makes of proto/ today."""

from __future__ import annotations

from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = ROOT / "proto"
GENERATED = ROOT / "services" / "zonegate" / "bus" / "v1"


def test_generated_modules_match_the_proto_sources(tmp_path: Path) -> None:
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "zonegate/bus/v1").glob("*.proto"))
    assert sources, "no .proto files found"
    status = protoc.main(
        ["protoc", f"-I{PROTO_ROOT}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", *sources]
    )
    assert status == 0
    fresh = sorted((tmp_path / "zonegate/bus/v1").glob("*_pb2.py*"))
    assert [p.name for p in fresh] == sorted(p.name for p in GENERATED.glob("*_pb2.py*"))
    for path in fresh:
        assert path.read_text() == (GENERATED / path.name).read_text(), (
            f"{path.name} is stale: regenerate with python -m grpc_tools.protoc -Iproto "
            "--python_out=services --pyi_out=services proto/zonegate/bus/v1/*.proto"
        )
