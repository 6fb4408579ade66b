"""CreateAcls, DescribeAcls and DeleteAcls: Kafka's ACL admin APIs (kafka-acls,
AdminClient). Describing needs DESCRIBE on the cluster, changing needs ALTER."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from onceflow.broker.offline import StorageRefused, check_writable
from onceflow.broker.protocol import NO_THROTTLE, build, response_module
from onceflow.broker.security.access import allowed
from onceflow.broker.security.acls import (
    Acl,
    AclError,
    AclFilter,
    Operation,
    PatternType,
    Permission,
    ResourceType,
)

DESCRIBE_KEY = 29
CREATE_KEY = 30
DELETE_KEY = 31
_LITERAL = 3


class _Refused(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _gate(broker: Any, operation: Operation) -> _Refused | None:
    if not broker.security.authorizer.enabled:
        return _Refused(ErrorCode.security_disabled, "ACLs are off: start the broker with --acls")
    if not allowed(broker, operation, ResourceType.CLUSTER):
        return _Refused(ErrorCode.cluster_authorization_failed, "not authorized on the cluster")
    return None


def _enum(kind: type, value: int, what: str, *, concrete: bool) -> Any:
    try:
        member = kind(value)
    except ValueError:
        raise _Refused(ErrorCode.invalid_request, f"unknown {what} {value}") from None
    if concrete and member.name in ("ANY", "MATCH"):
        raise _Refused(ErrorCode.invalid_request, f"an ACL needs a concrete {what}")
    return member


def _acl(creation: Any) -> Acl:
    if not creation.principal.startswith("User:"):
        raise _Refused(ErrorCode.invalid_request, "principals look like User:NAME")
    if not creation.resource_name or not creation.host:
        raise _Refused(ErrorCode.invalid_request, "the resource name and host must be given")
    return Acl(
        _enum(ResourceType, creation.resource_type, "resource type", concrete=True),
        creation.resource_name,
        _enum(PatternType, creation.resource_pattern_type, "pattern type", concrete=True),
        creation.principal,
        creation.host,
        _enum(Operation, creation.operation, "operation", concrete=True),
        _enum(Permission, creation.permission_type, "permission", concrete=True),
    )


def _filter(wanted: Any) -> AclFilter:
    pattern = getattr(wanted, "pattern_type_filter", _LITERAL)
    return AclFilter(
        _enum(ResourceType, wanted.resource_type_filter, "resource type", concrete=False),
        wanted.resource_name_filter,
        _enum(PatternType, pattern, "pattern type", concrete=False),
        wanted.principal_filter,
        wanted.host_filter,
        _enum(Operation, wanted.operation, "operation", concrete=False),
        _enum(Permission, wanted.permission_type, "permission", concrete=False),
    )


def create(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(CREATE_KEY, request.__version__)
    refused = _gate(broker, Operation.ALTER)
    results = []
    for creation in request.creations:
        error, message = ErrorCode.none, None
        try:
            if refused is not None:
                raise refused
            acl = _acl(creation)
            check_writable(broker)
            broker.security.authorizer.store.add([acl])
        except (_Refused, StorageRefused) as exc:
            error, message = exc.code, str(exc)
        except AclError as exc:
            error, message = ErrorCode.unknown_server_error, str(exc)
        results.append(m.AclCreationResult(error_code=error, error_message=message))
    return build(m.CreateAclsResponse, throttle_time=NO_THROTTLE, results=tuple(results))


def describe(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(DESCRIBE_KEY, request.__version__)

    def answer(error: ErrorCode, message: str | None, resources: tuple[Any, ...] = ()) -> Any:
        return build(m.DescribeAclsResponse, throttle_time=NO_THROTTLE, error_code=error,
                     error_message=message, resources=resources)  # fmt: skip

    try:
        refused = _gate(broker, Operation.DESCRIBE)
        if refused is not None:
            raise refused
        where = _filter(request)
        found = [a for a in broker.security.authorizer.store.all() if where.matches(a)]
    except _Refused as exc:
        return answer(exc.code, str(exc))
    except AclError as exc:
        return answer(ErrorCode.unknown_server_error, str(exc))
    by_resource: dict[tuple[int, str, int], list[Any]] = {}
    for acl in found:
        key = (acl.resource_type, acl.resource_name, acl.pattern_type)
        by_resource.setdefault(key, []).append(
            m.AclDescription(principal=acl.principal, host=acl.host,
                             operation=acl.operation, permission_type=acl.permission)
        )  # fmt: skip
    return answer(
        ErrorCode.none,
        None,
        tuple(
            build(m.DescribeAclsResource, resource_type=rtype, resource_name=name,
                  pattern_type=pattern, acls=tuple(acls))
            for (rtype, name, pattern), acls in by_resource.items()
        ),
    )  # fmt: skip


def delete(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(DELETE_KEY, request.__version__)
    refused = _gate(broker, Operation.ALTER)

    def result(error: ErrorCode, message: str | None, removed: list[Acl]) -> Any:
        matching = tuple(
            build(m.DeleteAclsMatchingAcl, error_code=ErrorCode.none, error_message=None,
                  resource_type=a.resource_type, resource_name=a.resource_name,
                  pattern_type=a.pattern_type, principal=a.principal, host=a.host,
                  operation=a.operation, permission_type=a.permission)
            for a in removed
        )  # fmt: skip
        return build(m.DeleteAclsFilterResult, error_code=error, error_message=message,
                     matching_acls=matching)  # fmt: skip

    results = []
    for wanted in request.filters:
        try:
            if refused is not None:
                raise refused
            where = _filter(wanted)
            check_writable(broker)
            removed = broker.security.authorizer.store.remove(where)
            results.append(result(ErrorCode.none, None, removed))
        except (_Refused, StorageRefused) as exc:
            results.append(result(exc.code, str(exc), []))
        except AclError as exc:
            results.append(result(ErrorCode.unknown_server_error, str(exc), []))
    return build(m.DeleteAclsResponse, throttle_time=NO_THROTTLE, filter_results=tuple(results))
