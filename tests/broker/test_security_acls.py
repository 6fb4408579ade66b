"""ACLs with real clients: the admin APIs, and each resource type's check answered with
Kafka's *_AUTHORIZATION_FAILED code."""

from __future__ import annotations

import datetime
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
)
from confluent_kafka.admin import ResourceType as KafkaResourceType
from interop_support import consume_confluent
from kio.schema.errors import ErrorCode
from security_support import PASSWORD, SecureBroker, add_user, log_in, start_secure_broker
from wire import WireClient

from onceflow.admin.wire import request_module
from onceflow.broker.protocol import build
from onceflow.broker.security.acls import Acl, Operation, PatternType, Permission
from onceflow.broker.security.acls import ResourceType as Rt

ADMIN, BOB = "admin", "bob"
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    root = tmp_path_factory.mktemp("acl-broker")
    for user in (ADMIN, BOB):
        add_user(root / "data", user, PASSWORD)
    broker = start_secure_broker(
        root,
        listeners=("SASL_PLAINTEXT://127.0.0.1:0",),
        acls_enabled=True,
        super_users=(f"User:{ADMIN}",),
    )
    yield broker
    broker.thread.stop()


def _config(secure: SecureBroker, user: str) -> dict[str, Any]:
    return secure.client_config("SASL_PLAINTEXT", "SCRAM-SHA-256", user=user)


def _admin(secure: SecureBroker, user: str = ADMIN) -> AdminClient:
    return AdminClient(_config(secure, user))


def _allow(
    secure: SecureBroker,
    resource: KafkaResourceType,
    name: str,
    operation: AclOperation,
    *,
    principal: str = f"User:{BOB}",
    permission: AclPermissionType = AclPermissionType.ALLOW,
    pattern: ResourcePatternType = ResourcePatternType.LITERAL,
) -> None:
    binding = AclBinding(resource, name, pattern, principal, "*", operation, permission)
    admin = _admin(secure)  # kept: a dropped AdminClient cancels its futures
    for future in admin.create_acls([binding]).values():
        future.result(TIMEOUT)


def _filter(
    resource: KafkaResourceType = KafkaResourceType.ANY,
    name: str | None = None,
    pattern: ResourcePatternType = ResourcePatternType.ANY,
    principal: str | None = None,
) -> AclBindingFilter:
    return AclBindingFilter(
        resource, name, pattern, principal, None, AclOperation.ANY, AclPermissionType.ANY
    )


def _produce_error(config: dict[str, Any], topic: str) -> KafkaError | None:
    reports: list[KafkaError | None] = []
    producer = Producer({**config, "message.timeout.ms": 10_000})
    producer.produce(topic, b"v", on_delivery=lambda err, msg: reports.append(err))
    producer.flush(TIMEOUT)
    assert reports, "no delivery report"
    return reports[0]


def _create_topic(secure: SecureBroker, topic: str) -> None:
    # The super user's Metadata request creates it.
    _admin(secure).list_topics(topic, timeout=TIMEOUT)


def test_acl_admin_apis_round_trip(secure: SecureBroker, topic: str) -> None:
    _allow(secure, KafkaResourceType.TOPIC, topic, AclOperation.READ)
    _allow(secure, KafkaResourceType.GROUP, "g-", AclOperation.READ,
           pattern=ResourcePatternType.PREFIXED)  # fmt: skip
    mine = _filter(principal=f"User:{BOB}")
    admin = _admin(secure)
    found = admin.describe_acls(mine).result(TIMEOUT)
    assert {(b.restype, b.name, b.resource_pattern_type, b.operation) for b in found} >= {
        (KafkaResourceType.TOPIC, topic, ResourcePatternType.LITERAL, AclOperation.READ),
        (KafkaResourceType.GROUP, "g-", ResourcePatternType.PREFIXED, AclOperation.READ),
    }
    this_topic = _filter(KafkaResourceType.TOPIC, topic, ResourcePatternType.LITERAL)
    (deleted,) = admin.delete_acls([this_topic]).values()
    assert [b.name for b in deleted.result(TIMEOUT)] == [topic]
    assert admin.describe_acls(this_topic).result(TIMEOUT) == []


def test_acl_changes_need_alter_on_the_cluster(secure: SecureBroker, topic: str) -> None:
    binding = AclBinding(KafkaResourceType.TOPIC, topic, ResourcePatternType.LITERAL,
                         f"User:{BOB}", "*", AclOperation.ALL, AclPermissionType.ALLOW)  # fmt: skip
    bob = _admin(secure, BOB)
    (future,) = bob.create_acls([binding]).values()
    with pytest.raises(KafkaException) as raised:
        future.result(TIMEOUT)
    assert raised.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED


def test_topic_write_read_and_describe(secure: SecureBroker, topic: str) -> None:
    _create_topic(secure, topic)
    bob = _config(secure, BOB)
    assert topic not in _admin(secure, BOB).list_topics(timeout=TIMEOUT).topics
    assert topic in _admin(secure).list_topics(timeout=TIMEOUT).topics
    error = _produce_error(bob, topic)
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    _allow(secure, KafkaResourceType.TOPIC, topic, AclOperation.WRITE)
    assert (
        topic in _admin(secure, BOB).list_topics(timeout=TIMEOUT).topics
    )  # WRITE implies DESCRIBE
    assert _produce_error(bob, topic) is None


def test_group_read_is_needed_to_consume(secure: SecureBroker, topic: str) -> None:
    _create_topic(secure, topic)
    assert _produce_error(_config(secure, ADMIN), topic) is None
    _allow(secure, KafkaResourceType.TOPIC, topic, AclOperation.READ)
    errors: list[KafkaError] = []
    group = f"grp-{topic}"  # not under the "g-" prefix another test allows
    consumer = Consumer({**_config(secure, BOB), "group.id": group,
                         "auto.offset.reset": "earliest", "error_cb": errors.append})  # fmt: skip
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + TIMEOUT
        refused = None
        while refused is None and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is not None:
                refused = message.error()
            elif errors:
                refused = errors[0]
        assert refused is not None and refused.code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    finally:
        consumer.close()

    _allow(secure, KafkaResourceType.GROUP, group, AclOperation.READ)
    consumer = Consumer({**_config(secure, BOB), "group.id": group,
                         "auto.offset.reset": "earliest"})  # fmt: skip
    try:
        consumer.subscribe([topic])
        assert [m.value() for m in consume_confluent(consumer, 1)] == [b"v"]
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()


def test_transactional_id_write_is_needed(secure: SecureBroker, topic: str) -> None:
    _create_topic(secure, topic)
    _allow(secure, KafkaResourceType.TOPIC, topic, AclOperation.WRITE)
    txn_id = f"tx-{topic}"
    producer = Producer({**_config(secure, BOB), "transactional.id": txn_id})
    with pytest.raises(KafkaException) as raised:
        producer.init_transactions(TIMEOUT)
    assert raised.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED

    _allow(secure, KafkaResourceType.TRANSACTIONAL_ID, txn_id, AclOperation.WRITE)
    producer = Producer({**_config(secure, BOB), "transactional.id": txn_id})
    producer.init_transactions(TIMEOUT)
    producer.begin_transaction()
    producer.produce(topic, b"in-txn")
    producer.commit_transaction(TIMEOUT)


def test_idempotent_producer_needs_cluster_idempotent_write_or_a_topic_write(
    secure: SecureBroker, topic: str
) -> None:
    _create_topic(secure, topic)
    with WireClient(*secure.address("SASL_PLAINTEXT")) as client:
        log_in(client, "alice")
        m = request_module(22, 4)
        init = build(m.InitProducerIdRequest, transactional_id=None,
                     transaction_timeout=datetime.timedelta(seconds=60), producer_id=-1,
                     producer_epoch=-1)  # fmt: skip
        assert client.request(init).error_code == ErrorCode.cluster_authorization_failed
        _allow(secure, KafkaResourceType.TOPIC, topic, AclOperation.WRITE,
               principal="User:alice")  # fmt: skip
        assert client.request(init).error_code == ErrorCode.none


def test_cluster_resources_need_cluster_acls(secure: SecureBroker) -> None:
    with WireClient(*secure.address("SASL_PLAINTEXT")) as client:
        log_in(client, BOB)
        log_dirs = request_module(35, 4).DescribeLogDirsRequest(topics=None)
        assert client.request(log_dirs).error_code == ErrorCode.cluster_authorization_failed
        scram = request_module(50, 0).DescribeUserScramCredentialsRequest(users=None)
        assert client.request(scram).error_code == ErrorCode.cluster_authorization_failed
    _allow(secure, KafkaResourceType.BROKER, "kafka-cluster", AclOperation.DESCRIBE)
    with WireClient(*secure.address("SASL_PLAINTEXT")) as client:
        log_in(client, BOB)
        assert client.request(log_dirs).error_code == ErrorCode.none
        assert client.request(scram).error_code == ErrorCode.none


def test_deny_wins_over_allow(secure: SecureBroker, topic: str) -> None:
    _create_topic(secure, topic)
    _allow(secure, KafkaResourceType.TOPIC, topic, AclOperation.ALL, principal="User:*")
    assert _produce_error(_config(secure, BOB), topic) is None
    _allow(secure, KafkaResourceType.TOPIC, topic, AclOperation.WRITE,
           permission=AclPermissionType.DENY)  # fmt: skip
    error = _produce_error(_config(secure, BOB), topic)
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_allow_everyone_if_no_acl_found(tmp_path: Path) -> None:
    add_user(tmp_path / "data", BOB, PASSWORD)
    secure = start_secure_broker(
        tmp_path, listeners=("SASL_PLAINTEXT://127.0.0.1:0",), acls_enabled=True,
        allow_everyone_if_no_acl_found=True,
    )  # fmt: skip
    try:
        bob = _config(secure, BOB)
        assert _produce_error(bob, "open-topic") is None
        store = secure.thread.broker.security.authorizer.store
        # One ACL for someone else on the topic: bob is no longer "everyone".
        store.add([Acl(Rt.TOPIC, "open-topic", PatternType.LITERAL, "User:carol", "*",
                       Operation.WRITE, Permission.ALLOW)])  # fmt: skip
        error = _produce_error(bob, "open-topic")
        assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    finally:
        secure.thread.stop()


def test_acls_are_durable_and_edited_by_the_cli(tmp_path: Path) -> None:
    add_user(tmp_path / "data", BOB, PASSWORD)
    secure = start_secure_broker(
        tmp_path, listeners=("SASL_PLAINTEXT://127.0.0.1:0",), acls_enabled=True
    )
    try:
        bob = _config(secure, BOB)
        added = subprocess.run(
            [sys.executable, "-m", "onceflow", "acls", "add", "--data-dir",
             str(tmp_path / "data"), "--principal", "User:bob", "--topic", "cli-",
             "--prefixed", "--operation", "write", "--operation", "create"],
            capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        assert _produce_error(bob, "cli-topic") is None
        error = _produce_error(bob, "other-topic")
        assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    finally:
        secure.thread.stop()
    restarted = start_secure_broker(
        tmp_path, listeners=("SASL_PLAINTEXT://127.0.0.1:0",), acls_enabled=True
    )
    try:
        assert _produce_error(_config(restarted, BOB), "cli-topic") is None
    finally:
        restarted.thread.stop()


def test_acl_apis_answer_security_disabled_without_acls(tmp_path: Path) -> None:
    secure = start_secure_broker(tmp_path, listeners=("SASL_PLAINTEXT://127.0.0.1:0",))
    try:
        binding = AclBinding(KafkaResourceType.TOPIC, "t", ResourcePatternType.LITERAL,
                             "User:x", "*", AclOperation.READ, AclPermissionType.ALLOW)  # fmt: skip
        alice = AdminClient(_config(secure, "alice"))
        (future,) = alice.create_acls([binding]).values()
        with pytest.raises(KafkaException) as raised:
            future.result(TIMEOUT)
        assert raised.value.args[0].code() == KafkaError.SECURITY_DISABLED
        # librdkafka drops DescribeAcls' top-level error, so look at the answer itself.
        with WireClient(*secure.address("SASL_PLAINTEXT")) as client:
            log_in(client, "alice")
            m = request_module(29, 1)
            answer = client.request(
                m.DescribeAclsRequest(resource_type_filter=1, resource_name_filter=None,
                                      pattern_type_filter=1, principal_filter=None,
                                      host_filter=None, operation=1, permission_type=1)
            )  # fmt: skip
        assert answer.error_code == ErrorCode.security_disabled
    finally:
        secure.thread.stop()


def test_client_certificate_subject_is_the_principal_acls_see(tmp_path: Path) -> None:
    secure = start_secure_broker(tmp_path, listeners=("SSL://127.0.0.1:0",), acls_enabled=True)
    try:
        secure.thread.broker.security.authorizer.store.add(
            [Acl(Rt.TOPIC, "certs", PatternType.LITERAL, "User:CN=service-a,O=onceflow", "*",
                 operation, Permission.ALLOW) for operation in (Operation.WRITE,
                                                                Operation.CREATE)]
        )  # fmt: skip

        def with_certificate(name: str) -> dict[str, Any]:
            cert, key = secure.client_certificate(tmp_path, name)
            return {**secure.client_config("SSL"), "ssl.certificate.location": str(cert),
                    "ssl.key.location": str(key)}  # fmt: skip

        assert _produce_error(with_certificate("service-a"), "certs") is None
        error = _produce_error(with_certificate("service-b"), "certs")
        assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    finally:
        secure.thread.stop()
