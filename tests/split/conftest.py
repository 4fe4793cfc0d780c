import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from splitlearn.data.dataset import ArrayDataset


@pytest.fixture
def tabular():
    """200 seeded samples of 10 features, 3 classes; 160 train / 40 test with disjoint ids."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 10, generator=g)
    y = (x[:, :3].argmax(1) + (x[:, 5] > 1).long()) % 3
    return ArrayDataset(x[:160], y[:160], torch.arange(160)), ArrayDataset(x[160:], y[160:], torch.arange(160, 200))


def mlp(seed: int = 1) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))


def centralised(model, spec, batches, x, targets):
    """Train the unsplit ``model`` over ``batches`` (sample-id tensors indexing ``x``)."""
    model = copy.deepcopy(model)
    opt = spec.build(model.parameters())
    losses = []
    for ids in batches:
        out = model(x[ids])
        outs = out if isinstance(out, tuple) else (out,)
        loss = sum(w * F.cross_entropy(o, f(ids)) for o, (w, f) in zip(outs, targets))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return model, losses
