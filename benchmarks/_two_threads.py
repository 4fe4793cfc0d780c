"""The server side and one client on two threads of this process, with no network between them:
each message is handed over by reference, or through the wire encoding and its checks, after an
optional one-way delay (a stand-in for a network's latency). Shared by the benchmarks."""

from __future__ import annotations

import queue
import threading
import time

from splitlearn import runner
from splitlearn.config import RunConfig
from splitlearn.split.cast import build_parties
from splitlearn.split.simulation import Simulation
from splitlearn.transport.grpc._inbox import END, InboxTransport
from splitlearn.transport.serde import decode, message_to_proto


class Side(InboxTransport):
    """One side. Messages to the other side reach its inbox ``latency`` seconds after they were
    sent, in the order sent."""

    def __init__(self, *, encode: bool = False, latency: float = 0.0) -> None:
        super().__init__(timeout=300.0)
        self.encode, self.latency, self.peer = encode, latency, None
        self._wire: queue.SimpleQueue = queue.SimpleQueue()
        if latency:
            threading.Thread(target=self._courier, daemon=True).start()

    def send(self, message) -> None:
        self._observe(message)
        if message.receiver in self._handlers:
            self._inbox.put(message)
            return
        if self.encode:  # to the bytes gRPC would send, and back, with every check of the receiving side
            message = decode(message_to_proto(message).SerializeToString())
        if self.latency:
            self._wire.put((time.monotonic() + self.latency, message))
        else:
            self.peer._inbox.put(message)

    def _courier(self) -> None:
        while (item := self._wire.get()) is not END:
            due, message = item
            time.sleep(max(0.0, due - time.monotonic()))
            self.peer._inbox.put(message)

    def serve(self) -> None:
        try:
            while (item := self._inbox.get()) is not END:
                self._dispatch(item)
        except BaseException as e:  # the other side raises it at once, rather than after its timeout
            self.peer._inbox.put(e)
            raise

    def close(self) -> None:
        self._wire.put(END)


def on_threads(config: RunConfig, *, encode: bool = False, latency: float = 0.0, pipeline: bool = True) -> list[float]:
    """Training seconds of each epoch after the first, with the client (party ``client``) on a
    thread of its own and everything else on this one."""
    built = runner.build(config)
    cast = build_parties(built.split, **runner.party_options(built))
    hub, side = Side(encode=encode, latency=latency), Side(encode=encode, latency=latency)
    hub.peer, side.peer = side, hub
    cast.parties["client"].connect(side)
    sim = Simulation(built.split, parties=cast, transport=hub, local=set(cast.parties) - {"client"},
                             batch_size=config.train.batch_size, seed=config.train.seed)
    sim.coordinator.pipeline = pipeline
    thread = threading.Thread(target=side.serve, daemon=True)
    thread.start()
    cast.parties["client"].announce()
    sim.coordinator.collect_manifests()
    try:
        return [r["train_seconds"] for r in sim.fit(config.train.epochs)][1:]
    finally:
        side._inbox.put(END)
        thread.join()
        hub.close()
        side.close()
