"""What an operator asks of a Kafka-compatible cluster, answered as plain data.

confluent-kafka's AdminClient does what it has an API for (metadata, topic creation and
deletion, configs, groups, committed and end offsets). The APIs it lacks are sent raw
(``onceflow.admin.wire``) to the broker that must answer them: DescribeProducers,
WriteTxnMarkers and DescribeLogDirs to partition leaders, ListTransactions to every
broker (each coordinates some transactional ids), DescribeTransactions to the
transaction's coordinator.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from functools import partial
from typing import Any

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewTopic,
    OffsetSpec,
)
from kio.schema.errors import ErrorCode

from onceflow.admin.report import (
    AbortResult,
    ConfigValue,
    GroupDetail,
    GroupOffset,
    GroupSummary,
    Member,
    OpenTransaction,
    PartitionDetail,
    TopicDetail,
    TopicSummary,
    TransactionDetail,
)
from onceflow.admin.wire import KafkaConnection, WireError, request_module
from onceflow.broker.protocol import build
from onceflow.client_settings import ClientSecurity, ClientSettingsError, security_of

FIND_COORDINATOR = 10
WRITE_TXN_MARKERS = 27
DESCRIBE_LOG_DIRS = 35
DESCRIBE_PRODUCERS = 61
DESCRIBE_TRANSACTIONS = 65
LIST_TRANSACTIONS = 66
COORDINATOR_TRANSACTION = 1
DEFAULT_TIMEOUT = 10.0
#: The config source of values set on the topic itself (not broker-wide or defaults).
TOPIC_SOURCE = ConfigSource.DYNAMIC_TOPIC_CONFIG.name

_librdkafka_log = logging.getLogger("onceflow.librdkafka")


class AdminError(Exception):
    """A request the cluster refused or could not answer; the message is one line."""


class _DebugLogger:
    """Hands librdkafka's log lines to Python logging at DEBUG: a command reports its
    own one-line error, and ``--log-level DEBUG`` shows the client's side of it."""

    def log(self, level: int, message: str, *args: Any) -> None:
        _librdkafka_log.debug(message, *args)


# -- the client ----------------------------------------------------------------------


def _error_line(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        error = exc.args[0]
        return error.str() or error.name()
    return str(exc) or type(exc).__name__


def _result(future: Future[Any], timeout: float) -> Any:
    try:
        return future.result(timeout)
    except KafkaException as exc:
        raise AdminError(_error_line(exc)) from exc
    except TimeoutError as exc:
        raise AdminError(f"no answer within {timeout:g}s") from exc


class Cluster:
    """Operator requests against the cluster behind ``bootstrap``; ``client_settings``
    (security.protocol, sasl.*, ssl.*: see ``onceflow.client_settings``) go to every
    connection, librdkafka's and the raw ones."""

    def __init__(
        self,
        bootstrap: str,
        timeout: float = DEFAULT_TIMEOUT,
        client_settings: Mapping[str, str] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.timeout = timeout
        settings = dict(client_settings or {})
        try:
            self.security = security_of(settings)
            self.admin = AdminClient(
                {**settings, "bootstrap.servers": bootstrap, "logger": _DebugLogger()}
            )
        except (ClientSettingsError, KafkaException) as exc:
            raise AdminError(f"bad client settings: {_error_line(exc)}") from exc
        self._metadata: Any = None
        self._connections: dict[int, KafkaConnection] = {}

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    # -- metadata and raw connections ------------------------------------------

    def metadata(self, refresh: bool = False) -> Any:
        """The whole cluster's metadata (brokers, topics, leaders); never auto-creates."""
        if self._metadata is None or refresh:
            refused = (
                _connect_error(self.bootstrap, self.timeout, self.security)
                if self._metadata is None
                else None
            )
            if refused is not None:
                raise AdminError(f"cannot reach a broker at {self.bootstrap}: {refused}")
            try:
                self._metadata = self.admin.list_topics(timeout=self.timeout)
            except KafkaException as exc:
                raise AdminError(
                    f"cannot reach a broker at {self.bootstrap}: {_error_line(exc)}"
                ) from exc
        return self._metadata

    def _topic(self, name: str) -> Any:
        topic = self.metadata().topics.get(name)
        if topic is None:
            raise AdminError(f"unknown topic {name!r}")
        if topic.error is not None:
            raise AdminError(f"topic {name!r}: {topic.error.str()}")
        return topic

    def _connection(self, node_id: int) -> KafkaConnection:
        if node_id not in self._connections:
            broker = self.metadata().brokers.get(node_id)
            if broker is None:
                raise AdminError(f"broker {node_id} is not in the cluster metadata")
            try:
                self._connections[node_id] = KafkaConnection(
                    broker.host, broker.port, self.timeout, security=self.security
                )
            except WireError as exc:
                raise AdminError(f"broker {node_id}: {exc}") from exc
            except OSError as exc:
                raise AdminError(
                    f"cannot connect to broker {node_id} at {broker.host}:{broker.port}: "
                    f"{exc.strerror or exc}"
                ) from exc
        return self._connections[node_id]

    def _raw(
        self, node_id: int, api_key: int, versions: range, build_request: Callable[[Any], Any]
    ) -> Any:
        """Send ``build_request(kio module)`` to a broker, in the highest version of
        ``versions`` it speaks; None when it speaks none of them."""
        connection = self._connection(node_id)
        try:
            version = connection.version_for(api_key, versions)
            if version is None:
                return None
            return connection.request(build_request(request_module(api_key, version)))
        except (OSError, WireError) as exc:
            raise AdminError(f"broker {node_id} did not answer: {exc}") from exc

    def _leaders(self, partitions: Iterable[tuple[str, int]]) -> dict[int, dict[str, list[int]]]:
        """leader node id -> {topic: [partition indexes it leads]}."""
        topics = self.metadata().topics
        by_leader: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for topic, index in partitions:
            by_leader[topics[topic].partitions[index].leader][topic].append(index)
        return by_leader

    def _ask_leaders(
        self,
        partitions: list[tuple[str, int]],
        api_key: int,
        versions: range,
        build_request: Callable[[Any, list[tuple[str, tuple[int, ...]]]], Any],
    ) -> Iterator[tuple[int, Any]]:
        """(leader, answer) for one request per leader about the partitions it leads;
        ``build_request(module, [(topic, partition indexes)])`` makes it."""
        for leader, by_topic in self._leaders(partitions).items():
            owned = [(topic, tuple(indexes)) for topic, indexes in by_topic.items()]
            request = partial(build_request, owned=owned)
            yield leader, self._raw(leader, api_key, versions, request)

    # -- offsets ----------------------------------------------------------------

    def _offsets(
        self, partitions: list[tuple[str, int]], spec: OffsetSpec, isolation: IsolationLevel
    ) -> dict[tuple[str, int], int]:
        if not partitions:
            return {}
        futures = self.admin.list_offsets(
            {TopicPartition(t, p): spec for t, p in partitions},
            isolation_level=isolation,
            request_timeout=self.timeout,
        )
        return {
            (tp.topic, tp.partition): _result(f, self.timeout).offset for tp, f in futures.items()
        }

    def high_watermarks(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return self._offsets(partitions, OffsetSpec.latest(), IsolationLevel.READ_UNCOMMITTED)

    def last_stable_offsets(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return self._offsets(partitions, OffsetSpec.latest(), IsolationLevel.READ_COMMITTED)

    def log_starts(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return self._offsets(partitions, OffsetSpec.earliest(), IsolationLevel.READ_UNCOMMITTED)

    # -- topics -----------------------------------------------------------------

    def list_topics(self) -> list[TopicSummary]:
        return [
            TopicSummary(
                name,
                len(topic.partitions),
                max((len(p.replicas) for p in topic.partitions.values()), default=0),
            )
            for name, topic in sorted(self.metadata().topics.items())
            if not name.startswith("__")
        ]

    def describe_topic(self, name: str) -> TopicDetail:
        topic = self._topic(name)
        indexes = sorted(topic.partitions)
        keys = [(name, i) for i in indexes]
        starts, ends, stable = (
            self.log_starts(keys), self.high_watermarks(keys), self.last_stable_offsets(keys)
        )  # fmt: skip
        sizes = self._sizes(keys)
        configs = {c.name: c.value for c in self.topic_configs(name) if c.source == TOPIC_SOURCE}
        return TopicDetail(
            name,
            [
                PartitionDetail(
                    partition=i,
                    leader=topic.partitions[i].leader,
                    replicas=list(topic.partitions[i].replicas),
                    isr=list(topic.partitions[i].isrs),
                    log_start=starts[(name, i)],
                    high_watermark=ends[(name, i)],
                    last_stable=stable[(name, i)],
                    size=sizes.get((name, i)),
                )
                for i in indexes
            ],
            configs,
        )

    def _sizes(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Partition sizes from DescribeLogDirs on each leader (those that have it)."""
        sizes: dict[tuple[str, int], int] = {}
        answers = self._ask_leaders(
            partitions,
            DESCRIBE_LOG_DIRS,
            range(1, 5),
            lambda m, owned: m.DescribeLogDirsRequest(
                topics=tuple(m.DescribableLogDirTopic(topic=t, partitions=ps) for t, ps in owned)
            ),
        )
        for _, answer in answers:
            for result in answer.results if answer is not None else ():
                for topic_result in result.topics:
                    for part in topic_result.partitions:
                        if not part.is_future_key:
                            key = (topic_result.name, part.partition_index)
                            sizes[key] = sizes.get(key, 0) + part.partition_size
        return sizes

    def create_topic(
        self, name: str, partitions: int, replication_factor: int, configs: dict[str, str]
    ) -> None:
        wanted = NewTopic(name, partitions, replication_factor, config=configs)
        futures = self.admin.create_topics([wanted], request_timeout=self.timeout)
        _result(futures[name], self.timeout)

    def delete_topic(self, name: str) -> None:
        self._topic(name)
        futures = self.admin.delete_topics([name], request_timeout=self.timeout)
        _result(futures[name], self.timeout)

    def topic_configs(self, name: str) -> list[ConfigValue]:
        resource = ConfigResource("topic", name)
        futures = self.admin.describe_configs([resource], request_timeout=self.timeout)
        entries = _result(futures[resource], self.timeout)
        return [
            ConfigValue(
                entry.name,
                entry.value,
                _source_name(entry.source),
                bool(entry.is_default),
                bool(entry.is_sensitive),
            )
            for entry in sorted(entries.values(), key=lambda e: e.name)
        ]

    def alter_topic_configs(self, name: str, set_: dict[str, str], delete: list[str]) -> None:
        self._topic(name)
        resource = ConfigResource(
            "topic",
            name,
            incremental_configs=[
                *(ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                  for k, v in set_.items()),
                *(ConfigEntry(k, None, incremental_operation=AlterConfigOpType.DELETE)
                  for k in delete),
            ],
        )  # fmt: skip
        futures = self.admin.incremental_alter_configs([resource], request_timeout=self.timeout)
        _result(futures[resource], self.timeout)

    # -- groups -----------------------------------------------------------------

    def list_groups(self) -> list[GroupSummary]:
        self.metadata()  # a clear error for an unreachable cluster
        listed = _result(
            self.admin.list_consumer_groups(request_timeout=self.timeout), self.timeout
        )
        if listed.errors:
            raise AdminError(_error_line(listed.errors[0]))
        return sorted(
            (
                GroupSummary(
                    g.group_id,
                    _enum_name(g.state),
                    "simple" if g.is_simple_consumer_group else "consumer",
                )
                for g in listed.valid
            ),
            key=lambda g: g.group,
        )

    def describe_group(self, group: str) -> GroupDetail:
        self.metadata()
        futures = self.admin.describe_consumer_groups([group], request_timeout=self.timeout)
        described = _result(futures[group], self.timeout)
        state = _enum_name(described.state)
        if state == "DEAD":
            raise AdminError(f"unknown group {group!r}")
        members = [
            Member(
                m.member_id,
                m.client_id,
                m.host,
                m.group_instance_id,
                sorted((tp.topic, tp.partition) for tp in m.assignment.topic_partitions),
            )
            for m in described.members
        ]
        owner = {tp: m.member_id for m in members for tp in m.assignment}
        offsets_future = self.admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)], request_timeout=self.timeout
        )[group]
        committed = {
            (tp.topic, tp.partition): tp.offset
            for tp in _result(offsets_future, self.timeout).topic_partitions
            if tp.offset >= 0
        }
        known = self.metadata(refresh=True).topics
        partitions = sorted(
            {
                tp
                for tp in (*committed, *owner)
                if tp[0] in known and tp[1] in known[tp[0]].partitions
            }
        )
        ends = self.high_watermarks(partitions)
        return GroupDetail(
            group=group,
            state=state,
            assignor=described.partition_assignor,
            coordinator=described.coordinator.id,
            members=members,
            offsets=[
                GroupOffset(
                    topic, index, committed.get((topic, index)), ends[(topic, index)],
                    (max(ends[(topic, index)] - committed[(topic, index)], 0)
                     if (topic, index) in committed else None),
                    owner.get((topic, index)),
                )
                for topic, index in partitions
            ],
        )  # fmt: skip

    # -- transactions -----------------------------------------------------------

    def _coordinator_view(self) -> dict[int, tuple[str, str]]:
        """producer id -> (transactional id, state) from every broker's ListTransactions."""
        known: dict[int, tuple[str, str]] = {}
        for node_id in sorted(self.metadata().brokers):

            def request(m: Any) -> Any:
                return build(
                    m.ListTransactionsRequest,
                    state_filters=(),
                    producer_id_filters=(),
                    duration_filter=-1,
                )

            answer = self._raw(node_id, LIST_TRANSACTIONS, range(0, 2), request)
            if answer is None or answer.error_code != ErrorCode.none:
                continue
            for txn in answer.transaction_states:
                known[txn.producer_id] = (txn.transactional_id, txn.transaction_state)
        return known

    def _producers(self, partitions: list[tuple[str, int]]) -> Iterator[tuple[str, int, Any]]:
        """(topic, partition, ProducerState) from each partition's leader."""
        answers = self._ask_leaders(
            partitions,
            DESCRIBE_PRODUCERS,
            range(0, 1),
            lambda m, owned: m.DescribeProducersRequest(
                topics=tuple(m.TopicRequest(name=t, partition_indexes=ps) for t, ps in owned)
            ),
        )
        for leader, answer in answers:
            if answer is None:
                raise AdminError(f"broker {leader} does not support DescribeProducers")
            for topic_answer in answer.topics:
                for part in topic_answer.partitions:
                    if part.error_code != ErrorCode.none:
                        raise AdminError(
                            f"{topic_answer.name}-{part.partition_index}: "
                            f"{ErrorCode(part.error_code).name}"
                        )
                    for state in part.active_producers:
                        yield topic_answer.name, part.partition_index, state

    def _start_times(self, transactional_ids: set[str]) -> dict[str, int]:
        """transactional id -> start time (ms) of its current transaction, as described
        by its coordinator."""
        starts: dict[str, int] = {}
        for transactional_id in sorted(transactional_ids):
            found = self._describe_transaction(transactional_id)
            if found is not None and found[0].transaction_start_time is not None:
                stamp = found[0].transaction_start_time.timestamp()
                if stamp > 0:
                    starts[transactional_id] = int(stamp * 1000)
        return starts

    def open_transactions(
        self, topics: list[str] | None = None, producer_id: int | None = None
    ) -> list[OpenTransaction]:
        """Every transaction that a partition (of ``topics``, default all) shows open."""
        metadata = self.metadata()
        names = topics if topics is not None else [
            n for n in sorted(metadata.topics) if not n.startswith("__")
        ]  # fmt: skip
        partitions = [(n, i) for n in names for i in sorted(self._topic(n).partitions)]
        open_ = [
            (topic, index, state)
            for topic, index, state in self._producers(partitions)
            if state.current_txn_start_offset >= 0
            and (producer_id is None or state.producer_id == producer_id)
        ]
        if not open_:
            return []
        touched = sorted({(t, i) for t, i, _ in open_})
        stable, ends = self.last_stable_offsets(touched), self.high_watermarks(touched)
        coordinators = self._coordinator_view()
        starts = self._start_times({coordinators[s.producer_id][0] for _, _, s in open_
                                    if s.producer_id in coordinators})  # fmt: skip
        now_ms = int(time.time() * 1000)
        found = []
        for topic, index, state in open_:
            transactional_id, txn_state = coordinators.get(state.producer_id, (None, None))
            since = starts.get(transactional_id or "", state.last_timestamp)
            found.append(
                OpenTransaction(
                    topic=topic,
                    partition=index,
                    producer_id=state.producer_id,
                    producer_epoch=state.producer_epoch,
                    coordinator_epoch=state.coordinator_epoch,
                    first_offset=state.current_txn_start_offset,
                    last_stable=stable[(topic, index)],
                    high_watermark=ends[(topic, index)],
                    transactional_id=transactional_id,
                    state=txn_state,
                    age_ms=max(now_ms - since, 0) if since > 0 else None,
                )
            )
        return sorted(found, key=lambda t: (t.topic, t.partition, t.first_offset))

    def _find_transaction_coordinator(self, transactional_id: str) -> int:
        node = sorted(self.metadata().brokers)[0]

        def request(m: Any) -> Any:
            return build(
                m.FindCoordinatorRequest,
                key=transactional_id,
                key_type=COORDINATOR_TRANSACTION,
            )

        answer = self._raw(node, FIND_COORDINATOR, range(1, 4), request)
        if answer is None:
            raise AdminError(f"broker {node} does not find transaction coordinators")
        if answer.error_code != ErrorCode.none:
            raise AdminError(
                f"no coordinator for {transactional_id!r}: {ErrorCode(answer.error_code).name}"
            )
        return answer.node_id

    def _describe_transaction(self, transactional_id: str) -> tuple[Any, int] | None:
        """(DescribeTransactions state, coordinator node), or None if it is unknown."""
        coordinator = self._find_transaction_coordinator(transactional_id)

        def request(m: Any) -> Any:
            return m.DescribeTransactionsRequest(transactional_ids=(transactional_id,))

        answer = self._raw(coordinator, DESCRIBE_TRANSACTIONS, range(0, 1), request)
        if answer is None:
            raise AdminError(f"broker {coordinator} does not support DescribeTransactions")
        (state,) = answer.transaction_states
        if state.error_code == ErrorCode.transactional_id_not_found:
            return None
        if state.error_code != ErrorCode.none:
            raise AdminError(f"{transactional_id!r}: {ErrorCode(state.error_code).name}")
        return state, coordinator

    def describe_transaction(self, transactional_id: str) -> TransactionDetail:
        found = self._describe_transaction(transactional_id)
        if found is None:
            raise AdminError(f"unknown transactional id {transactional_id!r}")
        state, coordinator = found
        partitions = sorted((t.topic, p) for t in state.topics for p in t.partitions)
        known = self.metadata().topics
        topics = sorted({t for t, _ in partitions if t in known})
        start = state.transaction_start_time.timestamp() if state.transaction_start_time else 0
        return TransactionDetail(
            transactional_id=transactional_id,
            state=state.transaction_state,
            producer_id=state.producer_id,
            producer_epoch=state.producer_epoch,
            timeout_ms=int(state.transaction_timeout.total_seconds() * 1000),
            start_ms=int(start * 1000) if start > 0 else None,
            coordinator=coordinator,
            partitions=partitions,
            open_on=self.open_transactions(topics, state.producer_id) if topics else [],
        )

    def abort_transaction(self, topic: str, partition: int, producer_id: int) -> AbortResult:
        """Write an ABORT marker for ``producer_id``'s open transaction on one partition,
        as ``kafka-transactions.sh abort`` does: with the producer's epoch and
        coordinator epoch as the partition leader reports them."""
        if partition not in self._topic(topic).partitions:
            raise AdminError(f"topic {topic!r} has no partition {partition}")
        matches = [s for t, p, s in self._producers([(topic, partition)])
                   if s.producer_id == producer_id]  # fmt: skip
        if not matches or matches[0].current_txn_start_offset < 0:
            raise AdminError(
                f"producer {producer_id} has no open transaction on {topic}-{partition}"
            )
        state = matches[0]
        (lso_before,) = self.last_stable_offsets([(topic, partition)]).values()
        leader = self.metadata().topics[topic].partitions[partition].leader

        def request(m: Any) -> Any:
            return m.WriteTxnMarkersRequest(
                markers=(
                    build(
                        m.WritableTxnMarker,
                        producer_id=producer_id,
                        producer_epoch=state.producer_epoch,
                        transaction_result=False,
                        topics=(
                            m.WritableTxnMarkerTopic(name=topic, partition_indexes=(partition,)),
                        ),
                        # -1: no marker seen yet for this producer; any epoch is as new.
                        coordinator_epoch=max(state.coordinator_epoch, 0),
                    ),
                )
            )

        answer = self._raw(leader, WRITE_TXN_MARKERS, range(1, 3), request)
        if answer is None:
            raise AdminError(f"broker {leader} does not support WriteTxnMarkers")
        error = ErrorCode(answer.markers[0].topics[0].partitions[0].error_code)
        if error != ErrorCode.none:
            raise AdminError(f"abort refused by broker {leader}: {error.name}")
        (lso_after,) = self.last_stable_offsets([(topic, partition)]).values()
        return AbortResult(
            topic, partition, producer_id, state.producer_epoch, lso_before, lso_after
        )


def _enum_name(value: Any) -> str:
    return getattr(value, "name", str(value))


def _source_name(source: Any) -> str:
    try:
        return ConfigSource(source).name
    except ValueError:
        return str(source)


def _connect_error(bootstrap: str, timeout: float, security: ClientSecurity) -> str | None:
    """Why no bootstrap server accepts a connection (TCP, then TLS and the SASL login
    the settings ask for), or None if one does: a quick answer where librdkafka would
    retry until its timeout."""
    reasons = []
    for address in bootstrap.split(","):
        try:
            with KafkaConnection.connect(address.strip(), timeout, security):
                return None
        except (OSError, ValueError, WireError) as exc:
            reasons.append(getattr(exc, "strerror", None) or str(exc))
    return reasons[-1] if reasons else "no address given"
