"""Client settings given by the user (security above all), for every client onceflow makes.

Kafka users keep them in a properties file (kafka-console-producer's
``--producer.config``, kafka-topics' ``--command-config``) or give them one at a time
(kcat's ``-X key=value``); ``add_arguments`` offers both as ``--client-config FILE`` and
``-X KEY=VALUE`` (which wins). The settings use librdkafka's names
(``security.protocol``, ``sasl.mechanism``, ``sasl.username``, ``sasl.password``,
``ssl.ca.location``, ``ssl.certificate.location``, ``ssl.key.location``...); a Java
client's ``sasl.jaas.config`` line is read for its user name and password.

librdkafka clients take them as they are. onceflow's own wire client and the verifier's
proxy speak TLS and SASL themselves: ``security_of`` turns the settings into an
``ssl.SSLContext`` and a SASL login. Passwords are never shown: ``redacted`` hides them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path

#: Settings whose values are secrets.
SECRET_KEYS = frozenset(
    {
        "sasl.password",
        "sasl.jaas.config",
        "ssl.key.password",
        "ssl.keystore.password",
        "sasl.oauthbearer.client.secret",
    }
)
HIDDEN = "[hidden]"
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_JAAS_OPTION = re.compile(r'(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"')


class ClientSettingsError(ValueError):
    """Client settings that cannot be used; the message is one line for humans."""


def read_properties(path: Path) -> dict[str, str]:
    """``key=value`` (or ``key: value``) lines of a Kafka-style properties file; blank
    lines and lines starting with ``#`` or ``!`` are skipped."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ClientSettingsError(f"cannot read client config {path}: {reason}") from None
    settings: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        at = min((i for i in (line.find("="), line.find(":")) if i > 0), default=-1)
        if at < 0:
            raise ClientSettingsError(f"{path}:{number}: expected key=value")
        settings[line[:at].strip()] = line[at + 1 :].strip()
    return settings


def parse_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """{"k": "v"} from ["k=v", ...] (``-X`` options)."""
    settings: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ClientSettingsError(f"-X takes KEY=VALUE, got {pair.split('=')[0]!r}")
        settings[key.strip()] = value
    return settings


def normalized(settings: Mapping[str, str]) -> dict[str, str]:
    """``settings`` checked and in librdkafka's terms: ``sasl.jaas.config`` becomes
    ``sasl.username`` and ``sasl.password``; ``bootstrap.servers`` is refused (it has
    its own option)."""
    result = dict(settings)
    if "bootstrap.servers" in result:
        raise ClientSettingsError("give bootstrap.servers with --bootstrap, not as a setting")
    jaas = result.pop("sasl.jaas.config", None)
    if jaas is not None:
        options = dict(_JAAS_OPTION.findall(jaas))
        if "username" not in options or "password" not in options:
            raise ClientSettingsError('sasl.jaas.config has no username="..." password="..."')
        result.setdefault("sasl.username", options["username"])
        result.setdefault("sasl.password", options["password"])
    protocol = protocol_of(result)
    if protocol not in PROTOCOLS:
        raise ClientSettingsError(
            f"security.protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}"
        )
    return result


def redacted(settings: Mapping[str, str]) -> dict[str, str]:
    """``settings`` with every secret replaced by ``[hidden]``, for logs and output."""
    return {k: HIDDEN if k in SECRET_KEYS else v for k, v in settings.items()}


def write_properties(path: Path, settings: Mapping[str, str]) -> Path:
    """Write ``settings`` as a properties file only its owner can read (passwords go to
    child processes through it, never on their command line)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.writelines(f"{key}={value}\n" for key, value in settings.items())
    return Path(path)


# -- the command line ------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--client-config FILE`` and repeatable ``-X KEY=VALUE``."""
    parser.add_argument(
        "--client-config", type=Path, metavar="FILE",
        help="client settings (security.protocol, sasl.*, ssl.*) as a Kafka properties "
        "file, like --command-config of Kafka's tools",
    )  # fmt: skip
    parser.add_argument(
        "-X", dest="client_settings", action="append", default=[], metavar="KEY=VALUE",
        help="one client setting, kcat style (repeatable; wins over --client-config)",
    )  # fmt: skip


def from_arguments(args: argparse.Namespace) -> dict[str, str]:
    """The client settings ``add_arguments`` collected (file first, then ``-X``)."""
    settings = read_properties(args.client_config) if args.client_config else {}
    return normalized(settings | parse_pairs(args.client_settings))


def check(settings: Mapping[str, str]) -> None:
    """Raise ClientSettingsError unless librdkafka knows every setting and its value,
    and onceflow's own clients can use the TLS and SASL ones: one line up front instead
    of a failure in each client."""
    from confluent_kafka import KafkaException, Producer

    from onceflow.client_logging import client_config

    security_of(settings)
    try:
        Producer(client_config({}, settings))
    except KafkaException as exc:
        raise ClientSettingsError(f"bad client setting: {exc.args[0].str()}") from None


# -- what onceflow's own clients need of them ------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class SaslLogin:
    """Who to log in as over SASL, and how."""

    mechanism: str
    username: str
    password: str = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True, slots=True)
class ClientSecurity:
    """How a Python socket client reaches a listener: TLS (None: plain TCP) and SASL
    (None: no authentication)."""

    protocol: str = "PLAINTEXT"
    tls: ssl.SSLContext | None = None
    sasl: SaslLogin | None = None


def protocol_of(settings: Mapping[str, str]) -> str:
    """``security.protocol`` in capitals (librdkafka takes any case); PLAINTEXT if unset."""
    return settings.get("security.protocol", "PLAINTEXT").upper()


def uses_tls(settings: Mapping[str, str]) -> bool:
    """Whether the protocol is SSL or SASL_SSL."""
    return protocol_of(settings).endswith("SSL")


def security_of(settings: Mapping[str, str]) -> ClientSecurity:
    """The TLS context and SASL login ``settings`` describe, as librdkafka reads them."""
    settings = normalized(settings)
    protocol = protocol_of(settings)
    tls = tls_context(settings) if uses_tls(settings) else None
    sasl = None
    if protocol.startswith("SASL"):
        mechanism = settings.get("sasl.mechanism", settings.get("sasl.mechanisms", "")).upper()
        if mechanism not in SASL_MECHANISMS:
            raise ClientSettingsError(
                f"sasl.mechanism must be one of {', '.join(SASL_MECHANISMS)}, "
                f"got {mechanism or 'nothing'}"
            )
        if "sasl.username" not in settings or "sasl.password" not in settings:
            raise ClientSettingsError(f"{protocol} needs sasl.username and sasl.password")
        sasl = SaslLogin(mechanism, settings["sasl.username"], settings["sasl.password"])
    return ClientSecurity(protocol, tls, sasl)


def tls_context(settings: Mapping[str, str]) -> ssl.SSLContext:
    """A client SSL context from librdkafka's ``ssl.*`` settings: the CA (``ssl.ca.pem``,
    or the file or directory of ``ssl.ca.location``; default: the system's), an optional
    client certificate and key, and hostname checking unless
    ``ssl.endpoint.identification.algorithm=none``."""
    ca = settings.get("ssl.ca.location")
    try:
        if "ssl.ca.pem" in settings:
            context = ssl.create_default_context(cadata=settings["ssl.ca.pem"])
        elif ca in (None, "probe"):
            context = ssl.create_default_context()
        elif Path(ca).is_dir():
            context = ssl.create_default_context(capath=ca)
        else:
            context = ssl.create_default_context(cafile=ca)
        cert, key = settings.get("ssl.certificate.location"), settings.get("ssl.key.location")
        if cert:
            context.load_cert_chain(cert, key or None, settings.get("ssl.key.password"))
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ClientSettingsError(f"cannot load the client's TLS files: {reason}") from None
    identification = settings.get("ssl.endpoint.identification.algorithm", "https").lower()
    context.check_hostname = identification != "none"
    if settings.get("enable.ssl.certificate.verification", "true").lower() == "false":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
