"""Raw group-protocol requests for tests that must send exactly what a stale or
misbehaving member would (clients hide those cases behind retries and rejoins)."""

from __future__ import annotations

import datetime
from typing import Any

from kio.schema.errors import ErrorCode
from wire import WireClient, request_module

from onceflow.broker.protocol import build

JOIN_GROUP, HEARTBEAT, LEAVE_GROUP, SYNC_GROUP = 11, 12, 13, 14
OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR = 8, 9, 10
DESCRIBE_GROUPS, LIST_GROUPS = 15, 16
PROTOCOLS = (("range", b"subscription"),)


def _ms(value: int) -> datetime.timedelta:
    return datetime.timedelta(milliseconds=value)


class GroupClient:
    """One connection acting as one group member (or as an admin)."""

    def __init__(self, bootstrap: str, group: str) -> None:
        self.wire = WireClient.connect(bootstrap)
        self.group = group
        self.member_id = ""
        self.generation = -1

    def close(self) -> None:
        self.wire.close()

    def __enter__(self) -> GroupClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- JoinGroup, in two halves so several members can wait at once -----------------

    def send_join(
        self,
        *,
        version: int = 5,
        instance_id: str | None = None,
        session_ms: int = 10_000,
        rebalance_ms: int = 10_000,
        protocols: tuple[tuple[str, bytes], ...] = PROTOCOLS,
        member_id: str | None = None,
    ) -> tuple[int, int]:
        m = request_module(JOIN_GROUP, version)
        request = build(
            m.JoinGroupRequest,
            group_id=self.group,
            session_timeout=_ms(session_ms),
            rebalance_timeout=_ms(rebalance_ms),
            member_id=self.member_id if member_id is None else member_id,
            group_instance_id=instance_id,
            protocol_type="consumer",
            protocols=tuple(
                build(m.JoinGroupRequestProtocol, name=name, metadata=metadata)
                for name, metadata in protocols
            ),
        )
        return self.wire.send(request), version

    def receive_join(self, sent: tuple[int, int]) -> Any:
        correlation_id, version = sent
        response = self.wire.receive(JOIN_GROUP, version, correlation_id)
        if response.error_code in (ErrorCode.none, ErrorCode.member_id_required):
            self.member_id = response.member_id
        if response.error_code == ErrorCode.none:
            self.generation = response.generation_id
        return response

    def join(self, **options: Any) -> Any:
        """Join, answering MEMBER_ID_REQUIRED the way clients do."""
        response = self.receive_join(self.send_join(**options))
        if response.error_code == ErrorCode.member_id_required:
            response = self.receive_join(self.send_join(**options))
        return response

    # -- the rest ---------------------------------------------------------------------

    def send_sync(
        self,
        assignments: dict[str, bytes] | None = None,
        *,
        generation: int | None = None,
        instance_id: str | None = None,
    ) -> int:
        m = request_module(SYNC_GROUP, 3)
        return self.wire.send(
            build(
                m.SyncGroupRequest,
                group_id=self.group,
                generation_id=self.generation if generation is None else generation,
                member_id=self.member_id,
                group_instance_id=instance_id,
                assignments=tuple(
                    build(m.SyncGroupRequestAssignment, member_id=k, assignment=v)
                    for k, v in (assignments or {}).items()
                ),
            )
        )

    def receive_sync(self, correlation_id: int) -> Any:
        return self.wire.receive(SYNC_GROUP, 3, correlation_id)

    def sync(self, assignments: dict[str, bytes] | None = None, **options: Any) -> Any:
        return self.receive_sync(self.send_sync(assignments, **options))

    def heartbeat(
        self,
        *,
        generation: int | None = None,
        member_id: str | None = None,
        instance_id: str | None = None,
    ) -> ErrorCode:
        m = request_module(HEARTBEAT, 3)
        response = self.wire.request(
            build(
                m.HeartbeatRequest,
                group_id=self.group,
                generation_id=self.generation if generation is None else generation,
                member_id=self.member_id if member_id is None else member_id,
                group_instance_id=instance_id,
            )
        )
        return response.error_code

    def leave(self) -> ErrorCode:
        m = request_module(LEAVE_GROUP, 1)
        return self.wire.request(
            build(m.LeaveGroupRequest, group_id=self.group, member_id=self.member_id)
        ).error_code

    def commit(
        self,
        offsets: dict[tuple[str, int], int],
        *,
        version: int = 8,
        generation: int | None = None,
        member_id: str | None = None,
        metadata: str | None = "",
        leader_epoch: int = -1,
    ) -> dict[tuple[str, int], ErrorCode]:
        m = request_module(OFFSET_COMMIT, version)
        topics: dict[str, list[Any]] = {}
        for (topic, partition), offset in offsets.items():
            topics.setdefault(topic, []).append(
                build(
                    m.OffsetCommitRequestPartition,
                    partition_index=partition,
                    committed_offset=offset,
                    committed_leader_epoch=leader_epoch,
                    committed_metadata=metadata,
                )
            )
        response = self.wire.request(
            build(
                m.OffsetCommitRequest,
                group_id=self.group,
                generation_id_or_member_epoch=self.generation if generation is None else generation,
                member_id=self.member_id if member_id is None else member_id,
                group_instance_id=None,
                topics=tuple(
                    build(m.OffsetCommitRequestTopic, name=name, partitions=tuple(parts))
                    for name, parts in topics.items()
                ),
            )
        )
        return {
            (t.name, p.partition_index): p.error_code for t in response.topics for p in t.partitions
        }

    def fetch_offsets(
        self, partitions: list[tuple[str, int]] | None = None, *, version: int = 7
    ) -> dict[tuple[str, int], Any]:
        """(topic, partition) -> the response partition (offset, epoch, metadata, error)."""
        m = request_module(OFFSET_FETCH, version)
        topics = None
        if partitions is not None:
            grouped: dict[str, list[int]] = {}
            for topic, partition in partitions:
                grouped.setdefault(topic, []).append(partition)
            topics = tuple(
                build(m.OffsetFetchRequestTopic, name=name, partition_indexes=tuple(indexes))
                for name, indexes in grouped.items()
            )
        response = self.wire.request(
            build(m.OffsetFetchRequest, group_id=self.group, topics=topics, require_stable=True)
        )
        assert getattr(response, "error_code", ErrorCode.none) == ErrorCode.none
        return {(t.name, p.partition_index): p for t in response.topics for p in t.partitions}

    def committed(self, topic: str, partition: int) -> int:
        return self.fetch_offsets([(topic, partition)])[(topic, partition)].committed_offset

    def describe(self, *groups: str) -> list[Any]:
        m = request_module(DESCRIBE_GROUPS, 5)
        return list(
            self.wire.request(
                build(
                    m.DescribeGroupsRequest,
                    groups=groups or (self.group,),
                    include_authorized_operations=False,
                )
            ).groups
        )

    def list_groups(self, *states: str) -> dict[str, str]:
        m = request_module(LIST_GROUPS, 4)
        response = self.wire.request(build(m.ListGroupsRequest, states_filter=states))
        assert response.error_code == ErrorCode.none
        return {g.group_id: g.group_state for g in response.groups}

    def find_coordinator(self, key_type: int = 0, version: int = 2) -> Any:
        m = request_module(FIND_COORDINATOR, version)
        return self.wire.request(build(m.FindCoordinatorRequest, key=self.group, key_type=key_type))
