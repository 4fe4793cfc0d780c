"""Suite-wide options: ``--device cuda`` runs the device-aware tests on a GPU (default: cpu)."""

import pytest
import torch


def pytest_addoption(parser) -> None:
    parser.addoption("--device", default="cpu", help="torch device for the device-aware tests (cpu, cuda, cuda:1, ...)")


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    d = torch.device(request.config.getoption("--device"))
    if d.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda, but CUDA is not available")
    return d
