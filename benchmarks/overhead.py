"""Time per training step: in-process split training / centralised training of the same network.

Both run side by side in one process on the same synthetic 32x32x3 batches (batch 64), same
optimiser, same batch order; the centralised loop gathers its batch by sample id as the client
does. Rounds alternate which goes first so drift in machine load hits both alike, and the ratio
is the median over rounds of each round's split / centralised time (its quartiles show the
spread): a paired ratio, so a round in which the machine was slow for both cancels out. Target:
<= 1.05.

On CPU, glibc's malloc hands large freed blocks back to the kernel and page-faults them in again
on the next allocation; how often depends on the order in which tensors are freed, which differs
between one backward pass and two, and that noise (10-20 % either way) swamps the engine's own
cost. So by default the script re-runs itself with glibc told to keep freed memory
(MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_, applied to both arms alike); pass
``--allocator default`` to measure with the stock settings.

    python benchmarks/overhead.py [--steps 10] [--rounds 20] [--device cpu] [--models small_cnn,vgg11,densenet121]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from splitlearn.data.dataset import ArrayDataset
from splitlearn.models import build_model, flatten_layers
from splitlearn.split import OptimizerSpec, configs
from splitlearn.split.simulation import Simulation

_KEEP_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": 2**28, "MALLOC_TRIM_THRESHOLD_": 2**30, "MALLOC_TOP_PAD_": 2**28}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model(name: str):
    """A built-in nn.Sequential cut a third of the way in, or MONAI's DenseNet121 (a graph model,
    cut by module name after its second dense block)."""
    if name == "densenet121":
        from monai.networks.nets import DenseNet121

        return DenseNet121(spatial_dims=2, in_channels=3, out_channels=10), "features.denseblock2"
    model = build_model(name, in_shape=(3, 32, 32), num_classes=10)
    return model, [len(flatten_layers(model)) // 3]


def measure(name: str, *, steps: int, rounds: int, device: torch.device, batch: int = 64) -> tuple[list[float], list[float]]:
    """Per-step seconds of each timed round: split, centralised (round by round)."""
    torch.manual_seed(0)
    n = steps * batch
    data = ArrayDataset(torch.rand(n, 3, 32, 32), torch.randint(0, 10, (n,)))
    model, cut = _model(name)
    reference = copy.deepcopy(model).to(device)
    spec = OptimizerSpec("sgd", lr=0.01, momentum=0.9)
    sim = Simulation(configs.vanilla(model, cut, in_shape=(3, 32, 32)), train=data, optimizer=spec, batch_size=batch, device=device)
    opt = spec.build(reference.parameters())
    x_all, y_all = data.features, data.labels

    def centralised_epoch(epoch: int) -> None:
        for b in sim.coordinator.schedule(epoch):
            x, y = x_all[b.sample_ids].to(device), y_all[b.sample_ids].to(device)
            loss = F.cross_entropy(reference(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def timed(run, epoch: int) -> float:
        _sync(device)
        start = time.perf_counter()
        run(epoch)
        _sync(device)
        return (time.perf_counter() - start) / steps

    split_times, central_times = [], []
    for r in range(rounds + 1):  # round 0 warms up both
        # Alternate which goes first so order effects (caches, allocator) cancel out.
        if r % 2:
            s, c = timed(sim.coordinator.train_epoch, r + 1), timed(centralised_epoch, r + 1)
        else:
            c, s = timed(centralised_epoch, r + 1), timed(sim.coordinator.train_epoch, r + 1)
        if r:
            split_times.append(s)
            central_times.append(c)
    return split_times, central_times



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="steps per round")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="small_cnn,vgg11,densenet121",
                        help="comma-separated; densenet121 is MONAI's (pip install -e '.[monai]'), cut at features.denseblock2")
    parser.add_argument("--allocator", choices=["keep", "default"], default="keep",
                        help="keep: glibc keeps freed memory (default); default: stock malloc settings")
    args = parser.parse_args()
    if args.allocator == "keep" and os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        env = os.environ | {k: str(v) for k, v in _KEEP_FREED_MEMORY.items()}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    device = torch.device(args.device)
    alloc = "glibc keeps freed memory" if os.environ.get("MALLOC_MMAP_THRESHOLD_") else "stock glibc malloc"
    print(f"device {device}, batch 64, 32x32x3 inputs, {args.rounds} rounds of {args.steps} steps, {alloc}")
    print(f"{'model':<12} {'split ms':>9} {'central ms':>11} {'ratio':>7}  {'quartiles':>13}")
    for name in args.models.split(","):
        split_t, central_t = measure(name, steps=args.steps, rounds=args.rounds, device=device)
        q1, ratio, q3 = statistics.quantiles([s / c for s, c in zip(split_t, central_t, strict=True)], n=4)
        print(f"{name:<12} {statistics.median(split_t) * 1e3:>9.2f} {statistics.median(central_t) * 1e3:>11.2f} "
              f"{ratio:>7.3f}  {q1:.3f}-{q3:.3f}")


if __name__ == "__main__":
    main()
