import json
import socket
import subprocess
import sys
import threading

import pytest

from splitlearn import deploy
from splitlearn.cli.app import main

TIMEOUT = 60  # bounds every wait on a process, so a failing test fails instead of hanging


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def spawn():
    """Start ``splitlearn ARGS`` as a subprocess (stdout and stderr merged); all are killed at teardown."""
    procs = []

    def spawn(*args: str, cwd=None) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "splitlearn.cli.app", *map(str, args)], cwd=cwd,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        proc.kill()
        proc.communicate()


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    """Wait (bounded) for ``proc``; return its exit code and output."""
    out, _ = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A certs folder for client0 and client1, written by ``splitlearn certs``."""
    out = tmp_path_factory.mktemp("certs")
    assert main(["certs", "--out", str(out), "--server-name", "localhost", "--clients", "client0,client1"]) == 0
    return out


def write_config(path, **sections) -> str:
    """A tiny run config: digits, MLP, 2 round-robin clients, 2 epochs, unless ``sections`` says otherwise."""
    config = {"data": {"name": "digits", "limit_train": 240, "limit_test": 80}, "model": {"name": "mlp"},
              "split": {"configuration": "vanilla", "clients": 2}, "train": {"epochs": 2, "seed": 3}}
    for key, value in sections.items():
        config[key] = config.get(key, {}) | value
    path.write_text(json.dumps(config))
    return str(path)


def in_threads(config, certs, joins, **serve_kw) -> dict:
    """``deploy.serve`` and one ``deploy.join`` per party of ``joins`` (party -> its extra keyword
    arguments) on threads of this process, without TLS (loopback). Returns each one's result or
    exception, by party (``"server"`` for serve)."""
    return _threads(deploy.serve, (config,), config, certs, joins, dict(join_timeout=20) | serve_kw)


def predict_in_threads(run_dir, config, certs, joins) -> dict:
    """``deploy.predict`` of a served ``run_dir`` and ``deploy.join(predict="test")`` per party of
    ``joins``, as :func:`in_threads` runs a session."""
    return _threads(deploy.predict, (run_dir,), config, certs, {p: kw | {"predict": "test"} for p, kw in joins.items()},
                    dict(join_timeout=20))


def _threads(server, args, config, certs, joins, server_kw) -> dict:
    target, results = f"localhost:{free_port()}", {}

    def run(name, fn, *args, **kw):
        try:
            results[name] = fn(*args, certs=certs, insecure=True, **kw)
        except Exception as e:  # reported to the test
            results[name] = e

    threads = [threading.Thread(target=run, args=("server", server, *args), kwargs=dict(listen=target) | server_kw, daemon=True)]
    threads += [threading.Thread(target=run, args=(party, deploy.join, config), kwargs=dict(server=target, party=party) | kw, daemon=True)
                for party, kw in joins.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    return results
