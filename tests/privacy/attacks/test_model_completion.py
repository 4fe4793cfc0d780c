"""Model completion (Fu et al. 2022): a party without labels but with a trained bottom model and
10 labelled samples per class infers the other labels far above chance, and at chance when the
labels are random or the bottom outputs are shuffled."""

import pytest
import torch
from torch import nn

from splitlearn.data import load_breast_cancer, load_digits
from splitlearn.privacy.attacks.model_completion import complete_model, labelled_handful, model_completion_attack
from splitlearn.privacy.attacks.reconstruction import ActivationRecorder
from splitlearn.split import OptimizerSpec, Vertical, configs
from splitlearn.split.simulation import Simulation

PER_CLASS = 10


def _rest(n: int, known: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(n, dtype=torch.bool)
    mask[known] = False
    return mask


@pytest.fixture(scope="module")
def vertical_client():
    """Breast cancer split vertically over two clients (15 features each) and a server holding
    the labels, trained 2 epochs. The attacker is client1: its trained bottom model's outputs on
    its own training features, and the true labels (to pick its handful and to score it)."""
    train, _ = load_breast_cancer()
    torch.manual_seed(1)
    model = Vertical([nn.Linear(15, 8), nn.Linear(15, 8)], nn.Sequential(nn.ReLU(), nn.Linear(16, 2)))
    sim = Simulation(configs.vertical(model, in_shape=(30,)), train=train, clients=2, batch_size=32)
    sim.fit(2)
    party = sim.parties["client1"]
    shard = party.shards["train"]
    with torch.no_grad():
        z = party.modules["client1"](shard.features)
    label_of = dict(zip(train.sample_ids.tolist(), train.labels.tolist()))
    return z, torch.tensor([label_of[i] for i in shard.sample_ids.tolist()])


@pytest.fixture(scope="module")
def ushaped_server():
    """Digits, U-shaped MLP (client: 64->32, server: 32->16, client: 16->10), 5 epochs of Adam.
    The attacker is the server: its own middle segment's outputs on the smashed data of the
    training images (recorded in one pass over them), and their true labels."""
    train, _ = load_digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))
    sim = Simulation(configs.ushaped(model, [3, 5], in_shape=(1, 8, 8)), train=train, batch_size=32,
                     optimizer=OptimizerSpec("adam", lr=3e-3))
    sim.fit(5)
    recorder = ActivationRecorder("server")
    sim.transport.observers.append(recorder)
    sim.evaluate("train")
    ids, smashed = recorder.smashed()
    with torch.no_grad():
        z = sim.parties["server"].modules["server/body"](smashed)
    label_of = dict(zip(train.sample_ids.tolist(), train.labels.tolist()))
    return z, torch.tensor([label_of[i] for i in ids.tolist()])


def _attack(z, y, *, seed=0, truth=None):
    truth = y if truth is None else truth
    known = labelled_handful(truth, PER_CLASS, seed=seed)
    rest = _rest(len(truth), known)
    return model_completion_attack(z[known], truth[known], z[rest], int(y.max()) + 1, unknown_y=truth[rest], seed=seed)


def test_vertical_client_completes_the_model_from_20_labels(vertical_client):
    z, y = vertical_client
    result = _attack(z, y)
    # Measured (seed 0): accuracy 0.826 and AUC 0.958 on the 436 other samples; chance 0.5, the
    # largest class 0.633. Seeds 1 and 2 gave 0.938/0.981 and 0.876/0.943. (The same top model on
    # client1's 15 raw features scores about as well, 0.814/0.943: on this set the client's own
    # features and 20 labels are the leak, and the trained bottom keeps it.)
    assert result.known == 2 * PER_CLASS and len(result.predictions) == len(y) - 2 * PER_CLASS
    assert result.chance == 0.5
    assert result.accuracy >= result.chance + 0.25 and result.accuracy >= result.majority + 0.1
    assert result.auc >= 0.9


def test_ushaped_server_completes_the_model_from_10_labels_per_class(ushaped_server):
    z, y = ushaped_server
    result = _attack(z, y)
    # Measured (seed 0): accuracy 0.907 on the 1,338 other images against chance 0.1 (seeds 1
    # and 2: 0.922, 0.882).
    assert result.chance == pytest.approx(0.1) and result.auc is None
    assert result.accuracy >= result.chance + 0.6
    assert result.probabilities.shape == (len(y) - 10 * PER_CLASS, 10)


def test_random_labels_leave_the_attack_at_chance(vertical_client, ushaped_server):
    """Labels drawn independently of the samples: nothing to learn, accuracy and AUC at chance."""
    g = torch.Generator().manual_seed(7)
    z, y = vertical_client
    result = _attack(z, y, truth=torch.randint(0, 2, y.shape, generator=g))
    assert abs(result.accuracy - 0.5) <= 0.1 and result.auc <= 0.6  # 4 standard errors at n=436; measured 0.507, 0.515
    z, y = ushaped_server
    result = _attack(z, y, truth=torch.randint(0, 10, y.shape, generator=g))
    assert abs(result.accuracy - 0.1) <= 0.05  # 6 standard errors at n=1,338; measured 0.100


def test_shuffled_bottom_outputs_leave_the_attack_at_chance(ushaped_server):
    """Bottom outputs paired with other samples' labels (Z independent of Y)."""
    z, y = ushaped_server
    shuffled = z[torch.randperm(len(z), generator=torch.Generator().manual_seed(3))]
    assert abs(_attack(shuffled, y).accuracy - 0.1) <= 0.05  # measured 0.101


def test_labelled_handful_and_bad_input():
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    picked = labelled_handful(y, 2, seed=0)
    assert torch.bincount(y[picked]).tolist() == [2, 2, 1]  # class 2 has a single sample
    assert torch.equal(picked, labelled_handful(y, 2, seed=0))
    with pytest.raises(ValueError, match="per_class must be a positive int"):
        labelled_handful(y, 0)
    with pytest.raises(ValueError, match="at least 2 labelled samples"):
        complete_model(torch.rand(3, 4), torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        complete_model(torch.rand(2, 4), torch.tensor([0, 2]), 2)
    result = model_completion_attack(torch.rand(4, 3), torch.tensor([0, 1, 0, 1]), torch.rand(5, 3), 2)
    assert result.predictions.shape == (5,) and result.accuracy != result.accuracy and result.auc is None  # NaN unscored
