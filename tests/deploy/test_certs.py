"""``splitlearn certs`` writes a CA, server and client certificates and tokens, keys private."""

import json
import stat

from cryptography import x509
from cryptography.x509.oid import NameOID

from splitlearn.cli.app import main


def test_certs_layout_permissions_and_names(certs, capsys):
    mode = lambda name: stat.S_IMODE((certs / name).stat().st_mode)  # noqa: E731
    for name in ("ca.key", "server.key", "client0.key", "client1.key", "client0.token", "tokens.json"):
        assert mode(name) == 0o600, name
    tokens = json.loads((certs / "tokens.json").read_text())
    assert sorted(tokens) == ["client0", "client1"] and tokens["client0"] != tokens["client1"]
    assert (certs / "client1.token").read_text() == tokens["client1"]
    ca = x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes())
    server = x509.load_pem_x509_certificate((certs / "server.pem").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    for party in ("client0", "client1"):
        cert = x509.load_pem_x509_certificate((certs / f"{party}.pem").read_bytes())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == party
        cert.verify_directly_issued_by(ca)
    # never overwrites an existing CA
    assert main(["certs", "--out", str(certs), "--clients", "client0"]) == 2
    assert "already holds" in capsys.readouterr().err


def test_certs_refuses_a_folder_with_a_dangling_link_where_a_key_would_go(tmp_path, capsys):
    out = tmp_path / "certs"
    out.mkdir()
    (out / "ca.key").symlink_to(tmp_path / "elsewhere" / "stolen.key")  # writing through it would put the CA key there
    assert main(["certs", "--out", str(out), "--clients", "client0"]) == 2
    err = capsys.readouterr().err
    assert f"{out} already holds ca.key; pick an empty folder" in err and "Traceback" not in err
    assert not (tmp_path / "elsewhere").exists()
