"""OffsetCommit and OffsetFetch: committed consumer-group offsets."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from onceflow.broker.durable import when_settled
from onceflow.broker.offsets import CommittedOffset, TopicPartition
from onceflow.broker.protocol import NO_THROTTLE, build, response_module
from onceflow.broker.security.access import Operation, ResourceType, allowed

OFFSET_COMMIT = 8
OFFSET_FETCH = 9
# OffsetFetch v1 has no top-level error code and cannot ask for "all topics".
_FETCH_ALL_SINCE = 2
# The key of the offsets journal's flush among the waits of a request.
FLUSHED = "flushed"


def _by_topic(items: dict[TopicPartition, Any]) -> dict[str, list[tuple[int, Any]]]:
    grouped: dict[str, list[tuple[int, Any]]] = {}
    for (topic, partition), value in items.items():
        grouped.setdefault(topic, []).append((partition, value))
    return grouped


def _readable_topics(broker: Any, names: Any) -> set[str]:
    return {n for n in names if allowed(broker, Operation.READ, ResourceType.TOPIC, n)}


def offset_commit(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(OFFSET_COMMIT, request.__version__)
    offsets: dict[TopicPartition, tuple[int, int, str | None]] = {}
    readable = _readable_topics(broker, {t.name for t in request.topics})
    refused: dict[TopicPartition, ErrorCode] = {}
    group_ok = allowed(broker, Operation.READ, ResourceType.GROUP, request.group_id)
    for topic in request.topics:
        for p in topic.partitions:
            if not group_ok:
                refused[(topic.name, p.partition_index)] = ErrorCode.group_authorization_failed
            elif topic.name not in readable:
                refused[(topic.name, p.partition_index)] = ErrorCode.topic_authorization_failed
            else:
                offsets[(topic.name, p.partition_index)] = (
                    p.committed_offset,
                    getattr(p, "committed_leader_epoch", -1),
                    p.committed_metadata,
                )
    errors: dict[TopicPartition, ErrorCode]
    if broker.storage_error is not None:
        # Nothing can be made durable: refuse before the commit touches any state.
        errors, flushed = dict.fromkeys(offsets, ErrorCode.coordinator_not_available), None
    elif offsets:
        errors, flushed = broker.groups.commit_offsets(
            group_id=request.group_id,
            generation=request.generation_id_or_member_epoch,
            member_id=request.member_id,
            instance_id=getattr(request, "group_instance_id", None),
            offsets=offsets,
        )
    else:
        errors, flushed = {}, None
    errors.update(refused)

    def respond(settled: dict[str, Any]) -> Any:
        if isinstance(settled.get(FLUSHED), OSError):
            # Not durable: the client must retry (a retriable coordinator error).
            for tp, error in errors.items():
                if error is ErrorCode.none:
                    errors[tp] = ErrorCode.coordinator_not_available
        return build(
            m.OffsetCommitResponse,
            throttle_time=NO_THROTTLE,
            topics=tuple(
                build(
                    m.OffsetCommitResponseTopic,
                    name=name,
                    partitions=tuple(
                        build(m.OffsetCommitResponsePartition, partition_index=index, error_code=e)
                        for index, e in parts
                    ),
                )
                for name, parts in _by_topic(errors).items()
            ),
        )

    return when_settled({FLUSHED: flushed}, respond)


def offset_fetch(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(OFFSET_FETCH, request.__version__)
    wanted: list[TopicPartition] | None = None
    if request.topics is not None or request.__version__ < _FETCH_ALL_SINCE:
        wanted = [(t.name, index) for t in request.topics or () for index in t.partition_indexes]
    if not allowed(broker, Operation.DESCRIBE, ResourceType.GROUP, request.group_id):
        return _fetch_refused(m, request, wanted or [])
    found, flushed = broker.groups.fetch_offsets(request.group_id, wanted)
    if broker.storage_error is not None:
        found, flushed = {}, None
    # Topics the client may not describe: hidden from "all", refused when named.
    hidden = {
        name
        for name, _ in found
        if not allowed(broker, Operation.DESCRIBE, ResourceType.TOPIC, name)
    }
    if wanted is None:
        found = {tp: c for tp, c in found.items() if tp[0] not in hidden}
    # KIP-447: a consumer that asks for stable offsets must not start from an offset that
    # an open transaction is about to replace; it retries until the transaction ends.
    unstable = (
        broker.transactions.pending_offsets(request.group_id)
        if getattr(request, "require_stable", False)
        else set()
    )

    def respond(error: ErrorCode) -> Any:
        def partition(name: str, index: int, committed: CommittedOffset | None) -> Any:
            if name in hidden:
                committed = None
            stable = error is not ErrorCode.none or (name, index) not in unstable
            code = error if stable else ErrorCode.unstable_offset_commit
            if name in hidden:
                code = ErrorCode.topic_authorization_failed
            return build(
                m.OffsetFetchResponsePartition,
                partition_index=index,
                committed_offset=committed.offset if committed else -1,
                committed_leader_epoch=committed.leader_epoch if committed else -1,
                metadata=committed.metadata if committed else "",
                error_code=code,
            )

        return build(
            m.OffsetFetchResponse,
            throttle_time=NO_THROTTLE,
            error_code=error,
            topics=tuple(
                build(
                    m.OffsetFetchResponseTopic,
                    name=name,
                    partitions=tuple(partition(name, index, c) for index, c in parts),
                )
                for name, parts in _by_topic(found).items()
            ),
        )

    if broker.storage_error is not None:
        return respond(ErrorCode.coordinator_not_available)

    def respond_settled(settled: dict[str, Any]) -> Any:
        failed = isinstance(settled.get(FLUSHED), OSError)
        return respond(ErrorCode.coordinator_not_available if failed else ErrorCode.none)

    return when_settled({FLUSHED: flushed}, respond_settled)


def _fetch_refused(m: Any, request: Any, wanted: list[TopicPartition]) -> Any:
    """GROUP_AUTHORIZATION_FAILED: top level (v2+) and on every partition asked for."""
    error = ErrorCode.group_authorization_failed
    return build(
        m.OffsetFetchResponse,
        throttle_time=NO_THROTTLE,
        error_code=error,
        topics=tuple(
            build(
                m.OffsetFetchResponseTopic,
                name=name,
                partitions=tuple(
                    build(m.OffsetFetchResponsePartition, partition_index=index,
                          committed_offset=-1, committed_leader_epoch=-1, metadata="",
                          error_code=error)
                    for index, _ in parts
                ),
            )
            for name, parts in _by_topic(dict.fromkeys(wanted)).items()
        ),
    )  # fmt: skip
