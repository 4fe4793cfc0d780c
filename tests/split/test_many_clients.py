"""Round robin at scale, and what crosses the wire: no weights but the relay, no copies in-process."""

import torch
from torch import nn

from splitlearn.data.dataset import ArrayDataset
from splitlearn.split import configs
from splitlearn.split.messages import Weights
from splitlearn.split.simulation import Simulation


def _params(sim):
    return [p for party in sim.parties.values() if party.modules for m in party.modules.values() for p in m.parameters()]


def test_500_clients_hold_one_copy_of_the_client_segment():
    g = torch.Generator().manual_seed(0)
    n = 1500
    data = ArrayDataset(torch.randn(n, 20, generator=g), torch.randint(0, 4, (n,), generator=g))
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4))
    client_numel = sum(p.numel() for p in model[:2].parameters())
    server_numel = sum(p.numel() for p in model[2:].parameters())
    sim = Simulation(configs.vanilla(model, [2]), train=data, clients=500, relay="server", batch_size=8)
    sim.fit(1)
    clients = [p for name, p in sim.parties.items() if name != "server"]
    assert len(clients) == 500 and all(len(p.shards["train"].sample_ids) == 3 for p in clients)
    # Exactly one client holds the segment (and its optimiser state) at any time: memory does not
    # grow with the number of clients.
    assert sum(p.holds_weights for p in clients) == 1
    assert sum(p.numel() for p in _params(sim)) == client_numel + server_numel
    # 499 relays, each through the server: client -> server -> next client.
    weights = [r for r in sim.log.records if r.kind == "Weights"]
    assert len(weights) == 2 * 499
    assert sim.parties["server"].holds_weights and not sim.parties["server"].shards


def test_only_the_relay_carries_weights_and_activations_are_not_copied(tabular):
    train, test = tabular
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    sim = Simulation(configs.vanilla(model, [2]), train=train, test=test, clients=3, batch_size=16)
    seen = []
    sim.transport.observers.append(lambda m: seen.append((m, [(p.data_ptr(), p.detach().clone()) for p in _params(sim)])))
    inputs = []
    sim.parties["server"].modules["server"][0].register_forward_pre_hook(lambda mod, args: inputs.append(args[0].data_ptr()))
    sim.fit(1)
    sim.predict()
    for message, params in seen:
        if isinstance(message, Weights):
            continue
        for t in message.tensors().values():
            for ptr, value in params:
                assert t.data_ptr() != ptr
                assert t.shape != value.shape or not torch.equal(t, value)
    # The server's segment ran on the very storage the client sent: passed by reference.
    sent = [m.tensor.data_ptr() for m, _ in seen if m.kind == "Activation" and m.receiver == "server"]
    assert sent == inputs
