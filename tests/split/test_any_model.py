"""Any ``nn.Module`` cut by module name trains exactly like the uncut model, and gives it back."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from splitlearn.data.dataset import ArrayDataset
from splitlearn.split import CutError, OptimizerSpec, configs, split_model
from splitlearn.split.segments import check_segments
from splitlearn.split.simulation import Simulation

TOL = 1e-6
STEPS = 20
BATCH = 4
SHAPE = (1, 32, 32)


class Block(nn.Module):
    """A residual block whose one ReLU instance runs twice."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.act = nn.ReLU()

    def forward(self, x):
        h = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(h)) + x)


class Net(nn.Module):
    """Custom forward; an in-place ReLU right after the ``stem`` cut; the batch size read once at
    the top and used after the cut."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8))
        self.relu = nn.ReLU(inplace=True)
        self.block = Block(8)
        self.head = nn.Linear(8 * 4, 10)

    def forward(self, x):
        b = x.shape[0]
        x = self.relu(self.stem(x))
        x = self.block(x)
        return self.head(F.adaptive_avg_pool2d(x, 2).view(b, -1))


class ShapeBranch(Net):
    """torch.fx cannot trace this forward (an ``if`` on the input's rank) and it branches on
    self.training: the split falls back to torch.export, one graph per mode."""

    def forward(self, x):
        if x.dim() == 3:
            x = x.unsqueeze(1)
        x = self.relu(self.stem(x))
        x = self.block(x) * (0.5 if self.training else 1.0)
        return self.head(F.adaptive_avg_pool2d(x, 2).flatten(1))


def _monai(name):
    nets = pytest.importorskip("monai.networks.nets")
    if name == "densenet121":
        return nets.DenseNet121(spatial_dims=2, in_channels=1, out_channels=10)
    return nets.resnet18(spatial_dims=2, n_input_channels=1, num_classes=10)


CASES = [
    ("custom", "vanilla", "stem"),
    ("custom", "ushaped", ["stem", "block"]),
    ("export", "vanilla", "stem"),
    ("export", "ushaped", ["stem", "block"]),
    ("densenet121", "vanilla", "features.denseblock2"),
    ("densenet121", "ushaped", ["features.denseblock2", "features.norm5"]),
    ("resnet18", "vanilla", "layer2"),
    ("resnet18", "ushaped", ["layer2", "layer4"]),
]


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(STEPS * BATCH + 8, *SHAPE, generator=g)
    y = torch.randint(0, 10, (len(x),), generator=g)
    n = STEPS * BATCH
    return x, y, ArrayDataset(x[:n], y[:n], torch.arange(n)), ArrayDataset(x[n:], y[n:], torch.arange(n, len(x)))


def _build(name):
    torch.manual_seed(1)
    return {"custom": Net, "export": ShapeBranch}[name]() if name in ("custom", "export") else _monai(name)


@pytest.mark.parametrize(("name", "kind", "cut"), CASES, ids=[f"{n}-{k}" for n, k, _ in CASES])
def test_split_trains_like_the_model_and_gives_it_back(name, kind, cut, tmp_path):
    model = _build(name)
    reference, initial = copy.deepcopy(model), copy.deepcopy(model.state_dict())
    x, y, train, test = _data()
    spec = OptimizerSpec("sgd", lr=0.05, momentum=0.9)
    sim = Simulation(configs.CONFIGURATIONS[kind](model, cut, in_shape=SHAPE), train=train, test=test,
                     optimizer=spec, batch_size=BATCH, clients=1)
    batches = [b.sample_ids for b in sim.coordinator.schedule(1)]
    assert len(batches) == STEPS
    sim.fit(1)

    opt = spec.build(reference.parameters())
    reference.train()
    for ids in batches:
        loss = F.cross_entropy(reference(x[ids]), y[ids])
        opt.zero_grad()
        loss.backward()
        opt.step()

    trained = sim.state_dict()
    assert set(trained) == set(reference.state_dict())
    assert {p.name for p in sim.save_weights(tmp_path).values()} == {"client.safetensors", "server.safetensors"}
    moved = max(float((trained[k] - v).abs().max()) for k, v in initial.items() if v.is_floating_point())
    assert moved > 1e-3  # it really trained
    for k, v in reference.state_dict().items():
        assert torch.allclose(trained[k].to(v.dtype), v, rtol=0, atol=TOL), k  # weights, BN statistics, counters

    restored = _build(name)
    restored.load_state_dict(trained)
    restored.eval()
    reference.eval()
    outputs, _ = sim.predict("test")
    ids, logits = outputs["y"]
    with torch.no_grad():
        torch.testing.assert_close(logits, restored(x[ids]), rtol=0, atol=1e-5)
        torch.testing.assert_close(restored(x[ids]), reference(x[ids]), rtol=0, atol=1e-5)


def test_state_dict_names_what_it_cannot_gather():
    split = configs.vanilla(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), 1)
    split.source = None
    g = torch.Generator().manual_seed(0)
    data = ArrayDataset(torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g), torch.arange(8))
    sim = Simulation(split, train=data, clients=1)
    with pytest.raises(ValueError, match="without its source model"):
        sim.state_dict()


def test_sequential_state_dict_uses_the_models_keys():
    model = nn.Sequential(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), nn.Linear(3, 2))
    g = torch.Generator().manual_seed(0)
    data = ArrayDataset(torch.randn(16, 4, generator=g), torch.randint(0, 2, (16,), generator=g), torch.arange(16))
    sim = Simulation(configs.vanilla(model, "0"), train=data, clients=3, batch_size=4)
    sim.fit(1)  # round robin: the client segment has moved on to copies held by other clients
    fresh = nn.Sequential(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), nn.Linear(3, 2))
    fresh.load_state_dict(sim.state_dict())
    holder = next(p for p in sim.parties.values() if p.role == "client" and p.modules)
    torch.testing.assert_close(fresh[0][0].weight, holder.modules["client"][0].weight, rtol=0, atol=0)


def test_reused_instance_runs_at_every_place():
    r = nn.ReLU()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), r, nn.Linear(4, 4), r)
    client, server = split_model(model, 1, in_shape=(4,))
    x = torch.randn(6, 4) * 3
    assert len(server) == 3  # the shared ReLU closes the server's segment too
    torch.testing.assert_close(server(client(x)), model(x), rtol=0, atol=0)


def test_inplace_relu_right_after_the_cut_trains():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 2))
    reference = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    data = ArrayDataset(torch.randn(16, 4, generator=g), torch.randint(0, 2, (16,), generator=g), torch.arange(16))
    sim = Simulation(configs.vanilla(model, 1, in_shape=(4,)), train=data, clients=1, batch_size=4)
    batches = [b.sample_ids for b in sim.coordinator.schedule(1)]
    sim.fit(1)
    opt = OptimizerSpec().build(reference.parameters())
    for ids in batches:
        loss = F.cross_entropy(reference(data.features[ids]), data.labels[ids])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.testing.assert_close(model[2].weight, reference[2].weight, rtol=0, atol=TOL)
    torch.testing.assert_close(model[0].weight, reference[0].weight, rtol=0, atol=TOL)


def test_two_tensors_over_a_cut_are_refused_by_name():
    with pytest.raises(CutError) as err:
        split_model(Net(), "block.conv1", in_shape=SHAPE)
    msg = str(err.value)
    assert "2 tensors cross it" in msg and "'relu'" in msg and "'block_conv1'" in msg
    assert msg.endswith("before and after it: 'relu', 'block'")  # the nearest single-tensor cuts, before and after


@pytest.mark.parametrize("model", [Net, ShapeBranch])
def test_batch_size_is_rederived_after_the_cut(model):
    client, server = split_model(model().eval(), "stem", in_shape=SHAPE)
    for n in (1, 5):
        x = torch.randn(n, *SHAPE)
        assert server(client(x)).shape == (n, 10)


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        if h.sum() > 0:  # data-dependent control flow
            h = -h
        return self.b(h)


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


@pytest.mark.parametrize(("model", "cut", "message"), [
    (Branchy(), "a", r"^cannot cut Branchy: torch.fx cannot trace its forward \(.*\); this usually means Python "
                     r"control flow on tensor values .*, and torch.export cannot capture it either"),
    (Tied(), "a", r"'(a|b)\.weight' of Tied is used both before and after cut 'a'"),
    (Net(), "block.conv", r"names no module of Net; close names: block.conv2, block.conv1"),
    (Net(), "head", r"is the end of Net"),
    (Net(), ["block", "stem"], r"forward order"),
    (Net(), 2, r"must be a module name of Net"),
])
def test_bad_graph_cuts_get_one_line_errors(model, cut, message):
    with pytest.raises(CutError, match=message) as err:
        split_model(model, cut, in_shape=(4,) if not isinstance(model, Net) else SHAPE)
    assert "\n" not in str(err.value)


def test_a_fault_deep_in_a_segment_names_the_layer_not_the_cut():
    # The cut fits (8 channels in, 8 out); the server forgot its flatten before the Linear.
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(CutError, match=r"^layer '4' \(Linear\) in segment 1 failed on input of shape \(2, 8, 4, 4\)") as err:
        split_model(model, 2, in_shape=(1, 8, 8))
    assert "do not fit" not in str(err.value)


def test_untraceable_without_in_shape_says_what_to_give():
    with pytest.raises(CutError, match="give in_shape so torch.export can try"):
        split_model(ShapeBranch(), "stem")


def test_check_compares_gradients_and_names_the_piece():
    torch.manual_seed(0)
    model = Net()
    client, server = split_model(model, "stem")
    server.head = nn.Linear(8 * 4, 10)  # a server whose weights are not the model's
    from splitlearn.split.segments import check_equivalence

    with pytest.raises(CutError, match="not exact"):
        check_equivalence(model, [client, server], SHAPE)


def test_check_leaves_batchnorm_statistics_and_grads_alone():
    model = Net()
    before = copy.deepcopy(model.state_dict())
    split_model(model, "stem", in_shape=SHAPE)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert model.training


def test_check_segments_still_names_a_misfit_at_the_cut():
    with pytest.raises(CutError, match="segments do not fit at cut '1'"):
        check_segments([nn.Sequential(nn.Flatten(), nn.Linear(64, 12)), nn.Sequential(nn.Linear(10, 3))], (1, 8, 8), cut_names=["1"])


class Trunk(nn.Module):
    """Net without its head: a graph trunk for multi-task heads."""

    def __init__(self) -> None:
        super().__init__()
        self.net = Net()

    def forward(self, x):
        n = self.net
        return F.adaptive_avg_pool2d(n.block(n.relu(n.stem(x))), 2).flatten(1)


@pytest.mark.parametrize("kind", ["multihop", "multitask"])
def test_graph_models_in_multihop_and_multitask_match_centralised(kind):
    from .conftest import centralised

    torch.manual_seed(2)
    x, y, train, test = _data()
    if kind == "multihop":
        model = Net()
        split = configs.multihop(model, ["stem", "block"], in_shape=SHAPE)
        targets = [(1.0, lambda i: y[i])]
    else:
        model = configs.MultiHead(Trunk(), {"label": nn.Linear(32, 10), "odd": nn.Linear(32, 2)})
        split = configs.multitask(model, "net.stem", in_shape=SHAPE, weights={"label": 1.0, "odd": 0.5})
        targets = [(1.0, lambda i: y[i]), (0.5, lambda i: y[i] % 2)]
    reference = copy.deepcopy(model)
    spec = OptimizerSpec("sgd", lr=0.05, momentum=0.9)
    sim_targets = None if kind == "multihop" else {"label": lambda t: t, "odd": lambda t: t % 2}
    sim = Simulation(split, train=train, test=test, optimizer=spec, batch_size=BATCH, clients=1, targets=sim_targets)
    batches = [b.sample_ids for b in sim.coordinator.schedule(1)]
    sim.fit(1)
    ref, _ = centralised(reference.train(), spec, batches, x, targets)
    trained = sim.state_dict()
    for k, v in ref.state_dict().items():
        assert torch.allclose(trained[k].to(v.dtype), v, rtol=0, atol=TOL), k


class TwoOutputs(Net):
    def forward(self, x):
        return {"logits": super().forward(x)}


def test_a_model_returning_a_dict_is_refused_in_one_line():
    with pytest.raises(CutError, match=r"TwoOutputs's forward returns dict, not a tensor"):
        split_model(TwoOutputs(), "stem", in_shape=SHAPE)
