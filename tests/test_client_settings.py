"""Client settings as users give them (properties file, -X), and the SCRAM client side
against the broker's SCRAM server."""

from __future__ import annotations

import argparse
import base64
import re
import ssl
from pathlib import Path

import pytest

from onceflow import client_settings
from onceflow.broker.security.scram import ScramCredential, ScramServer
from onceflow.client_settings import ClientSettingsError, security_of
from onceflow.scram import ScramClient, ScramError, ScramMechanism


def _args(*argv: str) -> dict[str, str]:
    parser = argparse.ArgumentParser()
    client_settings.add_arguments(parser)
    return client_settings.from_arguments(parser.parse_args(argv))


def test_properties_file_then_x_options_which_win(tmp_path: Path) -> None:
    path = tmp_path / "client.properties"
    path.write_text(
        "# comment\n! also a comment\n\nsecurity.protocol = SASL_SSL\n"
        "sasl.mechanism: PLAIN\nsasl.username=file-user\n"
        "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
        'username="jaas-user" password="p=w;d";\n'
    )
    settings = _args("--client-config", str(path), "-X", "sasl.username=x-user", "-X", "a.b=c=d")
    assert settings == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
        "sasl.username": "x-user", "sasl.password": "p=w;d", "a.b": "c=d",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("-X", "novalue"), "-X takes KEY=VALUE, got 'novalue'"),
        (("-X", "bootstrap.servers=h:1"), "give bootstrap.servers with --bootstrap"),
        (("-X", "security.protocol=SASL_TLS"), "security.protocol 'SASL_TLS' is not one of"),
    ],
)
def test_bad_settings_are_one_readable_line(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(ClientSettingsError, match=re.escape(message)):
        _args(*argv)


def test_a_bad_properties_line_names_its_place(tmp_path: Path) -> None:
    path = tmp_path / "bad.properties"
    path.write_text("security.protocol=SSL\njust words\n")
    with pytest.raises(ClientSettingsError, match=r"bad.properties:2: expected key=value"):
        _args("--client-config", str(path))


def test_secrets_are_hidden_and_written_for_the_owner_only(tmp_path: Path) -> None:
    settings = {"sasl.password": "s3cret", "ssl.key.password": "k3y", "sasl.username": "u"}
    assert client_settings.redacted(settings) == {
        "sasl.password": "[hidden]", "ssl.key.password": "[hidden]", "sasl.username": "u",
    }  # fmt: skip
    path = client_settings.write_properties(tmp_path / "c.properties", settings)
    assert path.stat().st_mode & 0o777 == 0o600
    assert client_settings.read_properties(path) == settings
    login = security_of({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                         "sasl.username": "u", "sasl.password": "s3cret"})  # fmt: skip
    assert "s3cret" not in repr(login)


def test_security_of_reads_tls_and_sasl_as_librdkafka_does() -> None:
    plain = security_of({})
    assert (plain.protocol, plain.tls, plain.sasl) == ("PLAINTEXT", None, None)
    tls = security_of({"security.protocol": "ssl",
                       "ssl.endpoint.identification.algorithm": "none"})  # fmt: skip
    assert tls.tls is not None and tls.tls.verify_mode is ssl.CERT_REQUIRED
    assert not tls.tls.check_hostname and tls.sasl is None
    with pytest.raises(ClientSettingsError, match=r"sasl\.mechanism must be one of"):
        security_of({"security.protocol": "SASL_SSL"})
    with pytest.raises(ClientSettingsError, match="cannot load the client's TLS files"):
        security_of({"security.protocol": "SSL", "ssl.ca.location": "/nonexistent/ca.pem"})


@pytest.mark.parametrize("mechanism", list(ScramMechanism))
def test_scram_client_logs_in_to_the_broker_side_and_checks_its_signature(
    mechanism: ScramMechanism,
) -> None:
    credential = ScramCredential.from_password(mechanism, "pencil")
    server = ScramServer(mechanism, lambda user: credential if user == "a,b=c" else None)
    client = ScramClient(mechanism, "a,b=c", "pencil")
    server_first, _ = server.step(client.first())
    server_final, done = server.step(client.final(server_first))
    assert done and server.user == "a,b=c"
    client.check(server_final)
    forged = b"v=" + base64.b64encode(b"\0" * len(base64.b64decode(server_final[2:])))
    with pytest.raises(ScramError, match="does not know the user"):
        client.check(forged)


def test_scram_client_refuses_a_nonce_the_server_did_not_extend() -> None:
    client = ScramClient(ScramMechanism.SCRAM_SHA_256, "u", "p", nonce="abc")
    with pytest.raises(ScramError, match="does not extend ours"):
        client.final(b"r=abc,s=c2FsdA==,i=4096")
    with pytest.raises(ScramError, match="4 SCRAM iterations"):
        client.final(b"r=abcdef,s=c2FsdA==,i=4")
