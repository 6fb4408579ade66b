"""JoinGroup, SyncGroup, Heartbeat, LeaveGroup, DescribeGroups, ListGroups.

Thin translations between kio entities and ``GroupCoordinator`` (broker/groups.py),
which holds all of the protocol's logic.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from onceflow.broker.connection import current_client
from onceflow.broker.durable import then
from onceflow.broker.groups import GroupCoordinator, JoinResult, SyncResult
from onceflow.broker.protocol import NO_THROTTLE, build, response_module
from onceflow.broker.security.access import Operation, ResourceType, allowed

JOIN_GROUP = 11
HEARTBEAT = 12
LEAVE_GROUP = 13
SYNC_GROUP = 14
DESCRIBE_GROUPS = 15
LIST_GROUPS = 16
# JoinGroup v4 introduced MEMBER_ID_REQUIRED (KIP-394).
_REQUIRE_MEMBER_ID_SINCE = 4
# Kafka's value for "authorized operations were not requested".
NO_AUTHORIZED_OPERATIONS = -(2**31)


def _coordinator(broker: Any) -> GroupCoordinator:
    return broker.groups


def _client_host() -> str:
    # Kafka's form: the address with a leading slash (InetAddress.toString()).
    return f"/{current_client().host}"


def _may_read(broker: Any, group_id: str) -> bool:
    return allowed(broker, Operation.READ, ResourceType.GROUP, group_id)


def join_group(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(JOIN_GROUP, request.__version__)
    if not _may_read(broker, request.group_id):
        return build(
            m.JoinGroupResponse, throttle_time=NO_THROTTLE,
            error_code=ErrorCode.group_authorization_failed, generation_id=-1,
            protocol_type=None, protocol_name="", leader="", skip_assignment=False,
            member_id=request.member_id, members=(),
        )  # fmt: skip
    rebalance_timeout = getattr(request, "rebalance_timeout", None)
    session_ms = int(request.session_timeout.total_seconds() * 1000)
    outcome = _coordinator(broker).join(
        group_id=request.group_id,
        member_id=request.member_id,
        instance_id=getattr(request, "group_instance_id", None),
        client_id=header.client_id or "",
        client_host=_client_host(),
        session_timeout_ms=session_ms,
        rebalance_timeout_ms=(
            int(rebalance_timeout.total_seconds() * 1000) if rebalance_timeout else -1
        ),
        protocol_type=request.protocol_type,
        protocols=[(p.name, p.metadata) for p in request.protocols],
        require_known_member_id=request.__version__ >= _REQUIRE_MEMBER_ID_SINCE,
    )

    def respond(result: JoinResult) -> Any:
        return build(
            m.JoinGroupResponse,
            throttle_time=NO_THROTTLE,
            error_code=result.error,
            generation_id=result.generation,
            protocol_type=result.protocol_type,
            protocol_name=result.protocol_name or "",
            leader=result.leader,
            skip_assignment=False,
            member_id=result.member_id,
            members=tuple(
                build(
                    m.JoinGroupResponseMember,
                    member_id=member_id,
                    group_instance_id=instance_id,
                    metadata=metadata,
                )
                for member_id, instance_id, metadata in result.members
            ),
        )

    return then(outcome, respond)


def sync_group(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(SYNC_GROUP, request.__version__)
    if not _may_read(broker, request.group_id):
        return build(
            m.SyncGroupResponse, throttle_time=NO_THROTTLE,
            error_code=ErrorCode.group_authorization_failed, protocol_type=None,
            protocol_name=None, assignment=b"",
        )  # fmt: skip
    outcome = _coordinator(broker).sync(
        group_id=request.group_id,
        generation=request.generation_id,
        member_id=request.member_id,
        instance_id=getattr(request, "group_instance_id", None),
        assignments={a.member_id: a.assignment for a in request.assignments},
    )

    def respond(result: SyncResult) -> Any:
        return build(
            m.SyncGroupResponse,
            throttle_time=NO_THROTTLE,
            error_code=result.error,
            protocol_type=result.protocol_type,
            protocol_name=result.protocol_name,
            assignment=result.assignment,
        )

    return then(outcome, respond)


def heartbeat(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(HEARTBEAT, request.__version__)
    if not _may_read(broker, request.group_id):
        return build(
            m.HeartbeatResponse,
            throttle_time=NO_THROTTLE,
            error_code=ErrorCode.group_authorization_failed,
        )
    error = _coordinator(broker).heartbeat(
        group_id=request.group_id,
        generation=request.generation_id,
        member_id=request.member_id,
        instance_id=getattr(request, "group_instance_id", None),
    )
    return build(m.HeartbeatResponse, throttle_time=NO_THROTTLE, error_code=error)


def leave_group(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(LEAVE_GROUP, request.__version__)
    if not _may_read(broker, request.group_id):
        error = ErrorCode.group_authorization_failed
    else:
        error = _coordinator(broker).leave(group_id=request.group_id, member_id=request.member_id)
    return build(m.LeaveGroupResponse, throttle_time=NO_THROTTLE, error_code=error)


def describe_groups(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(DESCRIBE_GROUPS, request.__version__)
    described = []
    for group_id in request.groups:
        if not allowed(broker, Operation.DESCRIBE, ResourceType.GROUP, group_id):
            described.append(
                build(
                    m.DescribedGroup, error_code=ErrorCode.group_authorization_failed,
                    group_id=group_id, group_state="", protocol_type="", protocol_data="",
                    members=(), authorized_operations=NO_AUTHORIZED_OPERATIONS,
                )
            )  # fmt: skip
            continue
        info = _coordinator(broker).describe(group_id)
        described.append(
            build(
                m.DescribedGroup,
                error_code=ErrorCode.invalid_group_id if not group_id else ErrorCode.none,
                group_id=group_id,
                group_state=str(info.state),
                protocol_type=info.protocol_type,
                protocol_data=info.protocol_name,
                members=tuple(
                    build(
                        m.DescribedGroupMember,
                        member_id=member.member_id,
                        group_instance_id=member.group_instance_id,
                        client_id=member.client_id,
                        client_host=member.client_host,
                        member_metadata=member.metadata,
                        member_assignment=member.assignment,
                    )
                    for member in info.members
                ),
                authorized_operations=NO_AUTHORIZED_OPERATIONS,
            )
        )
    return build(m.DescribeGroupsResponse, throttle_time=NO_THROTTLE, groups=tuple(described))


def list_groups(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(LIST_GROUPS, request.__version__)
    wanted = {state.lower() for state in getattr(request, "states_filter", ())}
    # As Kafka: DESCRIBE on the cluster lists every group, else those one may describe.
    everything = allowed(broker, Operation.DESCRIBE, ResourceType.CLUSTER)
    listed = tuple(
        build(
            m.ListedGroup,
            group_id=info.group_id,
            protocol_type=info.protocol_type,
            group_state=str(info.state),
        )
        for info in _coordinator(broker).list_groups()
        if (not wanted or str(info.state).lower() in wanted)
        and (everything or allowed(broker, Operation.DESCRIBE, ResourceType.GROUP, info.group_id))
    )
    return build(
        m.ListGroupsResponse, throttle_time=NO_THROTTLE, error_code=ErrorCode.none, groups=listed
    )
