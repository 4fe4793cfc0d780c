import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.nn import functional as F

from splitlearn.models import small_cnn


@pytest.mark.parametrize(
    ("channels", "size"),
    [(1, 8), (1, 28), (3, 32), (1, (8, 4)), (1, (28, 14)), (1, (8, 3))],
)
def test_small_cnn_output_shape(channels, size):
    model = small_cnn(in_channels=channels, image_size=size, num_classes=10)
    h, w = (size, size) if isinstance(size, int) else size
    assert model(torch.randn(2, channels, h, w)).shape == (2, 10)


def test_small_cnn_parameter_count():
    model = small_cnn(width=16)
    # conv 1->16: 144+16, conv 16->32: 4608+32, fc 32*4*4->64: 32768+64, fc 64->10: 640+10
    assert sum(p.numel() for p in model.parameters()) == 160 + 4640 + 32832 + 650
    assert model.classifier[0].in_features == 32 * 4 * 4


def test_second_block_and_bottleneck():
    model = small_cnn(image_size=28, blocks=2, bottleneck=8)
    # features: conv 1->16, conv 16->32, pool, conv 32->32, pool, 1x1 conv 32->8
    assert model.features(torch.zeros(2, 1, 28, 28)).shape == (2, 8, 7, 7)
    assert model.classifier[0].in_features == 8 * 7 * 7
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert small_cnn(image_size=(8, 4), blocks=2).features(torch.zeros(1, 1, 8, 4)).shape == (1, 32, 2, 1)
    conv_params = 160 + 4640 + (9216 + 32) + (256 + 8)
    assert sum(p.numel() for p in model.features.parameters()) == conv_params
    assert small_cnn(hidden=100).classifier[2].in_features == 100


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"in_channels": 0}, "in_channels"),
        ({"image_size": 1}, "image_size"),
        ({"image_size": (8, 1)}, "image_size"),
        ({"image_size": (8, 8, 8)}, "image_size"),
        ({"num_classes": 0}, "num_classes"),
        ({"width": -2}, "width"),
        ({"blocks": 3}, "blocks"),
        ({"blocks": 2, "image_size": 3}, "image_size"),
        ({"bottleneck": -1}, "bottleneck"),
        ({"bottleneck": True}, "bottleneck"),
        ({"hidden": 0}, "hidden"),
    ],
)
def test_small_cnn_rejects_bad_arguments(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        small_cnn(**kwargs)


@pytest.fixture
def one_thread():
    """Tiny ops train faster, and steadier on a busy machine, without intra-op threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_small_cnn_learns_digits(one_thread):
    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    x_train, x_test, y_train, y_test = train_test_split(x, torch.tensor(y), test_size=0.25, random_state=0)
    model = small_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(4):
        for idx in torch.randperm(len(x_train)).split(32):
            optimizer.zero_grad()
            F.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy > 0.95
