"""The group coordinator: Kafka's classic rebalance protocol and committed offsets.

Each group moves through Kafka's states::

    Empty -> PreparingRebalance -> CompletingRebalance -> Stable -> PreparingRebalance ...

A rebalance starts when a member joins, leaves, changes its subscription, or goes
silent past its session timeout. Members learn of it from a Heartbeat (or SyncGroup,
OffsetCommit) answered REBALANCE_IN_PROGRESS and rejoin; a JoinGroup is answered
only when every known member has rejoined or the rebalance timeout has passed (the
missing members are then dropped). The coordinator then bumps the generation, picks
the protocol every member supports, hands the leader all members' subscriptions,
and waits for the leader's SyncGroup, whose assignment it passes to everyone. The
assignment itself is computed by the client, so range, roundrobin and
cooperative-sticky all work.

Everything here runs on the broker's event loop: pending joins and syncs are
futures, session and rebalance timeouts are ``loop.call_later`` timers, and there
are no locks. Group membership is kept in memory only (after a broker restart the
members rejoin); committed offsets live in the durable ``OffsetStore``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kio.schema.errors import ErrorCode

from onceflow.broker.config import BrokerConfig
from onceflow.broker.offsets import (
    OFFSETS_FILE,
    CommittedOffset,
    OffsetStore,
    TopicPartition,
    now_ms,
)

log = logging.getLogger(__name__)

# Kafka's offset.metadata.max.bytes default.
MAX_METADATA_BYTES = 4096
_NO_GENERATION = -1


class GroupState(enum.StrEnum):
    """Kafka's names for the classic group states, as DescribeGroups/ListGroups report them."""

    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclasses.dataclass(slots=True)
class JoinResult:
    """What a JoinGroup is answered with."""

    error: ErrorCode
    member_id: str
    generation: int = _NO_GENERATION
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    #: (member id, group instance id, metadata): only the leader gets them.
    members: list[tuple[str, str | None, bytes]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(slots=True)
class SyncResult:
    """What a SyncGroup is answered with."""

    error: ErrorCode
    assignment: bytes = b""
    protocol_type: str | None = None
    protocol_name: str | None = None


@dataclasses.dataclass(slots=True)
class MemberInfo:
    """One member as DescribeGroups reports it."""

    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes
    assignment: bytes


@dataclasses.dataclass(slots=True)
class GroupInfo:
    """One group as DescribeGroups/ListGroups report it."""

    group_id: str
    state: GroupState
    protocol_type: str
    protocol_name: str
    members: list[MemberInfo]


@dataclasses.dataclass(eq=False, slots=True)
class _Member:
    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    session_timeout: float
    rebalance_timeout: float
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    assignment: bytes = b""
    join_future: asyncio.Future[JoinResult] | None = None
    sync_future: asyncio.Future[SyncResult] | None = None
    #: Loop time past which a silent member is evicted.
    deadline: float = 0.0
    timer: asyncio.TimerHandle | None = None

    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]

    def metadata_for(self, protocol: str) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        return b""


@dataclasses.dataclass(eq=False, slots=True)
class _Group:
    group_id: str
    state: GroupState = GroupState.EMPTY
    generation: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str | None = None
    members: dict[str, _Member] = dataclasses.field(default_factory=dict)
    #: group.instance.id -> member id of the static members.
    static: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Member ids handed out with MEMBER_ID_REQUIRED, not yet joined, with their expiry.
    pending: dict[str, asyncio.TimerHandle] = dataclasses.field(default_factory=dict)
    join_timer: asyncio.TimerHandle | None = None
    sync_timer: asyncio.TimerHandle | None = None
    #: True while the first join of an empty group waits for more members to come.
    delaying_initial_join: bool = False
    #: Wall-clock ms when the group last became empty (offset retention counts from it).
    empty_since_ms: int = dataclasses.field(default_factory=now_ms)

    def awaiting_join(self) -> int:
        return sum(1 for m in self.members.values() if m.join_future is not None)

    def all_joined(self) -> bool:
        return not self.pending and self.awaiting_join() == len(self.members)

    def rebalance_timeout(self) -> float:
        return max((m.rebalance_timeout for m in self.members.values()), default=0.0)

    def candidate_protocols(self) -> set[str]:
        """Protocols every member supports."""
        members = list(self.members.values())
        if not members:
            return set()
        common = set(members[0].protocol_names())
        for member in members[1:]:
            common &= set(member.protocol_names())
        return common

    def select_protocol(self) -> str:
        """Each member votes for its most preferred common protocol; most votes wins."""
        candidates = self.candidate_protocols()
        votes: dict[str, int] = {}
        for member in self.members.values():
            choice = next(n for n in member.protocol_names() if n in candidates)
            votes[choice] = votes.get(choice, 0) + 1
        return max(votes, key=lambda name: votes[name])


class GroupCoordinator:
    """Owns every consumer group of the broker and its committed offsets."""

    @classmethod
    def open(cls, broker: Any) -> GroupCoordinator:
        """The coordinator of a broker whose data dir and topics are open."""

        def partition_count(topic: str) -> int | None:
            found = broker.topics.get(topic)
            return None if found is None else len(found.partitions)

        store = OffsetStore(
            Path(broker.config.data_dir) / OFFSETS_FILE,
            broker.make_durable,
            on_failure=broker.flusher.fail,
        )
        return cls(broker.config, store, partition_count)

    def __init__(
        self,
        config: BrokerConfig,
        offsets: OffsetStore,
        partition_count: Callable[[str], int | None],
    ) -> None:
        self.config = config
        self.offsets = offsets
        self._partition_count = partition_count
        self._groups: dict[str, _Group] = {}
        self._loop = asyncio.get_running_loop()
        self._sweeper: asyncio.TimerHandle | None = None
        self._schedule_sweep()

    # -- JoinGroup -------------------------------------------------------------------

    def join(
        self,
        *,
        group_id: str,
        member_id: str,
        instance_id: str | None,
        client_id: str,
        client_host: str,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
        require_known_member_id: bool,
    ) -> JoinResult | Awaitable[JoinResult]:
        """Handle a JoinGroup; the result is pending until the rebalance completes."""

        def fail(error: ErrorCode) -> JoinResult:
            return JoinResult(error, member_id)

        if not group_id:
            return fail(ErrorCode.invalid_group_id)
        if not (
            self.config.group_min_session_timeout_ms
            <= session_timeout_ms
            <= self.config.group_max_session_timeout_ms
        ):
            return fail(ErrorCode.invalid_session_timeout)
        if not protocol_type or not protocols:
            return fail(ErrorCode.inconsistent_group_protocol)
        group = self._groups.get(group_id)
        if group is None:
            if member_id:
                # A member id from a group this broker does not know (e.g. before a restart).
                return fail(ErrorCode.unknown_member_id)
            group = self._groups[group_id] = _Group(group_id)
        if group.members and (
            protocol_type != group.protocol_type
            or not group.candidate_protocols() & {name for name, _ in protocols}
        ):
            return fail(ErrorCode.inconsistent_group_protocol)

        session = session_timeout_ms / 1000
        rebalance = (
            rebalance_timeout_ms if rebalance_timeout_ms > 0 else session_timeout_ms
        ) / 1000

        if not member_id:
            new_id = f"{instance_id or client_id or 'member'}-{uuid.uuid4()}"
            if instance_id is not None and instance_id in group.static:
                return self._replace_static_member(
                    group, group.static[instance_id], new_id, client_id, client_host,
                    session, rebalance, protocols,
                )  # fmt: skip
            if instance_id is None and require_known_member_id:
                # KIP-394: the member comes back with this id, so a lost response does
                # not leave a ghost member behind.
                group.pending[new_id] = self._loop.call_later(
                    session, self._expire_pending, group, new_id
                )
                return JoinResult(ErrorCode.member_id_required, new_id)
            member = _Member(
                new_id, instance_id, client_id, client_host, session, rebalance,
                protocol_type, list(protocols),
            )  # fmt: skip
            return self._add_member_and_rebalance(group, member)

        if member_id in group.pending:
            group.pending.pop(member_id).cancel()
            member = _Member(
                member_id, instance_id, client_id, client_host, session, rebalance,
                protocol_type, list(protocols),
            )  # fmt: skip
            return self._add_member_and_rebalance(group, member)

        error = self._check_member(group, member_id, instance_id)
        if error is not ErrorCode.none:
            return fail(error)
        member = group.members[member_id]
        member.session_timeout, member.rebalance_timeout = session, rebalance
        changed = member.protocols != list(protocols)
        if group.state is GroupState.PREPARING_REBALANCE:
            member.protocols = list(protocols)
            return self._await_join(group, member)
        if group.state is GroupState.COMPLETING_REBALANCE and not changed:
            # The member lost our answer: repeat it.
            return self._join_result(group, member)
        if group.state is GroupState.STABLE and not changed and member_id != group.leader:
            # Nothing changed for a follower: let it sync again with the current generation.
            return self._join_result(group, member)
        # A new subscription, or the leader asking for a new assignment.
        member.protocols = list(protocols)
        self._prepare_rebalance(group, f"member {member_id} rejoined")
        return self._await_join(group, member)

    def _replace_static_member(
        self,
        group: _Group,
        old_id: str,
        new_id: str,
        client_id: str,
        client_host: str,
        session: float,
        rebalance: float,
        protocols: list[tuple[str, bytes]],
    ) -> JoinResult | Awaitable[JoinResult]:
        """A static member restarted: it takes over its old identity and assignment."""
        member = group.members.pop(old_id)
        if member.join_future is not None and not member.join_future.done():
            member.join_future.set_result(JoinResult(ErrorCode.fenced_instance_id, old_id))
        if member.sync_future is not None and not member.sync_future.done():
            member.sync_future.set_result(SyncResult(ErrorCode.fenced_instance_id))
        member.join_future = member.sync_future = None
        member.member_id = new_id
        member.client_id, member.client_host = client_id, client_host
        member.session_timeout, member.rebalance_timeout = session, rebalance
        changed = member.protocols != list(protocols)
        member.protocols = list(protocols)
        group.members[new_id] = member
        assert member.instance_id is not None
        group.static[member.instance_id] = new_id
        if group.leader == old_id:
            group.leader = new_id
        self._touch(group, member)
        if group.state is GroupState.STABLE and not changed:
            # Same subscription: no rebalance, its SyncGroup returns the old assignment.
            # Like Kafka, name the old leader id: a restarted leader must not think it
            # leads, as a stable group would ignore the assignment it computed.
            return JoinResult(
                ErrorCode.none,
                new_id,
                group.generation,
                group.protocol_type,
                group.protocol_name,
                old_id if group.leader == new_id else group.leader or "",
            )
        if group.state is not GroupState.PREPARING_REBALANCE:
            self._prepare_rebalance(group, f"static member {member.instance_id} restarted")
        return self._await_join(group, member)

    def _add_member_and_rebalance(
        self, group: _Group, member: _Member
    ) -> JoinResult | Awaitable[JoinResult]:
        if not group.members:
            group.protocol_type = member.protocol_type
        group.members[member.member_id] = member
        if member.instance_id is not None:
            group.static[member.instance_id] = member.member_id
        self._touch(group, member)
        if group.state is not GroupState.PREPARING_REBALANCE:
            self._prepare_rebalance(group, f"member {member.member_id} joined")
        return self._await_join(group, member)

    def _await_join(self, group: _Group, member: _Member) -> Awaitable[JoinResult]:
        if member.join_future is not None and not member.join_future.done():
            # A second JoinGroup while one is pending: the old one is superseded.
            member.join_future.set_result(
                JoinResult(ErrorCode.rebalance_in_progress, member.member_id)
            )
        future: asyncio.Future[JoinResult] = self._loop.create_future()
        member.join_future = future
        self._check_join_complete(group)
        return future

    def _join_result(self, group: _Group, member: _Member) -> JoinResult:
        is_leader = member.member_id == group.leader
        assert group.protocol_name is not None
        return JoinResult(
            ErrorCode.none,
            member.member_id,
            group.generation,
            group.protocol_type,
            group.protocol_name,
            group.leader or "",
            [
                (m.member_id, m.instance_id, m.metadata_for(group.protocol_name))
                for m in group.members.values()
            ]
            if is_leader
            else [],
        )

    # -- rebalance state machine ----------------------------------------------------------

    def _prepare_rebalance(self, group: _Group, reason: str) -> None:
        log.info("group %s: rebalancing (%s)", group.group_id, reason)
        if group.state is GroupState.COMPLETING_REBALANCE:
            # Assignments computed for the old member list are void.
            for member in group.members.values():
                if member.sync_future is not None and not member.sync_future.done():
                    member.sync_future.set_result(SyncResult(ErrorCode.rebalance_in_progress))
                member.sync_future = None
                self._touch(group, member)
        self._cancel(group, "sync_timer")
        was_empty = group.state is GroupState.EMPTY
        group.state = GroupState.PREPARING_REBALANCE
        self._cancel(group, "join_timer")
        delay = self.config.group_initial_rebalance_delay_ms / 1000
        if was_empty and delay > 0:
            group.delaying_initial_join = True
            group.join_timer = self._loop.call_later(
                min(delay, group.rebalance_timeout()), self._end_initial_delay, group
            )
        else:
            group.join_timer = self._loop.call_later(
                group.rebalance_timeout(), self._complete_join, group
            )

    def _end_initial_delay(self, group: _Group) -> None:
        group.delaying_initial_join = False
        if group.all_joined():
            self._complete_join(group)
        else:
            remaining = (
                group.rebalance_timeout() - self.config.group_initial_rebalance_delay_ms / 1000
            )
            group.join_timer = self._loop.call_later(max(remaining, 0), self._complete_join, group)

    def _check_join_complete(self, group: _Group) -> None:
        if (
            group.state is GroupState.PREPARING_REBALANCE
            and not group.delaying_initial_join
            and group.all_joined()
        ):
            self._complete_join(group)

    def _complete_join(self, group: _Group) -> None:
        """End the join phase: drop who did not rejoin, start the next generation."""
        if group.state is not GroupState.PREPARING_REBALANCE:
            return
        self._cancel(group, "join_timer")
        group.delaying_initial_join = False
        for member in list(group.members.values()):
            if member.join_future is None:
                log.info(
                    "group %s: member %s did not rejoin in time", group.group_id, member.member_id
                )
                self._drop(group, member)
        group.generation += 1
        if not group.members:
            group.state = GroupState.EMPTY
            # Like Kafka, an empty group keeps its protocol type ("consumer").
            group.protocol_name = group.leader = None
            group.empty_since_ms = now_ms()
            log.info("group %s: empty at generation %d", group.group_id, group.generation)
            return
        group.protocol_name = group.select_protocol()
        if group.leader not in group.members:
            group.leader = next(iter(group.members))
        group.state = GroupState.COMPLETING_REBALANCE
        log.info(
            "group %s: generation %d with %d members, protocol %s, leader %s",
            group.group_id,
            group.generation,
            len(group.members),
            group.protocol_name,
            group.leader,
        )
        for member in group.members.values():
            future, member.join_future = member.join_future, None
            member.assignment = b""
            self._touch(group, member)
            if future is not None and not future.done():
                future.set_result(self._join_result(group, member))
        # Members that never send SyncGroup must not hold the group forever.
        group.sync_timer = self._loop.call_later(
            group.rebalance_timeout(), self._expire_sync, group, group.generation
        )

    def _expire_sync(self, group: _Group, generation: int) -> None:
        if group.state is not GroupState.COMPLETING_REBALANCE or group.generation != generation:
            return
        missing = [m for m in group.members.values() if m.sync_future is None]
        for member in missing:
            self._drop(group, member)
        self._prepare_rebalance(group, f"{len(missing)} members did not sync in time")
        self._check_join_complete(group)

    # -- SyncGroup -----------------------------------------------------------------------

    def sync(
        self,
        *,
        group_id: str,
        generation: int,
        member_id: str,
        instance_id: str | None,
        assignments: dict[str, bytes],
    ) -> SyncResult | Awaitable[SyncResult]:
        """Handle a SyncGroup; followers wait for the leader's assignment."""
        group = self._groups.get(group_id)
        if group is None:
            return SyncResult(ErrorCode.unknown_member_id)
        error = self._check_member(group, member_id, instance_id)
        if error is ErrorCode.none and generation != group.generation:
            error = ErrorCode.illegal_generation
        if error is not ErrorCode.none:
            return SyncResult(error)
        member = group.members[member_id]
        if group.state is GroupState.PREPARING_REBALANCE:
            return SyncResult(ErrorCode.rebalance_in_progress)
        self._touch(group, member)
        if group.state is GroupState.STABLE:
            return self._sync_result(group, member)
        # CompletingRebalance: wait for the leader.
        future: asyncio.Future[SyncResult] = self._loop.create_future()
        if member.sync_future is not None and not member.sync_future.done():
            member.sync_future.set_result(SyncResult(ErrorCode.rebalance_in_progress))
        member.sync_future = future
        if member_id == group.leader:
            for each in group.members.values():
                each.assignment = assignments.get(each.member_id, b"")
            self._cancel(group, "sync_timer")
            group.state = GroupState.STABLE
            log.info("group %s: stable at generation %d", group.group_id, group.generation)
            for each in group.members.values():
                waiting, each.sync_future = each.sync_future, None
                self._touch(group, each)
                if waiting is not None and not waiting.done():
                    waiting.set_result(self._sync_result(group, each))
        return future

    @staticmethod
    def _sync_result(group: _Group, member: _Member) -> SyncResult:
        return SyncResult(
            ErrorCode.none, member.assignment, group.protocol_type, group.protocol_name
        )

    # -- Heartbeat and LeaveGroup ---------------------------------------------------------

    def heartbeat(
        self, *, group_id: str, generation: int, member_id: str, instance_id: str | None
    ) -> ErrorCode:
        group = self._groups.get(group_id)
        if group is None:
            return ErrorCode.unknown_member_id
        error = self._check_member(group, member_id, instance_id)
        if error is not ErrorCode.none:
            return error
        if generation != group.generation:
            return ErrorCode.illegal_generation
        self._touch(group, group.members[member_id])
        if group.state is GroupState.PREPARING_REBALANCE:
            return ErrorCode.rebalance_in_progress
        return ErrorCode.none

    def leave(self, *, group_id: str, member_id: str) -> ErrorCode:
        group = self._groups.get(group_id)
        if group is None:
            return ErrorCode.unknown_member_id
        if member_id in group.pending:
            group.pending.pop(member_id).cancel()
            self._check_join_complete(group)
            return ErrorCode.none
        member = group.members.get(member_id)
        if member is None:
            return ErrorCode.unknown_member_id
        self._remove_and_rebalance(group, member, f"member {member_id} left")
        return ErrorCode.none

    # -- membership helpers -----------------------------------------------------------

    @staticmethod
    def _check_member(group: _Group, member_id: str, instance_id: str | None) -> ErrorCode:
        if instance_id is not None:
            known = group.static.get(instance_id)
            if known is not None and known != member_id:
                return ErrorCode.fenced_instance_id
        if member_id not in group.members or group.state in (GroupState.EMPTY, GroupState.DEAD):
            return ErrorCode.unknown_member_id
        return ErrorCode.none

    def _touch(self, group: _Group, member: _Member) -> None:
        """Note a sign of life: the member's session starts over."""
        member.deadline = self._loop.time() + member.session_timeout
        if member.timer is None:
            member.timer = self._loop.call_at(member.deadline, self._check_session, group, member)

    def _check_session(self, group: _Group, member: _Member) -> None:
        member.timer = None
        if group.members.get(member.member_id) is not member:
            return
        now = self._loop.time()
        if member.join_future is not None or member.sync_future is not None:
            # Parked in JoinGroup or SyncGroup it cannot heartbeat; the rebalance and sync
            # timers bound those waits, and the session restarts when it is answered.
            return
        if now < member.deadline:
            member.timer = self._loop.call_at(member.deadline, self._check_session, group, member)
            return
        self._remove_and_rebalance(group, member, f"member {member.member_id} session timed out")

    def _expire_pending(self, group: _Group, member_id: str) -> None:
        if group.pending.pop(member_id, None) is not None:
            self._check_join_complete(group)
            self._forget_if_unused(group)

    def _drop(self, group: _Group, member: _Member) -> None:
        """Remove a member without starting a rebalance."""
        if member.timer is not None:
            member.timer.cancel()
            member.timer = None
        group.members.pop(member.member_id, None)
        if (
            member.instance_id is not None
            and group.static.get(member.instance_id) == member.member_id
        ):
            del group.static[member.instance_id]
        if member.join_future is not None and not member.join_future.done():
            member.join_future.set_result(JoinResult(ErrorCode.unknown_member_id, member.member_id))
        if member.sync_future is not None and not member.sync_future.done():
            member.sync_future.set_result(SyncResult(ErrorCode.unknown_member_id))
        member.join_future = member.sync_future = None

    def _remove_and_rebalance(self, group: _Group, member: _Member, reason: str) -> None:
        self._drop(group, member)
        if group.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(group, reason)
        self._check_join_complete(group)

    @staticmethod
    def _cancel(group: _Group, timer_name: str) -> None:
        timer = getattr(group, timer_name)
        if timer is not None:
            timer.cancel()
            setattr(group, timer_name, None)

    def _forget_if_unused(self, group: _Group) -> None:
        if (
            group.state is GroupState.EMPTY
            and not group.pending
            and group.group_id not in self.offsets.groups
            and self._groups.get(group.group_id) is group
        ):
            group.state = GroupState.DEAD
            del self._groups[group.group_id]

    # -- offsets ------------------------------------------------------------------------

    def commit_offsets(
        self,
        *,
        group_id: str,
        generation: int,
        member_id: str,
        instance_id: str | None,
        offsets: dict[TopicPartition, tuple[int, int, str | None]],
    ) -> tuple[dict[TopicPartition, ErrorCode], Awaitable[None] | None]:
        """Validate and store an OffsetCommit: per-partition errors and the flush to await.

        ``offsets`` maps (topic, partition) to (offset, leader epoch, metadata).
        """
        error = self._check_commit(group_id, generation, member_id, instance_id)
        errors: dict[TopicPartition, ErrorCode] = {}
        accepted: dict[TopicPartition, CommittedOffset] = {}
        stamp = now_ms()
        for (topic, partition), (offset, epoch, metadata) in offsets.items():
            count = self._partition_count(topic)
            if error is not ErrorCode.none:
                errors[(topic, partition)] = error
            elif count is None or not 0 <= partition < count:
                errors[(topic, partition)] = ErrorCode.unknown_topic_or_partition
            elif metadata is not None and len(metadata.encode()) > MAX_METADATA_BYTES:
                errors[(topic, partition)] = ErrorCode.offset_metadata_too_large
            else:
                errors[(topic, partition)] = ErrorCode.none
                accepted[(topic, partition)] = CommittedOffset(offset, epoch, metadata or "", stamp)
        if error is ErrorCode.none and group_id not in self._groups:
            # A standalone consumer's offsets make the group known (and listable).
            self._groups[group_id] = _Group(group_id)
        return errors, self.offsets.commit(group_id, accepted)

    def _check_commit(
        self,
        group_id: str,
        generation: int,
        member_id: str,
        instance_id: str | None,
        *,
        transactional: bool = False,
    ) -> ErrorCode:
        if not group_id:
            return ErrorCode.invalid_group_id
        group = self._groups.get(group_id)
        managed = generation >= 0 or member_id != "" or instance_id is not None
        if group is None:
            # Only a consumer outside group management may commit to an unknown group;
            # anything else comes from a generation that is gone.
            if generation >= 0:
                return ErrorCode.illegal_generation
            return ErrorCode.unknown_member_id if managed else ErrorCode.none
        if not managed:
            return (
                ErrorCode.none if group.state is GroupState.EMPTY else ErrorCode.unknown_member_id
            )
        error = self._check_member(group, member_id, instance_id)
        if error is not ErrorCode.none:
            return error
        if generation != group.generation:
            return ErrorCode.illegal_generation
        # Kafka refuses plain commits while the new assignment is being handed out, but
        # not transactional ones: their generation was checked, and a producer blocked
        # in send_offsets_to_transaction would otherwise retry until it times out.
        if group.state is GroupState.COMPLETING_REBALANCE and not transactional:
            return ErrorCode.rebalance_in_progress
        # Commits in PreparingRebalance are allowed: members commit before they rejoin.
        self._touch(group, group.members[member_id])
        return ErrorCode.none

    def fetch_offsets(
        self, group_id: str, partitions: list[TopicPartition] | None
    ) -> tuple[dict[TopicPartition, CommittedOffset | None], Awaitable[None] | None]:
        """The committed offsets (None = nothing committed) and the flush to await first.

        The values are read now, so a commit earlier on the same connection is seen;
        the answer waits until they are durable, so nobody acts on a value a crash
        could take back.
        """
        stored = self.offsets.get(group_id)
        if partitions is None:
            found: dict[TopicPartition, CommittedOffset | None] = dict(stored)
        else:
            found = {tp: stored.get(tp) for tp in partitions}
        return found, self.offsets.durable()

    # -- inspection -------------------------------------------------------------------

    def describe(self, group_id: str) -> GroupInfo:
        group = self._groups.get(group_id)
        if group is None:
            if group_id in self.offsets.groups:
                return GroupInfo(group_id, GroupState.EMPTY, "", "", [])
            return GroupInfo(group_id, GroupState.DEAD, "", "", [])
        stable = group.state is GroupState.STABLE
        members = [
            MemberInfo(
                m.member_id,
                m.instance_id,
                m.client_id,
                m.client_host,
                # Like Kafka, metadata and assignments only once they are settled.
                m.metadata_for(group.protocol_name) if stable and group.protocol_name else b"",
                m.assignment if stable else b"",
            )
            for m in group.members.values()
        ]
        return GroupInfo(
            group_id,
            group.state,
            group.protocol_type or "",
            group.protocol_name if stable and group.protocol_name else "",
            members,
        )

    def list_groups(self) -> list[GroupInfo]:
        names = dict.fromkeys([*self._groups, *self.offsets.groups])
        return [self.describe(name) for name in names]

    # -- housekeeping -----------------------------------------------------------------

    def _schedule_sweep(self) -> None:
        self._sweeper = self._loop.call_later(
            self.config.offsets_retention_check_interval_ms / 1000, self._sweep_and_reschedule
        )

    def _sweep_and_reschedule(self) -> None:
        try:
            self.sweep()
        except Exception:
            log.exception("offset cleanup failed")
        self._schedule_sweep()

    def sweep(self) -> int:
        """Drop offsets of deleted topics and of groups empty past the retention; count them."""
        retention_ms = self.config.offsets_retention_minutes * 60_000
        now = now_ms()
        removed = 0
        for group_id, stored in list(self.offsets.groups.items()):
            group = self._groups.get(group_id)
            active = group is not None and group.state is not GroupState.EMPTY
            # KIP-211: offsets of a group in use never expire; an empty group's expire
            # a retention period after it became empty (or after the commit, if later).
            empty_since = group.empty_since_ms if group is not None else 0
            doomed = [
                tp
                for tp, committed in stored.items()
                if self._partition_count(tp[0]) is None
                or (not active and max(committed.commit_time_ms, empty_since) + retention_ms <= now)
            ]
            if doomed:
                removed += len(doomed)
                self.offsets.delete(group_id, doomed)
        for group in list(self._groups.values()):
            self._forget_if_unused(group)
        if removed:
            log.info("removed %d expired or orphaned committed offsets", removed)
        return removed

    def check_transactional_commit(
        self, group_id: str, generation: int, member_id: str, instance_id: str | None
    ) -> ErrorCode:
        """KIP-447 for TxnOffsetCommit: a producer that passes its consumer's group metadata
        must be a current member of the current generation. Older requests carry none."""
        if generation < 0 and not member_id and instance_id is None:
            return ErrorCode.none
        return self._check_commit(group_id, generation, member_id, instance_id, transactional=True)

    def commit_transactional_offsets(
        self, group_id: str, offsets: dict[TopicPartition, tuple[int, int, str | None]]
    ) -> Awaitable[None] | None:
        """Store the offsets of a committed transaction (TxnOffsetCommit then EndTxn).

        They were validated when the transaction added them; the commit marker decides.
        """
        stamp = now_ms()
        if group_id not in self._groups:
            self._groups[group_id] = _Group(group_id)
        return self.offsets.commit(
            group_id,
            {
                tp: CommittedOffset(offset, epoch, metadata or "", stamp)
                for tp, (offset, epoch, metadata) in offsets.items()
            },
        )

    def forget_topic(self, topic: str) -> None:
        """Drop every group's offsets of a deleted topic (for a DeleteTopics handler)."""
        for group_id, stored in list(self.offsets.groups.items()):
            doomed = [tp for tp in stored if tp[0] == topic]
            if doomed:
                self.offsets.delete(group_id, doomed)

    def close(self, durably: bool = True) -> None:
        """Cancel every timer and answer every parked request; then close the store
        (without syncing it when ``durably`` is False: the data dir is offline)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for group in self._groups.values():
            self._cancel(group, "join_timer")
            self._cancel(group, "sync_timer")
            for timer in group.pending.values():
                timer.cancel()
            for member in list(group.members.values()):
                self._drop(group, member)
        self._groups.clear()
        self.offsets.close(durably)
