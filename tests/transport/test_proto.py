"""The committed generated modules match splitlearn.proto and import inside the package."""

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "src/splitlearn/transport/proto"
GENERATED = ["splitlearn_pb2.py", "splitlearn_pb2.pyi", "splitlearn_pb2_grpc.py"]


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools is not installed")
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_generated_code_is_fresh(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["bash", str(ROOT / "scripts/protoc.sh"), str(tmp_path)], env=env, check=True, capture_output=True)
    stale = [
        name for name in GENERATED
        if (tmp_path / "splitlearn/transport/proto" / name).read_bytes() != (PROTO_DIR / name).read_bytes()
    ]
    assert not stale, f"{stale} differ from splitlearn.proto: run scripts/protoc.sh (with the pinned grpcio-tools)"


@pytest.mark.skipif(importlib.util.find_spec("grpc") is None, reason="grpcio is not installed")
def test_grpc_module_imports_inside_the_package():
    grpc_module = importlib.import_module("splitlearn.transport.proto.splitlearn_pb2_grpc")
    assert {"SplitLearningStub", "SplitLearningServicer", "add_SplitLearningServicer_to_server"} <= set(vars(grpc_module))
