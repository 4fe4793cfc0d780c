"""The split learning talk's efficiency tables, recomputed from our model definitions.

FLOPs are counted by :class:`~torch.utils.flop_counter.FlopCounterMode` (a multiply-add is 2
FLOPs; element-wise ops, norms and the loss count 0) on one forward and backward of a small batch
on the meta device, divided by the batch. Sizes come from meta tensors. Everything else is
scaled analytically: per-client figures are per-sample costs x samples per client x epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from splitlearn.efficiency import comm_model
from splitlearn.models import ALEXNET_TABLE, alexnet_parameter_table, build_model
from splitlearn.models.alexnet import LayerRow
from splitlearn.split.segments import split_model

__all__ = [
    "TALK_RATIO",
    "Profile",
    "Row",
    "TalkTable",
    "alexnet_rows",
    "bandwidth_table",
    "compute_table",
    "profile",
    "training_flops",
]

TRAIN_IMAGES = 50_000  # CIFAR-10 and CIFAR-100 training sets
CLIENTS = (100, 500)
TFLOP, GB, BYTES_PER_VALUE = 1e12, 1e9, 4
SGD, FL, SPLIT = "Large-scale SGD", "Federated learning", "SplitNN"
TALK_TABLE1 = {SGD: (29.4, 5.89), FL: (29.4, 5.89), SPLIT: (0.1548, 0.03)}  # TFLOPs per client
TALK_TABLE2 = {SGD: (13.0, 14.0), FL: (3.0, 2.4), SPLIT: (6.0, 1.2)}  # GB per client
TALK_RATIO = TALK_TABLE1[FL][0] / TALK_TABLE1[SPLIT][0]  # FL over SplitNN client compute, 100 clients


@dataclass(frozen=True)
class Profile:
    """Per-sample costs of ``model`` cut once after layer ``cut``."""

    model: str
    cut: str
    in_shape: tuple[int, int, int]
    num_classes: int
    flops_model: float  # training FLOPs (forward + backward) of the whole model per sample
    flops_client: float  # the same for the client segment (the layers up to the cut)
    cut_values: int  # q: values of the cut layer's activation per sample
    params_model: int  # N
    params_client: int

    @property
    def eta(self) -> float:
        """Fraction of the parameters in the client segment."""
        return self.params_client / self.params_model


@dataclass(frozen=True)
class Row:
    """One method: the talk's and our per-client figures (one per client count) and why they differ."""

    method: str
    talk: tuple[float, ...]
    ours: tuple[float, ...]
    note: str


@dataclass(frozen=True)
class TalkTable:
    """A talk table recomputed, with the assumptions behind our figures."""

    title: str
    unit: str
    clients: tuple[int, ...]
    rows: tuple[Row, ...]
    assumptions: tuple[str, ...]


def training_flops(module: nn.Module, in_shape: tuple[int, ...], *, batch: int = 2) -> float:
    """FLOPs of one forward and backward (of the outputs' sum) of ``module`` per sample, measured
    on ``batch`` samples on the module's device (meta modules cost no compute). The input needs
    no gradient, as for a first segment."""
    device = next(module.parameters()).device
    x = torch.zeros(batch, *in_shape, device=device)
    with FlopCounterMode(display=False) as counter:
        module(x).sum().backward()
    return counter.get_total_flops() / batch


def profile(model: str, *, in_shape: tuple[int, int, int], num_classes: int, cut: str, batch: int = 2) -> Profile:
    """Build ``model`` on the meta device, cut it after layer ``cut`` and measure its per-sample costs."""
    with torch.device("meta"):
        net = build_model(model, in_shape=in_shape, num_classes=num_classes)
    client, _ = split_model(net, cut)
    with torch.no_grad():
        q = client(torch.zeros(1, *in_shape, device="meta")).numel()
    return Profile(
        model=model,
        cut=cut,
        in_shape=in_shape,
        num_classes=num_classes,
        flops_model=training_flops(net, in_shape, batch=batch),
        flops_client=training_flops(client, in_shape, batch=batch),
        cut_values=q,
        params_model=sum(p.numel() for p in net.parameters()),
        params_client=sum(p.numel() for p in client.parameters()),
    )


def _shape(prof: Profile) -> str:
    return "x".join(map(str, prof.in_shape))


def compute_table(
    prof: Profile, *, epochs: int, clients: tuple[int, ...] = CLIENTS, images: int = TRAIN_IMAGES
) -> TalkTable:
    """Table 1: TFLOPs per client to train ``prof`` for ``epochs`` on ``images`` split evenly over K clients.

    SGD and FL clients run the whole model forward and backward on their images; SplitNN clients
    only the client segment.
    """
    per_client = [images / k for k in clients]
    full = tuple(prof.flops_model * n * epochs / TFLOP for n in per_client)
    split = tuple(prof.flops_client * n * epochs / TFLOP for n in per_client)
    epoch_full, epoch_split = prof.flops_model * per_client[0] / TFLOP, prof.flops_client * per_client[0] / TFLOP
    talk_epochs = TALK_TABLE1[SGD][0] / epoch_full
    rows = (
        Row(SGD, TALK_TABLE1[SGD], full,
            f"Each client trains the whole model on its images: {prof.flops_model / 1e9:.3f} GFLOPs per image "
            f"x {per_client[0]:,.0f} images = {epoch_full:.3f} TFLOPs per epoch at {clients[0]} clients; the talk's "
            f"{TALK_TABLE1[SGD][0]} TFLOPs equals {talk_epochs:.1f} of our epochs. Both scale as 1/K "
            f"(talk: {TALK_TABLE1[SGD][0] / TALK_TABLE1[SGD][1]:.2f}x, ours: {full[0] / full[1]:.2f}x)."),
        Row(FL, TALK_TABLE1[FL], full,
            "Same local work as SGD (FedAvg's averaging is element-wise, 0 FLOPs in our count); the talk "
            "also lists the same figures for both."),
        Row(SPLIT, TALK_TABLE1[SPLIT], split,
            f"Only the layers up to {prof.cut}: {prof.flops_client / 1e9:.4f} GFLOPs per image, "
            f"{epoch_split:.4f} TFLOPs per epoch at {clients[0]} clients; the talk's {TALK_TABLE1[SPLIT][0]} equals "
            f"{TALK_TABLE1[SPLIT][0] / epoch_split:.1f} of our epochs against {talk_epochs:.1f} for the full model, "
            f"so the talk's client segment is a {TALK_RATIO / (prof.flops_model / prof.flops_client):.0f}x smaller "
            f"share of the model than ours (see the ratio)."),
    )
    assumptions = (
        f"Model: our CIFAR-style {prof.model} ({prof.params_model:,} parameters) on {_shape(prof)} inputs, "
        f"{prof.num_classes} classes, no batch norm; the talk says only 'VGG'.",
        f"Cut after layer {prof.cut} (output {prof.cut_values:,} values per image); client segment "
        f"{prof.params_client:,} parameters.",
        f"{images:,} training images split evenly: "
        + ", ".join(f"{images / k:,.0f} per client at K={k}" for k in clients) + ".",
        f"{epochs} epochs (the talk states none; every figure is linear in epochs, e.g. at K={clients[0]} "
        f"SGD/FL {epoch_full:.3f} and SplitNN {epoch_split:.4f} TFLOPs per epoch).",
        "FLOPs as FlopCounterMode counts them: forward + backward per image, a multiply-add = 2 FLOPs, "
        "element-wise ops and the loss 0; the first layer computes no input gradient. 1 TFLOP = 1e12 FLOPs.",
    )
    return TalkTable("Table 1: compute per client, CIFAR-10 over VGG", "TFLOPs", clients, rows, assumptions)


def bandwidth_table(
    prof: Profile,
    *,
    epochs: int,
    batch_size: int = 64,
    clients: tuple[int, ...] = CLIENTS,
    images: int = TRAIN_IMAGES,
) -> TalkTable:
    """Table 2: GB per client over ``epochs`` (one FL round per epoch), float32 values.

    SGD: every local batch uploads a gradient and downloads the weights (2 N values per step).
    FL: 2 N per round. SplitNN: 2 q per image (smashed data up, gradients down) plus the client
    segment relayed once per epoch (eta N), per :mod:`splitlearn.efficiency.comm_model`.
    """
    n, q, eta = prof.params_model, prof.cut_values, prof.eta
    per_client = [images / k for k in clients]
    steps = [math.ceil(m / batch_size) for m in per_client]
    scale = BYTES_PER_VALUE * epochs / GB
    sgd = tuple(s * 2 * n * scale for s in steps)
    fl = tuple(comm_model.fl_per_client(n=n) * scale for _ in clients)
    split = tuple(comm_model.sl_per_client(p=images, k=k, q=q, n=n, eta=eta) * scale for k in clients)
    k_star = comm_model.crossover(p=images, q=q, n=n, eta=eta)
    rows = (
        Row(SGD, TALK_TABLE2[SGD], sgd,
            f"Ours follows each client's own batches ({', '.join(map(str, steps))} steps per epoch), so it falls "
            f"with K; the talk's rises slightly, as when every client exchanges the model at every global step "
            f"of a synchronous job whatever its share of the data. Each step moves 2 N x 4 bytes = "
            f"{2 * n * BYTES_PER_VALUE / GB:.3f} GB; ours is {sgd[0] / TALK_TABLE2[SGD][0]:.1f}x the talk's at "
            f"K={clients[0]} and {sgd[1] / TALK_TABLE2[SGD][1]:.1f}x at K={clients[1]}."),
        Row(FL, TALK_TABLE2[FL], fl,
            f"2 N x 4 bytes = {2 * n * BYTES_PER_VALUE / GB:.3f} GB per round, independent of K; the talk's "
            f"{TALK_TABLE2[FL][0]} GB equals {TALK_TABLE2[FL][0] * GB / (2 * n * BYTES_PER_VALUE):.1f} rounds (ours: "
            f"{epochs}), and its drop at {clients[1]} clients implies fewer rounds or partial participation there."),
        Row(SPLIT, TALK_TABLE2[SPLIT], split,
            f"2 q x 4 bytes = {2 * q * BYTES_PER_VALUE / 1e6:.3f} MB per image plus a "
            f"{eta * n * BYTES_PER_VALUE / 1e6:.3f} MB relay per epoch; it scales as 1/K like the talk's "
            f"({TALK_TABLE2[SPLIT][0] / TALK_TABLE2[SPLIT][1]:.1f}x, "
            f"ours {split[0] / split[1]:.1f}x). The level is set by the cut: a later cut has a larger q. SplitNN "
            f"beats FL above K* = {k_star:,.0f} clients (talk: between {clients[0]} and {clients[1]})."),
    )
    assumptions = (
        f"Model: our CIFAR-style {prof.model} (3x3 stem, no max-pool; {n:,} parameters) on {_shape(prof)} "
        f"inputs, {prof.num_classes} classes.",
        f"Cut after layer {prof.cut}: q = {q:,} values per image; the client segment holds {prof.params_client:,} "
        f"parameters (eta = {eta:.2e}).",
        f"{images:,} training images split evenly; SGD batch size {batch_size} (a partial last batch is a step).",
        f"{epochs} epochs, one FL round per epoch (the talk states neither; every figure is linear in them).",
        "4 bytes per value (float32), 1 GB = 1e9 bytes; only tensors counted, no message framing; "
        "SplitNN relay: each client receives the client segment once per epoch (peer to peer).",
    )
    return TalkTable("Table 2: bandwidth per client, CIFAR-100 over ResNet-50", "GB", clients, rows, assumptions)


def alexnet_rows() -> list[tuple[LayerRow, LayerRow]]:
    """(talk row, our row) pairs of AlexNet's parameter distribution; ours measured on a meta model."""
    return list(zip(ALEXNET_TABLE, alexnet_parameter_table(), strict=True))
