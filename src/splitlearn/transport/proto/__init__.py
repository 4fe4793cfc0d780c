"""Protobuf schema of the wire format (``splitlearn.proto``) and its generated modules.

``splitlearn_pb2`` (messages) needs ``protobuf``; ``splitlearn_pb2_grpc`` (the ``SplitLearning``
service) also needs ``grpcio``. Regenerate both with ``scripts/protoc.sh``; never edit them by hand.
"""
