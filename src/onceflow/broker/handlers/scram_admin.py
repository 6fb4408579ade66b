"""DescribeUserScramCredentials and AlterUserScramCredentials: SCRAM users through
Kafka's admin APIs (``kafka-configs --entity-type users``, AdminClient)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from kio.schema.errors import ErrorCode

from onceflow.broker.offline import StorageRefused, check_writable
from onceflow.broker.protocol import NO_THROTTLE, build, response_module
from onceflow.broker.security.access import Operation, ResourceType, allowed
from onceflow.broker.security.credentials import CredentialStoreError
from onceflow.broker.security.scram import (
    MAX_ITERATIONS,
    MIN_ITERATIONS,
    ScramCredential,
    ScramMechanism,
)

DESCRIBE_KEY = 50
ALTER_KEY = 51


def describe(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(DESCRIBE_KEY, request.__version__)
    store = broker.security.credentials

    def refuse(error: ErrorCode, message: str) -> Any:
        return build(
            m.DescribeUserScramCredentialsResponse,
            throttle_time=NO_THROTTLE,
            error_code=error,
            error_message=message,
            results=(),
        )

    if not allowed(broker, Operation.DESCRIBE, ResourceType.CLUSTER):
        return refuse(ErrorCode.cluster_authorization_failed, "not authorized")
    try:
        users = store.users()
    except CredentialStoreError as exc:
        return refuse(ErrorCode.unknown_server_error, str(exc))
    wanted = [u.name for u in request.users] if request.users else sorted(users)
    counts = Counter(wanted)
    results = []
    for name in dict.fromkeys(wanted):
        error, message = ErrorCode.none, None
        if counts[name] > 1:
            error, message = ErrorCode.duplicate_resource, f"user {name} is asked for twice"
        elif name not in users:
            error, message = ErrorCode.resource_not_found, f"user {name} has no credentials"
        infos = () if error else tuple(
            m.CredentialInfo(mechanism=mech.code, iterations=cred.iterations)
            for mech, cred in sorted(users[name].items(), key=lambda item: item[0].code)
        )  # fmt: skip
        results.append(
            m.DescribeUserScramCredentialsResult(
                user=name, error_code=error, error_message=message, credential_infos=infos
            )
        )
    return build(
        m.DescribeUserScramCredentialsResponse,
        throttle_time=NO_THROTTLE,
        error_code=ErrorCode.none,
        error_message=None,
        results=tuple(results),
    )


def alter(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(ALTER_KEY, request.__version__)
    store = broker.security.credentials
    names = [d.name for d in request.deletions] + [u.name for u in request.upsertions]
    duplicated = {name for name, n in Counter(names).items() if n > 1}
    outcome: dict[str, tuple[ErrorCode, str | None]] = {}

    def note(name: str, error: ErrorCode, message: str | None) -> None:
        outcome.setdefault(name, (error, message))

    refusal: tuple[ErrorCode, str] | None = None
    if not allowed(broker, Operation.ALTER, ResourceType.CLUSTER):
        refusal = ErrorCode.cluster_authorization_failed, "not authorized"
    else:
        try:
            check_writable(broker)
        except StorageRefused as exc:
            refusal = exc.code, str(exc)
    if refusal is not None:
        # Nothing is attempted: every user named gets the refusal.
        duplicated = set(names)
        for name in names:
            note(name, *refusal)
    for name in duplicated:
        note(name, ErrorCode.duplicate_resource, f"user {name} is altered more than once")
    for deletion in request.deletions:
        if deletion.name in duplicated:
            continue
        mechanism = ScramMechanism.from_code(deletion.mechanism)
        if mechanism is None:
            note(deletion.name, ErrorCode.unsupported_sasl_mechanism, "unknown SCRAM mechanism")
            continue
        try:
            found = store.delete(deletion.name, mechanism)
        except CredentialStoreError as exc:
            note(deletion.name, ErrorCode.unknown_server_error, str(exc))
            continue
        if not found:
            note(deletion.name, ErrorCode.resource_not_found, "no such credential to delete")
        note(deletion.name, ErrorCode.none, None)
    for upsertion in request.upsertions:
        if upsertion.name in duplicated:
            continue
        note(upsertion.name, *_upsert(store, upsertion))
    return build(
        m.AlterUserScramCredentialsResponse,
        throttle_time=NO_THROTTLE,
        results=tuple(
            m.AlterUserScramCredentialsResult(user=name, error_code=error, error_message=message)
            for name, (error, message) in outcome.items()
        ),
    )


def _upsert(store: Any, upsertion: Any) -> tuple[ErrorCode, str | None]:
    mechanism = ScramMechanism.from_code(upsertion.mechanism)
    if mechanism is None:
        return ErrorCode.unsupported_sasl_mechanism, "unknown SCRAM mechanism"
    if not upsertion.name:
        return ErrorCode.unacceptable_credential, "the user name is empty"
    if not MIN_ITERATIONS <= upsertion.iterations <= MAX_ITERATIONS:
        return (
            ErrorCode.unacceptable_credential,
            f"iterations must be {MIN_ITERATIONS}-{MAX_ITERATIONS}",
        )
    if not upsertion.salt or not upsertion.salted_password:
        return ErrorCode.unacceptable_credential, "salt and salted password are required"
    credential = ScramCredential.from_salted_password(
        mechanism, upsertion.salt, upsertion.iterations, upsertion.salted_password
    )
    try:
        store.upsert(upsertion.name, mechanism, credential)
    except CredentialStoreError as exc:
        return ErrorCode.unknown_server_error, str(exc)
    return ErrorCode.none, None
