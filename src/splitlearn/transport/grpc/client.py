"""A remote party's side of the gRPC transport: one stream to the hub, carrying all its messages."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import grpc

from splitlearn.split.messages import Message
from splitlearn.transport.grpc._inbox import END, InboxTransport, StreamClosed, channel_options
from splitlearn.transport.proto import splitlearn_pb2 as pb
from splitlearn.transport.proto import splitlearn_pb2_grpc as pb_grpc
from splitlearn.transport.serde import Limits, WireError, message_from_proto, message_to_proto

__all__ = ["ClientTransport"]


class ClientTransport(InboxTransport):
    """Connects a party to the hub. Messages from the hub are decoded and checked on a reader
    thread, then handled on the thread that calls :meth:`serve` or :meth:`run_until`."""

    def __init__(self, *, limits: Limits = Limits(), timeout: float = 300.0) -> None:
        super().__init__(timeout)
        self.limits = limits
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._channel: grpc.Channel | None = None
        self._call = None

    def connect(self, target: str, *, name: str, token: str, credentials: grpc.ChannelCredentials | None = None) -> None:
        """Open the stream to the hub at ``target`` as ``name`` (TLS with ``credentials``, else insecure)."""
        options = channel_options(self.limits)
        self._channel = grpc.secure_channel(target, credentials, options) if credentials else grpc.insecure_channel(target, options)
        stub = pb_grpc.SplitLearningStub(self._channel)
        self._call = stub.Session(self._requests(), metadata=(("authorization", f"Bearer {token}"),))
        threading.Thread(target=self._read, name=f"client-{name}", daemon=True).start()

    def send(self, message: Message) -> None:
        env = message_to_proto(message)
        self._observe(message)
        self._outbox.put(env)

    def serve(self) -> None:
        """Handle messages until the hub ends the session or :meth:`stop` is called; raise
        :class:`StreamClosed` if the stream fails, and whatever a handler raises."""
        while (item := self._inbox.get()) is not END:
            if isinstance(item, StreamClosed) and item.code is grpc.StatusCode.OK:
                self._inbox.put(item)
                return
            self._dispatch(item)

    def stop(self) -> None:
        """Make :meth:`serve` return once it has handled the messages already received."""
        self._inbox.put(END)

    def close(self) -> None:
        """Stop serving, cancel the stream and close the channel."""
        self.stop()
        self._outbox.put(END)
        if self._call is not None:
            self._call.cancel()
            self._channel.close()

    def _requests(self) -> Iterator[pb.Envelope]:
        while (env := self._outbox.get()) is not END:
            yield env

    def _read(self) -> None:
        try:
            for env in self._call:
                self._inbox.put(message_from_proto(env, limits=self.limits))
            self._inbox.put(StreamClosed(grpc.StatusCode.OK, "the hub ended the session"))
        except grpc.RpcError as e:
            self._inbox.put(StreamClosed(e.code(), e.details()))
        except WireError as e:
            self._call.cancel()
            self._inbox.put(e)
        self._outbox.put(END)
