"""ACLs in Kafka's model, their durable store, and the authorizer that checks them.

An ACL allows or denies one principal (``User:NAME``, or ``User:*``) from one host (or
``*``) one operation on the resources a (type, name, pattern) selects: the literal
name, every name for the literal ``*``, or every name with a prefix. As in Kafka's
StandardAuthorizer: super users may do everything; a matching DENY wins over any ALLOW;
ALL covers every operation; READ, WRITE, DELETE and ALTER imply DESCRIBE, and
ALTER_CONFIGS implies DESCRIBE_CONFIGS; a resource no ACL at all selects is allowed
only with ``allow.everyone.if.no.acl.found``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from onceflow.broker.security.shared_file import SharedFileError, SharedJsonFile

FILE_NAME = "acls.json"
_FORMAT_VERSION = 1
CLUSTER_NAME = "kafka-cluster"
WILDCARD = "*"
WILDCARD_PRINCIPAL = "User:*"


class AclError(SharedFileError):
    """The ACL file cannot be read or written; the message is for humans."""


class ResourceType(enum.IntEnum):
    """Kafka's resource type codes (those a single broker has)."""

    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class PatternType(enum.IntEnum):
    ANY = 1
    #: Filters only: every ACL that selects the named resource.
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class Operation(enum.IntEnum):
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12


class Permission(enum.IntEnum):
    ANY = 1
    DENY = 2
    ALLOW = 3


#: Allowing one of these allows the key operation too.
_IMPLIED_BY = {
    Operation.DESCRIBE: (Operation.READ, Operation.WRITE, Operation.DELETE, Operation.ALTER),
    Operation.DESCRIBE_CONFIGS: (Operation.ALTER_CONFIGS,),
}


@dataclasses.dataclass(frozen=True, slots=True)
class Acl:
    """One stored rule."""

    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    principal: str
    host: str
    operation: Operation
    permission: Permission

    def selects(self, resource_type: ResourceType, name: str) -> bool:
        """Whether this ACL applies to the resource (type, name)."""
        if self.resource_type is not resource_type:
            return False
        if self.pattern_type is PatternType.PREFIXED:
            return name.startswith(self.resource_name)
        return self.resource_name in (name, WILDCARD)

    def to_json(self) -> dict[str, Any]:
        return {
            "resource_type": self.resource_type.name,
            "resource_name": self.resource_name,
            "pattern_type": self.pattern_type.name,
            "principal": self.principal,
            "host": self.host,
            "operation": self.operation.name,
            "permission": self.permission.name,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Acl:
        return cls(
            ResourceType[data["resource_type"]],
            data["resource_name"],
            PatternType[data["pattern_type"]],
            data["principal"],
            data["host"],
            Operation[data["operation"]],
            Permission[data["permission"]],
        )


@dataclasses.dataclass(frozen=True, slots=True)
class AclFilter:
    """What DescribeAcls and DeleteAcls select; None or ANY matches every value."""

    resource_type: ResourceType = ResourceType.ANY
    resource_name: str | None = None
    pattern_type: PatternType = PatternType.ANY
    principal: str | None = None
    host: str | None = None
    operation: Operation = Operation.ANY
    permission: Permission = Permission.ANY

    def matches(self, acl: Acl) -> bool:
        if self.resource_type not in (ResourceType.ANY, acl.resource_type):
            return False
        if not self._name_matches(acl):
            return False
        return (
            self.principal in (None, acl.principal)
            and self.host in (None, acl.host)
            and self.operation in (Operation.ANY, acl.operation)
            and self.permission in (Permission.ANY, acl.permission)
        )

    def _name_matches(self, acl: Acl) -> bool:
        if self.pattern_type is PatternType.MATCH:
            return self.resource_name is None or acl.selects(acl.resource_type, self.resource_name)
        if self.pattern_type not in (PatternType.ANY, acl.pattern_type):
            return False
        return self.resource_name in (None, acl.resource_name)


class AclStore:
    """The ACLs of one broker, in ``acls.json`` in its data dir (replaced atomically;
    reloaded when ``onceflow acls`` changed it)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / FILE_NAME
        self._file = SharedJsonFile(
            self.path,
            version=_FORMAT_VERSION,
            decode=lambda data: [Acl.from_json(item) for item in data["acls"]],
            encode=lambda acls: {"acls": [a.to_json() for a in acls]},
            empty=list,
            error=AclError,
        )

    def all(self) -> list[Acl]:
        """Every ACL, as the file holds them now."""
        return self._file.read()

    def add(self, acls: Iterable[Acl]) -> None:
        with self._file.editing() as current:
            current.extend(a for a in dict.fromkeys(acls) if a not in current)

    def remove(self, where: AclFilter) -> list[Acl]:
        """Delete and return the ACLs ``where`` matches."""
        with self._file.editing() as current:
            removed = [a for a in current if where.matches(a)]
            current[:] = [a for a in current if not where.matches(a)]
        return removed


class Authorizer:
    """Decides whether a principal may do an operation on a resource."""

    def __init__(
        self,
        store: AclStore,
        *,
        enabled: bool,
        super_users: Iterable[str] = (),
        allow_if_no_acl: bool = False,
    ) -> None:
        self.store = store
        self.enabled = enabled
        self.super_users = frozenset(super_users)
        self.allow_if_no_acl = allow_if_no_acl

    def authorize(
        self, principal: str, host: str, operation: Operation, resource_type: ResourceType,
        name: str,
    ) -> bool:  # fmt: skip
        """Kafka's decision; an unreadable ACL file denies (and raises AclError)."""
        if not self.enabled or principal in self.super_users:
            return True
        relevant = [a for a in self.store.all() if a.selects(resource_type, name)]
        if not relevant:
            return self.allow_if_no_acl
        mine = [
            a
            for a in relevant
            if a.principal in (principal, WILDCARD_PRINCIPAL) and a.host in (host, WILDCARD)
        ]
        if any(
            a.permission is Permission.DENY and a.operation in (operation, Operation.ALL)
            for a in mine
        ):
            return False
        granting = (operation, Operation.ALL, *_IMPLIED_BY.get(operation, ()))
        return any(a.permission is Permission.ALLOW and a.operation in granting for a in mine)
