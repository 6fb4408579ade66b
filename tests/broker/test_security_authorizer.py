"""The authorizer's decisions, rule by rule, on a real ACL file."""

from __future__ import annotations

from pathlib import Path

import pytest

from onceflow.broker.security.acls import (
    Acl,
    AclError,
    AclFilter,
    AclStore,
    Authorizer,
    Operation,
    PatternType,
    Permission,
    ResourceType,
)

TOPIC, GROUP = ResourceType.TOPIC, ResourceType.GROUP


def _acl(
    name: str,
    operation: Operation,
    *,
    principal: str = "User:bob",
    kind: ResourceType = TOPIC,
    pattern: PatternType = PatternType.LITERAL,
    permission: Permission = Permission.ALLOW,
    host: str = "*",
) -> Acl:
    return Acl(kind, name, pattern, principal, host, operation, permission)


@pytest.fixture
def store(tmp_path: Path) -> AclStore:
    return AclStore(tmp_path)


def _may(authorizer: Authorizer, operation: Operation, name: str, **who: str) -> bool:
    return authorizer.authorize(
        who.get("principal", "User:bob"), who.get("host", "10.0.0.1"), operation, TOPIC, name
    )


def test_rules(store: AclStore) -> None:
    authorizer = Authorizer(store, enabled=True, super_users=["User:root"])
    store.add([
        _acl("orders-", Operation.READ, pattern=PatternType.PREFIXED),
        _acl("audit", Operation.ALL, principal="User:*", host="10.0.0.9"),
        _acl("*", Operation.ALTER_CONFIGS, principal="User:ops"),
    ])  # fmt: skip
    assert _may(authorizer, Operation.READ, "orders-eu")
    assert _may(authorizer, Operation.DESCRIBE, "orders-eu")  # READ implies DESCRIBE
    assert not _may(authorizer, Operation.WRITE, "orders-eu")
    assert not _may(authorizer, Operation.READ, "order")  # not under the prefix
    assert _may(authorizer, Operation.WRITE, "audit", host="10.0.0.9")
    assert not _may(authorizer, Operation.WRITE, "audit")  # other host
    assert _may(authorizer, Operation.DESCRIBE_CONFIGS, "any", principal="User:ops")
    assert not _may(authorizer, Operation.READ, "any", principal="User:ops")
    assert _may(authorizer, Operation.DELETE, "anything", principal="User:root")
    store.add([_acl("orders-eu", Operation.ALL, permission=Permission.DENY)])
    assert not _may(authorizer, Operation.READ, "orders-eu")
    assert _may(authorizer, Operation.READ, "orders-us")


def test_no_acl_found(store: AclStore) -> None:
    assert not _may(Authorizer(store, enabled=True), Operation.READ, "t")
    assert _may(Authorizer(store, enabled=True, allow_if_no_acl=True), Operation.READ, "t")
    assert _may(Authorizer(store, enabled=False), Operation.DELETE, "t")


def test_filters_and_the_file(store: AclStore, tmp_path: Path) -> None:
    store.add([_acl("t", Operation.READ), _acl("t", Operation.READ), _acl("g", Operation.READ,
               kind=GROUP), _acl("t-", Operation.WRITE, pattern=PatternType.PREFIXED)])  # fmt: skip
    assert len(store.all()) == 3  # the duplicate is stored once
    matching = AclFilter(TOPIC, "t-1", PatternType.MATCH)
    assert [a.resource_name for a in store.all() if matching.matches(a)] == ["t-"]
    assert AclStore(tmp_path).all() == store.all()  # durable, read back by another store
    removed = store.remove(AclFilter(resource_type=TOPIC))
    assert {a.resource_name for a in removed} == {"t", "t-"}
    assert [a.resource_name for a in store.all()] == ["g"]
    (tmp_path / "acls.json").write_text("[]")
    with pytest.raises(AclError):
        store.all()
