"""Deployment as separate processes: certificates, the serving hub, and joining clients."""

from splitlearn.deploy.certs import DeployError, make_certs
from splitlearn.deploy.session import (
    JoinResult,
    PredictResult,
    ServeResult,
    is_loopback,
    join,
    log_event,
    predict,
    read_status,
    serve,
)

__all__ = [
    "DeployError", "JoinResult", "PredictResult", "ServeResult", "is_loopback", "join", "log_event", "make_certs", "predict",
    "read_status", "serve",
]
