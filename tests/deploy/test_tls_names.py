"""A TLS handshake that fails tells the client why: the names on the certificate, or another CA."""

from concurrent import futures

import grpc
import pytest

from splitlearn.cli.app import main
from splitlearn.deploy.certs import server_credentials, tls_problem

from .conftest import write_config


@pytest.fixture
def tls_server(tmp_path):
    """A gRPC server on localhost with a certificate for hospital.example (and 127.0.0.1)."""
    certs = tmp_path / "certs"
    assert main(["certs", "--out", str(certs), "--server-name", "hospital.example", "--clients", "client0,client1"]) == 0
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    port = server.add_secure_port("localhost:0", server_credentials(certs))
    server.start()
    yield certs, port
    server.stop(None)


def test_join_names_both_names_when_they_differ(tls_server, tmp_path, capsys):
    certs, port = tls_server
    config = write_config(tmp_path / "config.json")
    code = main(["join", "--config", config, "--server", f"localhost:{port}", "--party", "client0", "--certs", str(certs),
                 "--out", str(tmp_path / "out"), "--connect-timeout", "30"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err, err
    assert "the server's certificate is for hospital.example, 127.0.0.1, but --server asked for localhost" in err


def test_no_problem_where_the_name_fits_and_another_ca_is_named(tls_server, tmp_path):
    certs, port = tls_server
    assert tls_problem(f"127.0.0.1:{port}", certs, "client0") is None
    other = tmp_path / "other"
    assert main(["certs", "--out", str(other), "--server-name", "localhost", "--clients", "client0"]) == 0
    assert "cannot be verified against" in tls_problem(f"127.0.0.1:{port}", other, "client0")
    assert tls_problem("nowhere", certs, "client0") is None
