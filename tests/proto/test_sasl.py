"""Tests for the sans-I/O SASL server mechanisms (PLAIN, LOGIN, SCRAM-SHA-256) and SASLprep."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.proto.sasl import (
    MECHANISMS,
    Challenge,
    CheckPassword,
    Failure,
    LoginMechanism,
    Mechanism,
    NeedScramCredentials,
    PlainMechanism,
    SASLprepError,
    ScramCredentials,
    ScramSha256Mechanism,
    Success,
    derive_scram_credentials,
    new_mechanism,
    saslprep,
)

MALFORMED = Failure("malformed")
BAD_CREDENTIALS = Failure("credentials")

# RFC 7677 §3 test vector.
RFC_USER = "user"
RFC_PASSWORD = "pencil"
RFC_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

# Small iteration count keeps the tests fast where the vector is not needed.
FAST_ITERATIONS = 64


@pytest.fixture(scope="module")
def rfc_creds() -> ScramCredentials:
    return derive_scram_credentials(RFC_PASSWORD, salt=RFC_SALT, iterations=4096)


def _scram_client_final(
    password: str,
    client_first_bare: bytes,
    server_first: bytes,
    gs2_header: bytes = b"n,,",
) -> tuple[bytes, bytes]:
    """Independent SCRAM-SHA-256 client computation; returns (client-final, server-final)."""
    attrs = dict(a.split("=", 1) for a in server_first.decode().split(","))
    salt = base64.b64decode(attrs["s"])
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = b"c=" + base64.b64encode(gs2_header) + b",r=" + attrs["r"].encode()
    auth_message = client_first_bare + b"," + server_first + b"," + without_proof
    signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    server_sig = hmac.new(server_key, auth_message, hashlib.sha256).digest()
    return (
        without_proof + b",p=" + base64.b64encode(proof),
        b"v=" + base64.b64encode(server_sig),
    )


def _scram_to_server_first(
    mech: ScramSha256Mechanism, client_first: bytes, creds: ScramCredentials | None
) -> bytes:
    step = mech.start(client_first)
    assert isinstance(step, NeedScramCredentials)
    step = mech.credentials_found(creds)
    assert isinstance(step, Challenge)
    return step.data


# --------------------------------------------------------------------------------------------
# SASLprep (RFC 4013 §3 examples)


@pytest.mark.parametrize(
    ("given_", "expected"),
    [
        ("I\u00adX", "IX"),  # SOFT HYPHEN mapped to nothing
        ("user", "user"),  # no transformation
        ("USER", "USER"),  # case preserved
        ("\u00aa", "a"),  # NFKC
        ("\u2168", "IX"),  # NFKC
        ("a\u00a0b", "a b"),  # non-ASCII space mapped to SPACE
        ("", ""),
    ],
)
def test_saslprep_rfc4013_examples(given_: str, expected: str) -> None:
    assert saslprep(given_) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "\u0007",  # prohibited: ASCII control character
        "\u0627\u0031",  # bidi: RandALCat string must end with RandALCat
        "a\u0627",  # bidi: mixes LCat and RandALCat
        "\ue000",  # private use
    ],
)
def test_saslprep_rfc4013_errors(bad: str) -> None:
    with pytest.raises(SASLprepError):
        saslprep(bad)


def test_saslprep_bidi_ok() -> None:
    assert saslprep("\u0627\u0031\u0628") == "\u0627\u0031\u0628"


def test_saslprep_unassigned() -> None:
    emoji = "pass\U0001f600"  # unassigned in Unicode 3.2
    with pytest.raises(SASLprepError):
        saslprep(emoji)
    assert saslprep(emoji, allow_unassigned=True) == emoji


# --------------------------------------------------------------------------------------------
# Registry


def test_new_mechanism_case_insensitive() -> None:
    assert MECHANISMS == ("PLAIN", "LOGIN", "SCRAM-SHA-256")
    for name in MECHANISMS:
        for spelling in (name, name.lower(), name.title()):
            mech = new_mechanism(spelling)
            assert mech is not None
            assert mech.name == name
    assert isinstance(new_mechanism("plain"), PlainMechanism)
    assert isinstance(new_mechanism("Login"), LoginMechanism)
    assert isinstance(new_mechanism("scram-sha-256"), ScramSha256Mechanism)


@pytest.mark.parametrize("name", ["CRAM-MD5", "", "SCRAM-SHA-1", "PLAIN ", "PLA\u0131N"])
def test_new_mechanism_unknown(name: str) -> None:
    assert new_mechanism(name) is None


def test_new_mechanism_returns_fresh_instances() -> None:
    assert new_mechanism("PLAIN") is not new_mechanism("PLAIN")


# --------------------------------------------------------------------------------------------
# PLAIN


def test_plain_initial_response_without_authzid() -> None:
    mech = PlainMechanism()
    step = mech.start(b"\x00alice\x00secret")
    assert step == CheckPassword(authcid="alice", authzid="", password="secret")
    assert mech.password_checked(True) == Success(authcid="alice", authzid="")


def test_plain_initial_response_with_authzid() -> None:
    mech = PlainMechanism()
    step = mech.start(b"admin\x00alice\x00secret")
    assert step == CheckPassword(authcid="alice", authzid="admin", password="secret")
    assert mech.password_checked(True) == Success(authcid="alice", authzid="admin")


def test_plain_without_initial_response() -> None:
    mech = PlainMechanism()
    assert mech.start(None) == Challenge(b"")
    step = mech.respond(b"\x00bob\x00hunter2")
    assert step == CheckPassword(authcid="bob", authzid="", password="hunter2")
    assert mech.password_checked(True) == Success(authcid="bob", authzid="")


def test_plain_wrong_password() -> None:
    mech = PlainMechanism()
    assert isinstance(mech.start(b"\x00alice\x00wrong"), CheckPassword)
    assert mech.password_checked(False) == BAD_CREDENTIALS
    assert mech.password_checked(True) == MALFORMED  # exchange is over


def test_plain_utf8_and_saslprep() -> None:
    mech = PlainMechanism()
    step = mech.start("\x00j\u00f6rg\x00p\u00e4ss\u00aa\u00ad".encode())
    assert step == CheckPassword(authcid="j\u00f6rg", authzid="", password="p\u00e4ssa")


def test_plain_password_check_hidden_from_repr() -> None:
    step = PlainMechanism().start(b"\x00alice\x00topsecret")
    assert "topsecret" not in repr(step)


@pytest.mark.parametrize(
    "message",
    [
        b"",  # SMTP "=" (empty initial response)
        b"alice secret",  # no NULs
        b"alice\x00secret",  # one NUL
        b"\x00alice\x00secret\x00",  # three NULs
        b"a\x00b\x00c\x00d",
        b"\x00alice\x00",  # empty password
        b"admin\x00alice\x00",  # empty password with authzid
        b"\x00\x00secret",  # empty authcid
        b"\x00\xffalice\x00secret",  # invalid UTF-8
        b"\x00alice\x00\xc3",  # truncated UTF-8
    ],
)
def test_plain_malformed(message: bytes) -> None:
    assert PlainMechanism().start(message) == MALFORMED
    mech = PlainMechanism()
    assert mech.start(None) == Challenge(b"")
    assert mech.respond(message) == MALFORMED


def test_plain_prohibited_characters_are_bad_credentials() -> None:
    assert PlainMechanism().start(b"\x00alice\x00pass\x07word") == BAD_CREDENTIALS
    assert PlainMechanism().start(b"\x00\x00") == MALFORMED
    assert PlainMechanism().start("\x00alice\x00\u00ad".encode()) == BAD_CREDENTIALS


def test_plain_out_of_order() -> None:
    assert PlainMechanism().respond(b"\x00a\x00b") == MALFORMED
    assert PlainMechanism().password_checked(True) == MALFORMED
    assert PlainMechanism().credentials_found(None) == MALFORMED
    mech = PlainMechanism()
    assert isinstance(mech.start(b"\x00a\x00b"), CheckPassword)
    assert mech.respond(b"\x00a\x00b") == MALFORMED
    assert mech.password_checked(True) == MALFORMED
    mech = PlainMechanism()
    assert mech.start(None) == Challenge(b"")
    assert mech.start(None) == MALFORMED


# --------------------------------------------------------------------------------------------
# LOGIN


def test_login_flow() -> None:
    mech = LoginMechanism()
    assert mech.start(None) == Challenge(b"Username:")
    assert mech.respond(b"alice") == Challenge(b"Password:")
    assert mech.respond(b"secret") == CheckPassword(authcid="alice", authzid="", password="secret")
    assert mech.password_checked(True) == Success(authcid="alice", authzid="")


def test_login_initial_response_is_username() -> None:
    mech = LoginMechanism()
    assert mech.start(b"alice") == Challenge(b"Password:")
    assert mech.respond(b"secret") == CheckPassword(authcid="alice", authzid="", password="secret")
    assert mech.password_checked(False) == BAD_CREDENTIALS


@pytest.mark.parametrize("bad", [b"", b"\xff", b"al\x00ice"])
def test_login_malformed_username(bad: bytes) -> None:
    mech = LoginMechanism()
    assert mech.start(None) == Challenge(b"Username:")
    assert mech.respond(bad) == MALFORMED
    assert mech.respond(b"secret") == MALFORMED


@pytest.mark.parametrize("bad", [b"", b"\xfe\xff", b"se\x00cret"])
def test_login_malformed_password(bad: bytes) -> None:
    mech = LoginMechanism()
    assert mech.start(b"alice") == Challenge(b"Password:")
    assert mech.respond(bad) == MALFORMED


def test_login_empty_initial_response() -> None:
    assert LoginMechanism().start(b"") == MALFORMED


def test_login_out_of_order() -> None:
    assert LoginMechanism().respond(b"alice") == MALFORMED
    assert LoginMechanism().password_checked(True) == MALFORMED
    mech = LoginMechanism()
    assert mech.start(None) == Challenge(b"Username:")
    assert mech.password_checked(True) == MALFORMED
    assert mech.respond(b"alice") == MALFORMED
    mech = LoginMechanism()
    mech.start(b"alice")
    assert isinstance(mech.respond(b"pw"), CheckPassword)
    assert mech.respond(b"more") == MALFORMED
    assert mech.credentials_found(None) == MALFORMED


# --------------------------------------------------------------------------------------------
# SCRAM-SHA-256


def test_derive_rfc7677_keys(rfc_creds: ScramCredentials) -> None:
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", RFC_SALT, 4096)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert rfc_creds.salt == RFC_SALT
    assert rfc_creds.iterations == 4096
    assert rfc_creds.stored_key == hashlib.sha256(client_key).digest()
    assert rfc_creds.server_key == hmac.new(salted, b"Server Key", hashlib.sha256).digest()


def test_scram_rfc7677_vector(rfc_creds: ScramCredentials) -> None:
    mech = ScramSha256Mechanism(nonce=RFC_SERVER_NONCE)
    assert mech.start(RFC_CLIENT_FIRST) == NeedScramCredentials(authcid=RFC_USER, authzid="")
    assert mech.credentials_found(rfc_creds) == Challenge(RFC_SERVER_FIRST)
    assert mech.respond(RFC_CLIENT_FINAL) == Challenge(RFC_SERVER_FINAL)
    assert mech.respond(b"") == Success(authcid="user", authzid="")
    assert mech.respond(b"") == MALFORMED


def test_scram_rfc7677_vector_from_stored_text(rfc_creds: ScramCredentials) -> None:
    stored = ScramCredentials.from_text(rfc_creds.to_text())
    mech = ScramSha256Mechanism(nonce=RFC_SERVER_NONCE)
    assert mech.start(None) == Challenge(b"")
    assert mech.respond(RFC_CLIENT_FIRST) == NeedScramCredentials(authcid="user", authzid="")
    assert mech.credentials_found(stored) == Challenge(RFC_SERVER_FIRST)
    assert mech.respond(RFC_CLIENT_FINAL) == Challenge(RFC_SERVER_FINAL)
    assert mech.respond(b"") == Success(authcid="user", authzid="")


def test_scram_nonempty_ack_is_malformed(rfc_creds: ScramCredentials) -> None:
    mech = ScramSha256Mechanism(nonce=RFC_SERVER_NONCE)
    _scram_to_server_first(mech, RFC_CLIENT_FIRST, rfc_creds)
    assert mech.respond(RFC_CLIENT_FINAL) == Challenge(RFC_SERVER_FINAL)
    assert mech.respond(b"x") == MALFORMED


def test_scram_random_nonce_full_exchange() -> None:
    creds = derive_scram_credentials("correct horse", iterations=FAST_ITERATIONS)
    mech = ScramSha256Mechanism()
    bare = b"n=alice,r=clientnonce123"
    server_first = _scram_to_server_first(mech, b"n,," + bare, creds)
    nonce = server_first.split(b",")[0][2:]
    assert nonce.startswith(b"clientnonce123")
    assert len(nonce) >= len(b"clientnonce123") + 24  # 18 random bytes, base64
    client_final, server_final = _scram_client_final("correct horse", bare, server_first)
    assert mech.respond(client_final) == Challenge(server_final)
    assert mech.respond(b"") == Success(authcid="alice", authzid="")


def test_scram_server_nonces_differ() -> None:
    creds = derive_scram_credentials("pw", iterations=FAST_ITERATIONS)
    first = _scram_to_server_first(ScramSha256Mechanism(), b"n,,n=a,r=abc", creds)
    second = _scram_to_server_first(ScramSha256Mechanism(), b"n,,n=a,r=abc", creds)
    assert first != second


def test_scram_wrong_password(rfc_creds: ScramCredentials) -> None:
    mech = ScramSha256Mechanism(nonce=RFC_SERVER_NONCE)
    bare = RFC_CLIENT_FIRST[3:]
    server_first = _scram_to_server_first(mech, RFC_CLIENT_FIRST, rfc_creds)
    client_final, _ = _scram_client_final("pencil2", bare, server_first)
    assert mech.respond(client_final) == BAD_CREDENTIALS
    assert mech.respond(b"") == MALFORMED


def test_scram_tampered_proof(rfc_creds: ScramCredentials) -> None:
    mech = ScramSha256Mechanism(nonce=RFC_SERVER_NONCE)
    _scram_to_server_first(mech, RFC_CLIENT_FIRST, rfc_creds)
    proof = bytearray(base64.b64decode(RFC_CLIENT_FINAL.rsplit(b"p=", 1)[1]))
    proof[0] ^= 1
    tampered = RFC_CLIENT_FINAL.rsplit(b"p=", 1)[0] + b"p=" + base64.b64encode(bytes(proof))
    assert mech.respond(tampered) == BAD_CREDENTIALS


def test_scram_unknown_user_is_indistinguishable_until_proof() -> None:
    mech = ScramSha256Mechanism(nonce="servernonce")
    bare = b"n=nobody,r=cnonce"
    server_first = _scram_to_server_first(mech, b"n,," + bare, None)
    attrs = dict(a.split(b"=", 1) for a in server_first.split(b","))
    assert attrs[b"r"] == b"cnonceservernonce"
    assert len(base64.b64decode(attrs[b"s"])) == 16
    assert attrs[b"i"] == b"4096"
    client_final, _ = _scram_client_final("anything", bare, server_first)
    assert mech.respond(client_final) == BAD_CREDENTIALS

    # Same name → same fake salt; different name → different salt.
    again = _scram_to_server_first(ScramSha256Mechanism(nonce="x"), b"n,,n=nobody,r=c", None)
    other = _scram_to_server_first(ScramSha256Mechanism(nonce="x"), b"n,,n=nobody2,r=c", None)
    assert again.split(b",")[1] == server_first.split(b",")[1]
    assert other.split(b",")[1] != server_first.split(b",")[1]


def test_scram_authzid_and_escaped_username() -> None:
    creds = derive_scram_credentials("pw", iterations=FAST_ITERATIONS)
    mech = ScramSha256Mechanism(nonce="sn")
    gs2 = b"n,a=ad=3Dmin=2Cx,"
    bare = b"n=we=2Cird=3Dname,r=cn"
    step = mech.start(gs2 + bare)
    assert step == NeedScramCredentials(authcid="we,ird=name", authzid="ad=min,x")
    server_first = mech.credentials_found(creds)
    assert isinstance(server_first, Challenge)
    client_final, server_final = _scram_client_final("pw", bare, server_first.data, gs2)
    assert mech.respond(client_final) == Challenge(server_final)
    assert mech.respond(b"") == Success(authcid="we,ird=name", authzid="ad=min,x")


def test_scram_gs2_flag_y_accepted_and_extensions_ignored() -> None:
    creds = derive_scram_credentials("pw", iterations=FAST_ITERATIONS)
    mech = ScramSha256Mechanism(nonce="sn")
    bare = b"n=u,r=cn,x=future"
    server_first = _scram_to_server_first(mech, b"y,," + bare, creds)
    client_final, server_final = _scram_client_final("pw", bare, server_first, b"y,,")
    assert mech.respond(client_final) == Challenge(server_final)


def test_scram_username_and_password_saslprep() -> None:
    # Password stored as "\u00aa" (FEMININE ORDINAL) normalises to "a"; a client that sends the
    # already-prepared form must authenticate, and the user name is prepared too.
    creds = derive_scram_credentials("p\u00aass", iterations=FAST_ITERATIONS)
    assert (
        creds.stored_key
        == derive_scram_credentials("pass", creds.salt, creds.iterations).stored_key
    )
    mech = ScramSha256Mechanism(nonce="sn")
    bare = "n=\u2168,r=cn".encode()
    step = mech.start(b"n,," + bare)
    assert step == NeedScramCredentials(authcid="IX", authzid="")
    server_first = mech.credentials_found(creds)
    assert isinstance(server_first, Challenge)
    client_final, _ = _scram_client_final("pass", bare, server_first.data)
    assert isinstance(mech.respond(client_final), Challenge)


def test_scram_username_failing_saslprep() -> None:
    assert ScramSha256Mechanism().start(b"n,,n=a\x07b,r=cn") == BAD_CREDENTIALS
    assert ScramSha256Mechanism().start("n,,n=\u00ad,r=cn".encode()) == BAD_CREDENTIALS


@pytest.mark.parametrize(
    "client_first",
    [
        b"",  # SMTP "="
        b"n,,",
        b"n,n=user,r=abc",  # gs2 header missing a comma
        b"p=tls-unique,,n=user,r=abc",  # channel binding demanded: refused
        b"p,,n=user,r=abc",
        b"x,,n=user,r=abc",
        b"N,,n=user,r=abc",
        b"n,b=admin,n=user,r=abc",  # authzid must start with a=
        b"n,a=,n=user,r=abc",  # empty authzid value
        b"n,a=ad=2cmin,n=user,r=abc",  # lower-case escape
        b"n,,m=ext,n=user,r=abc",  # reserved-mext MUST fail
        b"n,,n=user",  # no nonce
        b"n,,r=abc,n=user",  # wrong order
        b"n,,n=,r=abc",  # empty user name
        b"n,,n=us=er,r=abc",  # bad escape
        b"n,,n=user=2,r=abc",  # truncated escape
        b"n,,n=us\x00er,r=abc",  # NUL
        b"n,,n=user,r=",  # empty nonce
        b"n,,n=user,r=ab c",  # non-printable nonce
        b"n,,n=user,r=abc,",  # empty extension
        b"n,,n=user,r=abc,1=x",  # extension name not ALPHA
        b"n,,n=user,r=abc,xy",  # extension without "="
        b"n,,n=\xffuser,r=abc",  # invalid UTF-8
    ],
)
def test_scram_malformed_client_first(client_first: bytes) -> None:
    assert ScramSha256Mechanism().start(client_first) == MALFORMED
    mech = ScramSha256Mechanism()
    assert mech.start(None) == Challenge(b"")
    assert mech.respond(client_first) == MALFORMED


@pytest.mark.parametrize(
    "client_final",
    [
        b"",
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",  # no proof
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",  # only a proof
        # wrong channel binding (c= must be base64 of "n,,")
        b"c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        # channel binding not base64
        b"c=b!ws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        # nonce does not match
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        # attributes out of order
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,c=biws,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        # proof not base64 / wrong length
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=***",
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA",
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN",
        # bad extension
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        b"\xff",
    ],
)
def test_scram_malformed_client_final(rfc_creds: ScramCredentials, client_final: bytes) -> None:
    mech = ScramSha256Mechanism(nonce=RFC_SERVER_NONCE)
    _scram_to_server_first(mech, RFC_CLIENT_FIRST, rfc_creds)
    assert mech.respond(client_final) == MALFORMED
    assert mech.respond(RFC_CLIENT_FINAL) == MALFORMED  # exchange is over


def test_scram_client_final_extension_ignored(rfc_creds: ScramCredentials) -> None:
    mech = ScramSha256Mechanism(nonce=RFC_SERVER_NONCE)
    bare = RFC_CLIENT_FIRST[3:]
    server_first = _scram_to_server_first(mech, RFC_CLIENT_FIRST, rfc_creds)
    # Build a client-final with an extension; the proof covers it via AuthMessage.
    attrs = dict(a.split("=", 1) for a in server_first.decode().split(","))
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", RFC_SALT, 4096)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    without_proof = b"c=biws,r=" + attrs["r"].encode() + b",x=ext"
    auth = bare + b"," + server_first + b"," + without_proof
    sig = hmac.new(rfc_creds.stored_key, auth, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, sig, strict=True))
    step = mech.respond(without_proof + b",p=" + base64.b64encode(proof))
    assert isinstance(step, Challenge)
    assert step.data.startswith(b"v=")


def test_scram_channel_binding_must_match_gs2_header() -> None:
    # Client sent "y,," but claims "n,," in c= → refused.
    creds = derive_scram_credentials("pw", iterations=FAST_ITERATIONS)
    mech = ScramSha256Mechanism(nonce="sn")
    bare = b"n=u,r=cn"
    server_first = _scram_to_server_first(mech, b"y,," + bare, creds)
    client_final, _ = _scram_client_final("pw", bare, server_first, b"n,,")
    assert mech.respond(client_final) == MALFORMED


def test_scram_out_of_order(rfc_creds: ScramCredentials) -> None:
    assert ScramSha256Mechanism().respond(RFC_CLIENT_FIRST) == MALFORMED
    assert ScramSha256Mechanism().credentials_found(rfc_creds) == MALFORMED
    assert ScramSha256Mechanism().password_checked(True) == MALFORMED
    mech = ScramSha256Mechanism(nonce=RFC_SERVER_NONCE)
    assert isinstance(mech.start(RFC_CLIENT_FIRST), NeedScramCredentials)
    assert mech.respond(RFC_CLIENT_FINAL) == MALFORMED  # credentials not supplied yet
    assert mech.credentials_found(rfc_creds) == MALFORMED
    mech = ScramSha256Mechanism(nonce=RFC_SERVER_NONCE)
    _scram_to_server_first(mech, RFC_CLIENT_FIRST, rfc_creds)
    assert mech.credentials_found(rfc_creds) == MALFORMED
    mech = ScramSha256Mechanism()
    assert mech.start(None) == Challenge(b"")
    assert mech.start(None) == MALFORMED


@pytest.mark.parametrize("nonce", ["", "a,b", "caf\u00e9", "a b"])
def test_scram_rejects_bad_injected_nonce(nonce: str) -> None:
    with pytest.raises(ValueError):
        ScramSha256Mechanism(nonce=nonce)


# --------------------------------------------------------------------------------------------
# ScramCredentials storage


def test_credentials_text_round_trip(rfc_creds: ScramCredentials) -> None:
    text = rfc_creds.to_text()
    assert text.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
    assert ScramCredentials.from_text(text) == rfc_creds
    fresh = derive_scram_credentials("s3cret", iterations=FAST_ITERATIONS)
    assert len(fresh.salt) == 16
    assert ScramCredentials.from_text(fresh.to_text()) == fresh
    assert derive_scram_credentials("s3cret", iterations=FAST_ITERATIONS).salt != fresh.salt


def test_credentials_repr_hides_keys(rfc_creds: ScramCredentials) -> None:
    text = repr(rfc_creds)
    assert base64.b64encode(rfc_creds.stored_key).decode() not in text
    assert repr(rfc_creds.stored_key) not in text
    assert repr(rfc_creds.server_key) not in text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:AAAA",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==",
        "SCRAM-SHA-256$x:W22ZaJ0SNY7soEsUEjb6gQ==$"
        + base64.b64encode(bytes(32)).decode()
        + ":"
        + base64.b64encode(bytes(32)).decode(),
        "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$"
        + base64.b64encode(bytes(32)).decode()
        + ":"
        + base64.b64encode(bytes(32)).decode(),
        "SCRAM-SHA-256$4096:$"
        + base64.b64encode(bytes(32)).decode()
        + ":"
        + base64.b64encode(bytes(32)).decode(),
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:AAAA",  # keys too short
        "SCRAM-SHA-256$4096:W22Z!!$AAAA:AAAA",
        "SCRAM-SHA-256$\u0664\u0660:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:AAAA",  # non-ASCII digits
    ],
)
def test_credentials_from_text_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        ScramCredentials.from_text(text)


def test_derive_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        derive_scram_credentials("pw", iterations=0)
    with pytest.raises(ValueError):
        derive_scram_credentials("pw", salt=b"")
    with pytest.raises(ValueError):
        derive_scram_credentials("")
    with pytest.raises(ValueError):
        derive_scram_credentials("bad\x00pw")


# --------------------------------------------------------------------------------------------
# Robustness: no call sequence with arbitrary client data ever raises.

_actions = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.one_of(st.none(), st.binary(max_size=64))),
        st.tuples(st.just("respond"), st.binary(max_size=64)),
        st.tuples(st.just("checked"), st.booleans()),
        st.tuples(st.just("creds"), st.booleans()),
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(MECHANISMS), actions=_actions)
def test_mechanisms_never_raise(name: str, actions: list[tuple[str, object]]) -> None:
    creds = derive_scram_credentials("pw", salt=b"salt", iterations=1)
    mech: Mechanism | None = new_mechanism(name)
    assert mech is not None
    finished = False
    for kind, arg in actions:
        if kind == "start":
            assert arg is None or isinstance(arg, bytes)
            step = mech.start(arg)
        elif kind == "respond":
            assert isinstance(arg, bytes)
            step = mech.respond(arg)
        elif kind == "checked":
            step = mech.password_checked(bool(arg))
        else:
            step = mech.credentials_found(creds if arg else None)
        if finished:
            assert step == MALFORMED
        finished = finished or isinstance(step, Success | Failure)
