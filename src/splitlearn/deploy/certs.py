"""Development certificates and tokens for a deployment, and the gRPC credentials built from them.

A certs folder holds ``ca.pem`` (+ ``ca.key``), ``server.pem`` / ``server.key``, one
``<party>.pem`` / ``<party>.key`` / ``<party>.token`` per client party, and ``tokens.json``
({party: token}, read by the server). Private keys and tokens are written with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

import grpc

__all__ = ["DeployError", "client_credentials", "make_certs", "read_token", "read_tokens", "server_credentials", "tls_problem"]


class DeployError(RuntimeError):
    """A deployment cannot go on; the message says why, in one line."""


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_certs(out: str | Path, *, server_name: str, clients: Sequence[str], days: int = 365) -> dict[str, Path]:
    """Write a development CA, a server certificate (SAN: ``server_name`` and 127.0.0.1), a client
    certificate per party (CN: the party's name) and random tokens into ``out``; return the paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not clients or len(set(clients)) != len(clients) or not all(c and c.isidentifier() for c in clients):
        raise DeployError(f"--clients must be distinct party names, got {list(clients)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = ["ca", "server", *clients]
    files = [f"{n}.{ext}" for n in names for ext in ("pem", "key")] + [f"{c}.token" for c in clients] + ["tokens.json"]
    taken = [f for f in files if (out / f).exists() or (out / f).is_symlink()]  # a dangling link too: never written through
    if taken:
        raise DeployError(f"{out} already holds {', '.join(taken)}; pick an empty folder")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "splitlearn development CA")])

    def issue(cn: str, key, *, usage, san=None, ca: bool = False) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            b = b.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                              data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                              crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        else:
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(ca_key, hashes.SHA256())

    def save(name: str, cert: x509.Certificate, key) -> None:
        _write(out / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
        _write(out / f"{name}.key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()), private=True)

    save("ca", issue("splitlearn development CA", ca_key, usage=None, ca=True), ca_key)
    try:
        host = x509.IPAddress(ipaddress.ip_address(server_name))
    except ValueError:
        host = x509.DNSName(server_name)
    san = list(dict.fromkeys([host, x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]))
    key = ec.generate_private_key(ec.SECP256R1())
    save("server", issue(server_name, key, usage=ExtendedKeyUsageOID.SERVER_AUTH, san=san), key)
    tokens = {}
    for party in clients:
        key = ec.generate_private_key(ec.SECP256R1())
        save(party, issue(party, key, usage=ExtendedKeyUsageOID.CLIENT_AUTH), key)
        tokens[party] = secrets.token_urlsafe(32)
        _write(out / f"{party}.token", tokens[party].encode(), private=True)
    _write(out / "tokens.json", json.dumps(tokens, indent=2).encode(), private=True)
    return {n: out / f"{n}.pem" for n in names} | {"tokens": out / "tokens.json"}


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DeployError(f"cannot read {path}: {e.strerror}") from None


def read_tokens(certs: str | Path) -> dict[str, str]:
    """The server's ``tokens.json``: {party: token}."""
    path = Path(certs) / "tokens.json"
    try:
        tokens = json.loads(_read(path))
    except json.JSONDecodeError as e:
        raise DeployError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(tokens, dict) or not all(isinstance(v, str) and v for v in tokens.values()):
        raise DeployError(f"{path} must map each party to a non-empty token")
    return tokens


def read_token(certs: str | Path, party: str) -> str:
    """A client's ``<party>.token``."""
    token = _read(Path(certs) / f"{party}.token").decode().strip()
    if not token:
        raise DeployError(f"{Path(certs) / f'{party}.token'} is empty")
    return token


def server_credentials(certs: str | Path) -> grpc.ServerCredentials:
    """TLS with ``server.pem``/``server.key``, requiring client certificates signed by ``ca.pem``."""
    certs = Path(certs)
    return grpc.ssl_server_credentials([(_read(certs / "server.key"), _read(certs / "server.pem"))],
                                       root_certificates=_read(certs / "ca.pem"), require_client_auth=True)


def client_credentials(certs: str | Path, party: str) -> grpc.ChannelCredentials:
    """TLS trusting ``ca.pem`` only, presenting ``<party>.pem``/``<party>.key``."""
    certs = Path(certs)
    return grpc.ssl_channel_credentials(_read(certs / "ca.pem"), _read(certs / f"{party}.key"), _read(certs / f"{party}.pem"))


def tls_problem(target: str, certs: str | Path, party: str, *, timeout: float = 3.0) -> str | None:
    """Why the TLS handshake with the server at ``target`` (``host:port``) fails for ``party``, in
    words: the names the server's certificate holds against the one asked for, or the reason it
    cannot be verified. None where it does not fail, or the server cannot be reached at all (gRPC
    reports only that the channel did not become ready)."""
    import socket
    import ssl

    from cryptography import x509

    host, sep, port = target.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not host:
        return None
    certs = Path(certs)

    def context(verify: bool) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        ctx.load_cert_chain(str(certs / f"{party}.pem"), str(certs / f"{party}.key"))
        ctx.set_alpn_protocols(["h2"])
        if not verify:
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        return ctx

    def handshake(verify: bool) -> bytes | None:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            with context(verify).wrap_socket(sock, server_hostname=host) as tls:
                return tls.getpeercert(binary_form=True)

    try:
        handshake(True)
        return None
    except ssl.SSLCertVerificationError as exc:
        reason = exc.verify_message or str(exc)
        try:
            cert = x509.load_der_x509_certificate(handshake(False))
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = [str(n) for n in san.get_values_for_type(x509.DNSName)] + [str(a) for a in san.get_values_for_type(x509.IPAddress)]
        except (OSError, ValueError, x509.ExtensionNotFound):
            names = []
        if "mismatch" in reason.lower() and names:
            return (f"the server's certificate is for {', '.join(names)}, but --server asked for {host}: connect by one "
                    f"of those names, or make the server's certificate for {host} (splitlearn certs --server-name {host})")
        return f"the server's certificate cannot be verified against {certs / 'ca.pem'}: {reason} (issued by another CA?)"
    except (OSError, ssl.SSLError):
        return None
