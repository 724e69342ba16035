"""The committed stubs are exactly what the generator makes from proto/."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from harness import REPO

SCRIPT = REPO / "clients" / "python" / "scripts" / "generate.py"


def load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("writ_generate", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["writ_generate"] = module
    spec.loader.exec_module(module)
    return module


def test_the_committed_stubs_match_proto(tmp_path: Path) -> None:
    generator = load_generator()
    fresh = tmp_path / "_proto"
    generator.generate(fresh)
    problems = generator.differences(fresh, generator.TARGET)
    assert not problems, (
        "the stubs in clients/python/src/writ_client/_proto drifted from proto/writ/v1/writ.proto "
        f"(run `python clients/python/scripts/generate.py`): {problems}"
    )


def test_the_installed_package_carries_the_same_stubs() -> None:
    import writ_client._proto.writ.v1.writ_pb2 as installed

    generator = load_generator()
    committed = generator.TARGET / "writ" / "v1" / "writ_pb2.py"
    assert Path(installed.__file__).read_bytes() == committed.read_bytes(), (
        "the installed writ_client is not the one in this checkout: pip install ./clients/python again"
    )


def test_the_stubs_import_as_a_package() -> None:
    from writ_client.proto import writ_pb2, writ_pb2_grpc

    assert writ_pb2.IssueRequest.__module__ == "writ_client._proto.writ.v1.writ_pb2"
    assert writ_pb2_grpc.CredentialServiceStub.__module__ == "writ_client._proto.writ.v1.writ_pb2_grpc"
    assert writ_pb2.DESCRIPTOR.package == "writ.v1"
