"""The ACME client's pure parts (JWS, thumbprint, CSR) and the renewal decisions: when to
order, the backoff, the challenge board, the hot swap of a TLS context's certificate."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from postroom.net import tls
from postroom.net.acme import (
    AcmeClient,
    AcmeError,
    contact_of,
    csr_for,
    key_authorization,
    public_jwk,
    signed,
    thumbprint,
)
from postroom.net.alpn import AlpnChallenges
from postroom.net.certificates import (
    AccountRecord,
    AcmeFiles,
    AcmeSettings,
    CertificateInfo,
    ChallengeFiles,
    backoff,
    contact_due,
    renew,
    renewal_reason,
    wanted_names,
)

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_jws_is_es256_over_protected_and_payload() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    protected = {"alg": "ES256", "nonce": "n1", "url": "https://ca.example/acct", "kid": "k"}
    body = json.loads(signed(key, protected, {"contact": ["mailto:a@example.com"]}))
    assert json.loads(unb64(body["protected"])) == protected
    assert json.loads(unb64(body["payload"])) == {"contact": ["mailto:a@example.com"]}
    raw = unb64(body["signature"])
    assert len(raw) == 64  # RFC 7518 §3.4: R || S, 32 octets each
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    message = f"{body['protected']}.{body['payload']}".encode()
    key.public_key().verify(der, message, ec.ECDSA(hashes.SHA256()))


def test_post_as_get_has_an_empty_payload() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    assert json.loads(signed(key, {"alg": "ES256"}, None))["payload"] == ""


def test_thumbprint_hashes_the_sorted_members_without_whitespace() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = public_jwk(key)
    canonical = f'{{"crv":"P-256","kty":"EC","x":"{jwk["x"]}","y":"{jwk["y"]}"}}'
    expected = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest())
    assert thumbprint(jwk) == expected.rstrip(b"=").decode()
    assert thumbprint(dict(reversed(list(jwk.items())))) == thumbprint(jwk)
    assert key_authorization("tok", jwk) == f"tok.{thumbprint(jwk)}"
    numbers = key.public_key().public_numbers()
    assert int.from_bytes(unb64(jwk["x"]), "big") == numbers.x
    assert len(unb64(jwk["y"])) == 32


def test_csr_names_every_identifier() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    names = wanted_names("MX.Example.org", ["example.org", "example.net"])
    assert names == [
        "mx.example.org",
        "mta-sts.example.org",
        "autoconfig.example.org",
        "autodiscover.example.org",
        "mta-sts.example.net",
        "autoconfig.example.net",
        "autodiscover.example.net",
    ]
    csr = x509.load_der_x509_csr(csr_for(key, names))
    assert csr.is_signature_valid
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == names


def test_backoff_doubles_from_an_hour_to_a_day() -> None:
    hours = [backoff(n).total_seconds() / 3600 for n in range(1, 9)]
    assert hours == [1, 2, 4, 8, 16, 24, 24, 24]
    assert backoff(1000) == datetime.timedelta(hours=24)


def info(names: tuple[str, ...], not_after: datetime.datetime) -> CertificateInfo:
    return CertificateInfo(names, "CN=ca", 1, not_after - datetime.timedelta(days=90), not_after)


def test_renewal_is_due_without_a_certificate_a_name_or_30_days_before_expiry() -> None:
    names = ["mx.example.org", "mta-sts.example.org"]
    later = NOW + datetime.timedelta(days=31)
    assert renewal_reason(None, names, NOW) == "no certificate yet"
    assert (
        renewal_reason(info(("mx.example.org", "mta-sts.example.org"), later), names, NOW) is None
    )
    missing = renewal_reason(info(("mx.example.org",), later), names, NOW)
    assert missing == "it does not name mta-sts.example.org"
    soon = info(tuple(names), NOW + datetime.timedelta(days=30))
    assert renewal_reason(soon, names, NOW) == "it expires on 2026-07-01 00:00 UTC"


def test_challenge_board_in_memory_and_on_disk(tmp_path: Path) -> None:
    board = ChallengeFiles(tmp_path / "data")
    board.publish("tok-1", "tok-1.print")
    path = tmp_path / "data" / "acme" / "challenges" / "tok-1"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert board.cached("tok-1") == board.answer("tok-1") == "tok-1.print"
    other = ChallengeFiles(tmp_path / "data")  # another process: the CLI published it
    assert other.cached("tok-1") is None
    assert other.answer("tok-1") == "tok-1.print"
    for token in ("../state.json", "a/b", "", "x" * 300, "tok-1\n"):
        assert other.answer(token) is None, token
    board.withdraw("tok-1")
    assert not path.exists()
    assert other.answer("tok-1") is None


def test_missing_ca_file_is_one_clear_error(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(AcmeError, match=r"none\.pem: cannot load the CAs of \[acme\] ca_file"):
        AcmeClient("https://ca.example/dir", key, ca_file=tmp_path / "none.pem")


def test_account_key_is_made_once_and_private(tmp_path: Path) -> None:
    files = AcmeFiles(tmp_path)
    key = files.account_key()
    assert files.account_key().private_numbers() == key.private_numbers()
    assert stat.S_IMODE(files.account_key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.directory.stat().st_mode) == 0o700
    files.account_key_path.write_text("not a key")
    with pytest.raises(AcmeError, match="remove it to register a new account"):
        files.account_key()


def test_contact_is_due_when_account_json_names_another_or_nothing(tmp_path: Path) -> None:
    """No account key: the first order makes the account with the contact, nothing is due.
    Then account.json (0600) decides: another contact, another directory, none, unreadable."""
    files = AcmeFiles(tmp_path)
    directory = "https://ca.test/dir"

    def settings(email: str, at: str = directory) -> AcmeSettings:
        return AcmeSettings(at, email, None, ("mx.example.test",), None)

    assert contact_of("a@example.test") == ("mailto:a@example.test",) and contact_of("") == ()
    assert not contact_due(settings("a@example.test"), files)
    files.account_key()
    assert contact_due(settings("a@example.test"), files)  # nothing says which contact
    record = AccountRecord(directory, "https://ca.test/acct/1", ("mailto:a@example.test",))
    files.save_account(record)
    assert files.account() == record
    assert stat.S_IMODE(files.account_path.stat().st_mode) == 0o600
    assert not contact_due(settings("a@example.test"), files)
    assert contact_due(settings("b@example.test"), files)
    assert contact_due(settings(""), files)
    assert contact_due(settings("a@example.test", "https://other.test/dir"), files)
    files.account_path.write_text("{")
    assert files.account() is None and contact_due(settings("a@example.test"), files)


def _pair(ca: trustme.CA, directory: Path, name: str) -> tuple[Path, Path]:
    issued = ca.issue_cert(name, key_type=trustme.KeyType.ECDSA)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    return cert, key


def _served_name(context: ssl.SSLContext, ca: trustme.CA) -> str:
    """Handshake against `context` over a socket pair; the served leaf's common name."""
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    client_context.check_hostname = False
    server_sock, client_sock = socket.socketpair()
    with server_sock, client_sock:
        accepted = threading.Thread(target=_handshake, args=(context, server_sock))
        accepted.start()
        with client_context.wrap_socket(client_sock) as tls_sock:
            der = tls_sock.getpeercert(binary_form=True)
        accepted.join(timeout=10)
    assert der is not None
    leaf = x509.load_der_x509_certificate(der)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return str(san.get_values_for_type(x509.DNSName)[0])


def _handshake(context: ssl.SSLContext, sock: socket.socket) -> None:
    with context.wrap_socket(sock, server_side=True) as tls_sock:
        tls_sock.recv(1)


def test_reload_certificate_swaps_for_new_handshakes_and_refuses_a_bad_pair(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    first = _pair(ca, tmp_path, "old.example.org")
    second = _pair(ca, tmp_path, "new.example.org")
    context = tls.server_context(*first)
    assert _served_name(context, ca) == "old.example.org"
    tls.reload_certificate(context, *second)
    assert _served_name(context, ca) == "new.example.org"
    with pytest.raises(tls.TlsSetupError):
        tls.reload_certificate(context, second[0], first[1])  # the key does not fit
    assert _served_name(context, ca) == "new.example.org"


@pytest.mark.parametrize(
    ("https", "alpn", "said"),
    [
        (False, AlpnChallenges(), r"tls-alpn-01 needs the HTTPS listener: set \[listen\] https"),
        (True, None, r"tls-alpn-01 is answered by postroom serve's own orders only"),
    ],
)
def test_tls_alpn_01_needs_https_and_the_server(
    tmp_path: Path, https: bool, alpn: AlpnChallenges | None, said: str
) -> None:
    settings = AcmeSettings(
        "https://127.0.0.1:9/dir", "", None, ("mx.example.test",), None, "tls-alpn-01", https
    )
    files = AcmeFiles(tmp_path)
    with pytest.raises(AcmeError, match=said):
        renew(settings, files, alpn=alpn)
    assert not files.cert_path.exists()
    assert files.state().failures == 1
