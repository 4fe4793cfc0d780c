"""Feature-space hijacking (FSHA: Pasquini, Ateniese and Bernaschi 2021, "Unleashing the Tiger:
Inference Attacks on Split Learning", CCS '21), and a check the client can run against it, after
SplitGuard (Erdoğan, Küpçü and Çiçek 2022).

Threat model: a malicious server that the client trains with from the start. It sends whatever
gradient it likes back at the cut, and the client, following the protocol, applies it. The server
holds public data from the client's input domain (no private sample, no label, no input-output
pair of the client) and knows the shape of the smashed data. It trains three networks of its own:
a *pilot* that maps inputs to smashed data (by default a freshly initialised copy of the client's
architecture, which is agreed before training), an *inverse* that maps the pilot's outputs back
to inputs (the pair is an autoencoder on the public data), and a *discriminator* that tells the
pilot's outputs from the client's (a Wasserstein critic with a gradient penalty). The gradient it
sends the client is the one that makes the client's smashed data look like the pilot's, so the
client's segment learns to encode its inputs in the pilot's feature space, where the inverse
decodes them. The attack needs no label, so it works whether the client sends labels or not.
Success is measured on the victim's private inputs with MSE and SSIM.

The client's check: now and then, at random, the client sends a batch with random labels (a *fake
batch*) and does not apply its own update for it. An honest server computes the task's loss on
the labels it is sent, so the client's gradient for a fake batch points away from its gradients
for real ones. A hijacking server ignores the labels, so fake and real gradients look alike. The
client compares the cosine of each fake batch's gradient with the last real one against the
cosine of consecutive real batches; a difference near 0 means the labels do not matter to the
server, and the client stops. In a U-shaped split the client sends the gradient of its own top
loss instead of labels; a fake batch is the top loss on random labels, and the check is the same.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from splitlearn.privacy.attacks.inversion import fresh_surrogate
from splitlearn.privacy.attacks.reconstruction import ReconstructionResult, mlp_decoder, score_reconstruction
from splitlearn.split.compression import as_tensor
from splitlearn.split.messages import Activation, Gradient, Labels, Message

__all__ = ["FakeBatchCheck", "FakeBatchGuard", "HijackSuspected", "HijackingServer", "HijackingServerHooks", "HijackRun",
           "TaskServer", "guard_summary", "hijack"]


class HijackingServer:
    """The FSHA server. :meth:`gradient` is its answer to one batch of smashed data (the labels
    sent with it are ignored); each call also takes one training step of the pilot, the inverse
    and the critic on a batch of its public data. :meth:`reconstruct` decodes smashed data.

    ``public``: inputs from the client's domain, scaled like the client's (in ``[0, 1]``).
    ``pilot``: the network whose feature space the client is pushed into; by default a fresh copy
    of ``architecture`` (one of the two is needed)."""

    def __init__(self, public: torch.Tensor, z_shape: Sequence[int], *, architecture: nn.Module | None = None,
                 pilot: nn.Module | None = None, hidden: int = 512, lr: float = 1e-4, penalty: float = 10.0,
                 batch_size: int = 64, seed: int = 0) -> None:
        if (pilot is None) == (architecture is None):
            raise ValueError("give the pilot network, or the client's architecture to copy it from (one of the two)")
        if len(public) < 2:
            raise ValueError(f"the server needs public data to train its pilot on, got {len(public)} samples")
        self.public, self.penalty, self.batch_size = public, penalty, batch_size
        self.z_shape = tuple(int(d) for d in z_shape)
        d_z = int(torch.Size(self.z_shape).numel())
        device = public.device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.pilot = (pilot if pilot is not None else fresh_surrogate(architecture, seed=seed)).to(device).train()
            self.inverse = mlp_decoder(d_z, public.shape[1:], hidden=hidden).to(device)
            half = hidden // 2
            self.critic = nn.Sequential(nn.Flatten(), nn.Linear(d_z, half), nn.LeakyReLU(0.2), nn.Linear(half, half),
                                        nn.LeakyReLU(0.2), nn.Linear(half, 1)).to(device)
        out = self.pilot(public[:2]).shape[1:]
        if tuple(out) != self.z_shape:
            raise ValueError(f"the pilot maps inputs to {tuple(out)}, but the smashed data is {self.z_shape}")
        self._opt_ae = torch.optim.Adam([*self.pilot.parameters(), *self.inverse.parameters()], lr=lr)
        self._opt_critic = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self._g = torch.Generator().manual_seed(seed)

    def gradient(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The gradient at the cut sent back for smashed data ``z``: of the critic's score, so that
        the client's step makes its output look like the pilot's. ``labels`` are not used."""
        del labels
        z = z.detach()
        if tuple(z.shape[1:]) != self.z_shape:
            raise ValueError(f"smashed data of shape {tuple(z.shape[1:])}, expected {self.z_shape}")
        sent = z.requires_grad_()  # a detached copy of the caller's tensor object: its flag is ours
        (grad,) = torch.autograd.grad(-self.critic(sent).mean(), sent)
        self._train_step(z.detach())
        return grad

    def _train_step(self, client_z: torch.Tensor) -> None:
        idx = torch.randint(len(self.public), (self.batch_size,), generator=self._g).to(self.public.device)
        x = self.public[idx]
        pilot_z = self.pilot(x)
        loss = F.mse_loss(self.inverse(pilot_z), x)
        self._opt_ae.zero_grad()
        loss.backward()
        self._opt_ae.step()
        real, fake = pilot_z.detach(), client_z
        n = min(len(real), len(fake))
        real, fake = real[:n], fake[:n]
        mix = torch.rand(n, *([1] * (real.dim() - 1)), generator=self._g).to(real.device)
        between = (mix * real + (1 - mix) * fake).requires_grad_()
        (slope,) = torch.autograd.grad(self.critic(between).sum(), between, create_graph=True)
        gp = ((slope.flatten(1).norm(dim=1) - 1) ** 2).mean()
        loss = self.critic(fake).mean() - self.critic(real).mean() + self.penalty * gp
        self._opt_critic.zero_grad()
        loss.backward()
        self._opt_critic.step()

    @torch.no_grad()
    def reconstruct(self, z: torch.Tensor) -> torch.Tensor:
        """The inverse applied to smashed data: the attack's guess of the inputs."""
        return self.inverse(z.detach())


class TaskServer:
    """An honest server, for comparison: it trains ``top`` on the smashed data it receives with
    the cross-entropy of the labels sent with it, and returns the gradient at the cut."""

    def __init__(self, top: nn.Module, *, lr: float = 1e-3) -> None:
        self.top = top.train()
        self._opt = torch.optim.Adam(top.parameters(), lr=lr)

    def gradient(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None:
            raise ValueError("the honest server computes the loss from the labels sent with the smashed data; none were sent")
        sent = z.detach().requires_grad_()
        loss = F.cross_entropy(self.top(sent), labels)
        self._opt.zero_grad()
        loss.backward()
        self._opt.step()
        return sent.grad


@dataclass
class FakeBatchCheck:
    """The client's check (see the module's docstring). :meth:`fake` draws whether the next batch
    is a fake one; :meth:`observe` takes the client's gradient for each batch; :attr:`score` is
    the mean cosine of consecutive real gradients minus that of each fake gradient with the real
    one before it (near 0: the server ignores the labels; an honest server gives a large score);
    :attr:`hijacked` turns true once ``min_fakes`` fakes were seen and the score is below
    ``threshold``.

    The fakes' seed is the site's own secret in a deployment; a server that could predict them
    would answer them differently. So could one that remembers the labels each sample id came with
    in an earlier epoch: from the second epoch on it can tell a fake batch by its labels. The check
    catches the attack as published, not such an adaptive server."""

    probability: float = 0.1
    min_fakes: int = 5
    threshold: float = 0.2
    num_classes: int = 10
    seed: int = 0
    # running sums and counts of the cosines (constant memory over a long deployment)
    _real: list[float] = field(default_factory=lambda: [0.0, 0], repr=False)
    _fake: list[float] = field(default_factory=lambda: [0.0, 0], repr=False)
    _last: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.probability < 1:
            raise ValueError(f"the fake-batch probability must be in (0, 1), got {self.probability}")
        if isinstance(self.min_fakes, bool) or not isinstance(self.min_fakes, int) or self.min_fakes < 1:
            raise ValueError(f"min_fakes must be a positive int, got {self.min_fakes!r}")
        self._g = torch.Generator().manual_seed(self.seed)

    def fake(self) -> bool:
        """Whether the next batch is a fake one (never the first: a fake needs a real one before it)."""
        return self._last is not None and bool(torch.rand((), generator=self._g) < self.probability)

    def fake_labels(self, n: int) -> torch.Tensor:
        return torch.randint(self.num_classes, (n,), generator=self._g)

    def observe(self, grads: Sequence[torch.Tensor], *, fake: bool) -> None:
        flat = torch.cat([g.detach().flatten().float().cpu() for g in grads])
        if self._last is not None:
            totals = self._fake if fake else self._real
            totals[0] += float(F.cosine_similarity(flat, self._last, dim=0))
            totals[1] += 1
        if not fake:
            self._last = flat

    @property
    def fakes(self) -> int:
        return int(self._fake[1])

    @property
    def score(self) -> float:
        (real, n_real), (fake, n_fake) = self._real, self._fake
        return real / n_real - fake / n_fake if n_real and n_fake else float("nan")

    @property
    def hijacked(self) -> bool:
        return self.fakes >= self.min_fakes and self.score < self.threshold


@dataclass(frozen=True)
class HijackRun:
    """What :func:`hijack` found: the reconstruction of the client's held-out inputs at the end
    (``None`` against an honest server), the steps the client took, the step at which its check
    stopped it (``None``: never), the check's score, and per ``every`` steps a record of
    ``(step, SSIM or None, score)``."""

    result: ReconstructionResult | None
    steps: int
    stopped_at: int | None
    score: float
    history: list[tuple[int, float | None, float]]


def hijack(
    client: nn.Module,
    server: HijackingServer | TaskServer,
    private_x: torch.Tensor,
    private_y: torch.Tensor,
    victim_x: torch.Tensor,
    *,
    steps: int = 2000,
    batch_size: int = 64,
    lr: float = 1e-4,
    check: FakeBatchCheck | None = None,
    every: int = 100,
    seed: int = 0,
) -> HijackRun:
    """Train the client's segment ``client`` (Adam, ``lr``) on its private data ``(private_x,
    private_y)`` with ``server`` answering each batch of smashed data with a gradient at the cut.
    With ``check``, the client runs the fake-batch check and stops as soon as it says hijacked.
    A hijacking server's reconstruction of ``victim_x`` (held-out private inputs, never trained
    on) is scored every ``every`` steps and at the end."""
    for name, value in (("steps", steps), ("every", every), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if len(private_x) != len(private_y) or len(private_x) < 1:
        raise ValueError(f"need private inputs and as many labels, got {len(private_x)} and {len(private_y)}")
    opt = torch.optim.Adam(client.parameters(), lr=lr)
    client.train()
    g = torch.Generator().manual_seed(seed)
    attacking = isinstance(server, HijackingServer)
    history: list[tuple[int, float | None, float]] = []
    stopped = None

    def scored() -> ReconstructionResult | None:
        if not attacking:
            return None
        with torch.no_grad():
            was = client.training
            client.eval()
            recon = server.reconstruct(client(victim_x))
            client.train(was)
        return score_reconstruction(recon.cpu(), victim_x.cpu())

    step = 0
    while step < steps:
        idx = torch.randint(len(private_x), (batch_size,), generator=g).to(private_x.device)
        fake = check is not None and check.fake()
        labels = check.fake_labels(batch_size).to(private_y.device) if fake else private_y[idx]
        z = client(private_x[idx])
        opt.zero_grad()
        z.backward(server.gradient(z.detach(), labels))
        if check is not None:
            check.observe([p.grad for p in client.parameters() if p.grad is not None], fake=fake)
        if fake:  # the client keeps no update from a fake batch
            if check.hijacked:
                stopped = step
                break
            continue
        opt.step()
        step += 1
        if step % every == 0:
            result = scored()
            history.append((step, None if result is None else result.ssim, float("nan") if check is None else check.score))
    return HijackRun(scored(), step, stopped, float("nan") if check is None else check.score, history)


class HijackSuspected(RuntimeError):
    """The client's fake-batch check found that the server's gradients do not depend on the labels
    it is sent: the client stops training with it."""


class FakeBatchGuard:
    """The fake-batch check in a running split, as a client's hooks: ``outbox`` turns the labels of
    a random training step into random classes (a fake batch), ``inbox`` reads the gradient that
    comes back for every step, gives the client a zero gradient for a fake step (no information
    from a fake batch reaches its weights; its optimiser still takes the step, so momentum, Adam's
    moments, weight decay and a local penalty such as NoPeek's move it as on any step), and raises
    :class:`HijackSuspected` once the check says the labels make no difference to the server.

    For splits in which the client sends its class labels (vanilla; ``privacy.hijack_check`` turns it
    on there). In a U-shaped split the labels never leave the client, and the fake batch would have to
    be made inside its top segment.
    The statistic is the batch's mean cut gradient per true class, which the client sees whatever
    its model. On digits an honest server scored 0.9 to 1.1 after 10 fakes, a hijacking one within
    0.04 of 0, hence the threshold of 0.3. Fake batches cost the server a tenth of its steps and
    train it on random labels: at equal epochs accuracy trails by a few points early on. One guard
    serves every client of a round robin (each has its own check).

    >>> guard = FakeBatchGuard(num_classes=10, seed=0)
    >>> sim = Simulation(split, train=data, outbox={"client": guard.outbox}, inbox={"client": guard.inbox})  # doctest: +SKIP
    """

    def __init__(self, *, num_classes: int, probability: float = 0.1, min_fakes: int = 10, threshold: float = 0.3,
                 seed: int | None = None) -> None:
        self._options = dict(probability=probability, min_fakes=min_fakes, threshold=threshold, num_classes=num_classes)
        FakeBatchCheck(**self._options)  # refuses bad options now, not at the first batch
        self._seed = seed
        self.checks: dict[str, FakeBatchCheck] = {}
        # per client, its step in flight (a client has one): (step, fake, true labels of the first task)
        self._pending: dict[str, tuple[int, bool, torch.Tensor]] = {}

    def _by_class(self, grad: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The batch's mean cut gradient per true class (a row of zeros for a class not in it):
        an honest server's gradient for the samples of a class points the same way from batch to
        batch, unless they were sent with random labels."""
        flat = grad.detach().flatten(1).float().cpu()
        classes = self._options["num_classes"]
        labels = labels.long().clamp(0, classes - 1)
        sums = torch.zeros(classes, flat.shape[1]).index_add_(0, labels, flat)
        counts = torch.bincount(labels, minlength=classes).clamp_min(1)
        return (sums / counts[:, None]).flatten()

    def _check(self, client: str) -> FakeBatchCheck:
        if client not in self.checks:
            seed = secrets.randbits(40) if self._seed is None else self._seed + len(self.checks)
            self.checks[client] = FakeBatchCheck(**self._options, seed=seed)
        return self.checks[client]

    def outbox(self, message: Message) -> Message:
        if not isinstance(message, Labels):
            return message
        if message.labels.is_floating_point():
            raise ValueError(f"the fake-batch check needs class labels; {message.sender} sends soft labels for task {message.task!r}")
        check, pending = self._check(message.sender), self._pending.get(message.sender)
        if pending is not None and pending[0] == message.step:
            fake = pending[1]  # one decision for every task of the step
        else:  # a new step (one that never got its gradient, rolled back or aborted, is forgotten)
            fake = check.fake()
            self._pending[message.sender] = (message.step, fake, message.labels.detach().cpu())
        if not fake:
            return message
        return dataclasses.replace(message, labels=check.fake_labels(len(message.labels)).to(message.labels.device, message.labels.dtype))

    def inbox(self, message: Message) -> Message:
        if not isinstance(message, Gradient):
            return message
        client = message.receiver
        check = self._check(client)
        pending = self._pending.pop(client, None)
        grad = as_tensor(message.tensor)
        if pending is None or pending[0] != message.step or len(pending[2]) != len(grad):
            return message  # not the gradient of the step whose labels went out: nothing to compare
        _, fake, labels = pending
        check.observe([self._by_class(grad, labels)], fake=fake)
        if check.hijacked:
            raise HijackSuspected(
                f"{client}: the gradients {message.sender} sends do not depend on the labels: after {check.fakes} batches with "
                f"random labels the check scores {check.score:.3f} (an honest server scores far above {check.threshold:g}). "
                f"{message.sender} may be hijacking the training to reconstruct the inputs (FSHA); stopped in the run's step "
                f"{message.step}")
        return dataclasses.replace(message, tensor=torch.zeros_like(grad)) if fake else message


def guard_summary(parties) -> dict[str, dict[str, float | int | None]]:
    """Per client checked by a :class:`FakeBatchGuard` among ``parties``' inbox hooks: how many
    fake batches it compared so far and its score (None before the first), for a run's metrics."""
    guards = {id(g): g for p in parties if isinstance(g := getattr(getattr(p, "inbox", None), "__self__", None), FakeBatchGuard)}
    return {name: {"fakes": check.fakes, "score": None if check.score != check.score else round(check.score, 4)}
            for g in guards.values() for name, check in sorted(g.checks.items())}


class HijackingServerHooks:
    """A hijacking server in a running split, made of the honest server's code and two hooks: its
    ``inbox`` keeps the smashed data of each training step, its ``outbox`` replaces the gradient it
    would send back by the one :class:`HijackingServer` chooses. For trying a client's defences
    against FSHA in the real runtime (``Simulation(..., inbox={"server": h.inbox}, outbox={"server":
    h.outbox})``); the server's own model still trains, on the labels, as if nothing were wrong."""

    def __init__(self, hijacker: HijackingServer) -> None:
        self.hijacker = hijacker
        self._smashed: dict[str, tuple[int, torch.Tensor]] = {}  # per client, its training step in flight

    def inbox(self, message: Message) -> Message:
        if isinstance(message, Activation) and message.mode == "train":
            self._smashed[message.sender] = (message.step, as_tensor(message.tensor).detach())
        return message

    def outbox(self, message: Message) -> Message:
        held = self._smashed.pop(message.receiver, None) if isinstance(message, Gradient) else None
        if held is None or held[0] != message.step:
            return message
        sent = as_tensor(message.tensor)
        grad = self.hijacker.gradient(held[1].to(self.hijacker.public.device))
        return dataclasses.replace(message, tensor=grad.to(sent.device, sent.dtype))
