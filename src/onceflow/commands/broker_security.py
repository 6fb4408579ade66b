"""The listener, TLS and SASL options of ``onceflow broker``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from onceflow.broker.security.listeners import (
    ListenerError,
    build_listeners,
    parse_protocol_map,
)
from onceflow.broker.security.sasl import MECHANISMS
from onceflow.broker.security.tls import ClientAuth, TlsConfig, TlsError, write_self_signed


class SecurityOptionError(Exception):
    """Options that do not fit together; the message is one line for the user."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --listener, TLS and SASL options to the broker's parser."""
    group = parser.add_argument_group(
        "listeners and security",
        "Without --listener the broker has one PLAINTEXT listener on --host:--port.",
    )
    group.add_argument(
        "--listener", action="append", default=[], metavar="NAME://HOST:PORT",
        help="listen here (repeatable); NAME is PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL "
        "or a name given a protocol by --listener-security-protocol-map",
    )  # fmt: skip
    group.add_argument(
        "--advertised-listener", action="append", default=[], metavar="NAME://HOST:PORT",
        help="address clients of listener NAME are told to use (port 0: the bound one)",
    )  # fmt: skip
    group.add_argument(
        "--listener-security-protocol-map", default="", metavar="NAME:PROTOCOL,...",
        help="security protocol of listeners with other names, e.g. INTERNAL:SASL_SSL",
    )  # fmt: skip
    group.add_argument("--ssl-certfile", type=Path, help="server certificate (PEM)")
    group.add_argument("--ssl-keyfile", type=Path, help="server private key (PEM)")
    group.add_argument(
        "--ssl-cafile", type=Path, help="CA certificates client certificates are checked with"
    )
    group.add_argument(
        "--ssl-client-auth",
        choices=[c.value for c in ClientAuth],
        default=ClientAuth.NONE.value,
        help="ask TLS clients for a certificate; its subject becomes the principal",
    )
    group.add_argument(
        "--tls-self-signed", type=Path, metavar="DIR",
        help="write (or reuse) a CA and a server certificate in DIR and serve TLS with "
        "them; clients trust DIR/ca.pem",
    )  # fmt: skip
    group.add_argument(
        "--sasl-mechanism", action="append", choices=MECHANISMS, metavar="MECHANISM",
        help=f"SASL mechanism to offer (repeatable; default: {', '.join(MECHANISMS)})",
    )  # fmt: skip
    group.add_argument(
        "--authentication-timeout-ms", type=int, default=10_000, metavar="MS",
        help="close connections that have not finished TLS and SASL within this long",
    )  # fmt: skip
    group.add_argument(
        "--acls", action="store_true",
        help="check every request against the ACLs (onceflow acls, CreateAcls)",
    )  # fmt: skip
    group.add_argument(
        "--super-user", action="append", default=[], metavar="User:NAME",
        help="a principal the ACLs never restrict (repeatable)",
    )  # fmt: skip
    group.add_argument(
        "--allow-everyone-if-no-acl-found", action="store_true",
        help="allow what no ACL mentions (default: deny it)",
    )  # fmt: skip


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    """BrokerConfig keyword arguments from the parsed options."""
    try:
        listeners = build_listeners(
            args.listener,
            args.advertised_listener,
            parse_protocol_map(args.listener_security_protocol_map),
        )
    except ListenerError as exc:
        raise SecurityOptionError(str(exc)) from exc
    if args.advertised_listener and not args.listener:
        raise SecurityOptionError("--advertised-listener needs --listener")
    if args.authentication_timeout_ms <= 0:
        raise SecurityOptionError("--authentication-timeout-ms must be positive")
    if (args.super_user or args.allow_everyone_if_no_acl_found) and not args.acls:
        raise SecurityOptionError("--super-user and --allow-everyone-if-no-acl-found need --acls")
    bad = [p for p in args.super_user if not p.startswith("User:")]
    if bad:
        raise SecurityOptionError(f"super users are principals like User:NAME, got {bad[0]!r}")
    values: dict[str, Any] = {
        "acls_enabled": args.acls,
        "super_users": tuple(args.super_user),
        "allow_everyone_if_no_acl_found": args.allow_everyone_if_no_acl_found,
        "listeners": listeners,
        "tls": _tls(args, tuple(filter(None, (lst.advertised_host for lst in listeners)))),
        "authentication_timeout_ms": args.authentication_timeout_ms,
    }
    if args.sasl_mechanism:
        values["sasl_mechanisms"] = tuple(dict.fromkeys(args.sasl_mechanism))
    return values


def _tls(args: argparse.Namespace, hosts: tuple[str, ...]) -> TlsConfig | None:
    client_auth = ClientAuth(args.ssl_client_auth)
    if args.tls_self_signed is not None:
        if args.ssl_certfile or args.ssl_keyfile:
            raise SecurityOptionError("--tls-self-signed and --ssl-certfile exclude each other")
        try:
            files = write_self_signed(args.tls_self_signed, hosts)
        except TlsError as exc:
            raise SecurityOptionError(str(exc)) from exc
        cafile = args.ssl_cafile or files.ca_file
        return TlsConfig(files.certfile, files.keyfile, cafile, client_auth)
    if args.ssl_certfile is None and args.ssl_keyfile is None:
        if client_auth is not ClientAuth.NONE or args.ssl_cafile:
            raise SecurityOptionError("--ssl-client-auth and --ssl-cafile need a certificate")
        return None
    if args.ssl_certfile is None or args.ssl_keyfile is None:
        raise SecurityOptionError("--ssl-certfile and --ssl-keyfile go together")
    return TlsConfig(args.ssl_certfile, args.ssl_keyfile, args.ssl_cafile, client_auth)
