import pytest
import torch

from splitlearn.data.dataset import ArrayDataset


def data(n: int, *shape: int, classes: int = 3, seed: int = 0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    return ArrayDataset(torch.randn(n, *shape, generator=g), torch.arange(n) % classes)


@pytest.fixture
def tabular() -> ArrayDataset:
    """8 seeded samples of 10 features: one batch of 8."""
    return data(8, 10)
