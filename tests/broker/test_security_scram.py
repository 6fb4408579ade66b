"""The SCRAM math against RFC 7677's worked example, and the credential file."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from onceflow.broker.security.credentials import CredentialStore
from onceflow.broker.security.sasl import PlainServer
from onceflow.broker.security.scram import (
    AuthenticationFailed,
    ScramCredential,
    ScramMechanism,
    ScramServer,
)

# RFC 7677 section 3: user "user", password "pencil", SCRAM-SHA-256.
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def _rfc_server() -> ScramServer:
    mechanism = ScramMechanism.SCRAM_SHA_256
    salted = mechanism.salted_password("pencil", RFC_SALT, 4096)
    credential = ScramCredential.from_salted_password(mechanism, RFC_SALT, 4096, salted)
    return ScramServer(mechanism, {"user": credential}.get, server_nonce=lambda: RFC_SERVER_NONCE)


def test_rfc7677_exchange() -> None:
    server = _rfc_server()
    assert server.step(RFC_CLIENT_FIRST) == (RFC_SERVER_FIRST, False)
    assert server.step(RFC_CLIENT_FINAL) == (RFC_SERVER_FINAL, True)
    assert server.user == "user"


def test_a_tampered_proof_fails() -> None:
    server = _rfc_server()
    server.step(RFC_CLIENT_FIRST)
    tampered = RFC_CLIENT_FINAL.replace(b"p=dHzb", b"p=dHzc")
    with pytest.raises(AuthenticationFailed):
        server.step(tampered)
    assert server.user is None


def test_an_unknown_user_fails_only_at_the_proof() -> None:
    server = ScramServer(ScramMechanism.SCRAM_SHA_256, lambda user: None)
    first, done = server.step(RFC_CLIENT_FIRST)
    assert not done and first.startswith(b"r=rOprNGfwEbeRWgbNEkqO")
    final = b"c=biws,r=" + first.split(b",")[0][2:] + b",p=" + base64.b64encode(bytes(32))
    with pytest.raises(AuthenticationFailed):
        server.step(final)


def test_channel_binding_is_refused() -> None:
    with pytest.raises(AuthenticationFailed):
        _rfc_server().step(b"p=tls-unique,,n=user,r=abc")


def test_credential_file_holds_no_password_and_is_reloaded(tmp_path: Path) -> None:
    writer = CredentialStore(tmp_path)
    reader = CredentialStore(tmp_path)
    assert reader.lookup("dora", ScramMechanism.SCRAM_SHA_512) is None
    mechanism = ScramMechanism.SCRAM_SHA_512
    writer.upsert("dora", mechanism, ScramCredential.from_password(mechanism, "s3cret-pw"))
    text = (tmp_path / "users.json").read_text()
    assert "s3cret-pw" not in text
    assert json.loads(text)["users"]["dora"]["SCRAM-SHA-512"]["iterations"] == 4096
    assert (tmp_path / "users.json").stat().st_mode & 0o077 == 0
    # The reader sees the new user without being told.
    credential = reader.lookup("dora", mechanism)
    assert credential is not None and credential.matches_password(mechanism, "s3cret-pw")
    assert not credential.matches_password(mechanism, "s3cret-pX")
    # PLAIN checks against the stored SCRAM credential.
    plain = PlainServer(reader)
    assert plain.step(b"\0dora\0s3cret-pw") == (b"", True)
    with pytest.raises(AuthenticationFailed):
        PlainServer(reader).step(b"\0dora\0wrong")
    assert writer.delete("dora")
    assert reader.lookup("dora", mechanism) is None
