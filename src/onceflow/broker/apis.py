"""The one table of supported APIs: key -> (name, version range, handler).

Version ranges are the ones in DESIGN.md that old and new clients (librdkafka 2.0
through 2.16, aiokafka, kafka-python) all accept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from onceflow.broker.handlers import (
    acls,
    admin,
    api_versions,
    configs,
    create_topics,
    fetch,
    find_coordinator,
    groups,
    init_producer_id,
    list_offsets,
    log_dirs,
    metadata,
    offsets,
    produce,
    sasl,
    scram_admin,
    transactions,
    txn_admin,
)

# (broker, header, request) -> response entity, an awaitable of one, or None (no answer).
Handler = Callable[[Any, Any, Any], Any]


@dataclass(frozen=True, slots=True)
class Api:
    key: int
    name: str
    min_version: int
    max_version: int
    handler: Handler
    #: Answers a request whose version is out of range instead of closing the connection.
    unsupported_version: Callable[[Any, bytes], bytes] | None = None


API_TABLE: dict[int, Api] = {
    api.key: api
    for api in (
        Api(0, "Produce", 3, 9, produce.handle),
        Api(1, "Fetch", 4, 12, fetch.handle),
        Api(2, "ListOffsets", 1, 7, list_offsets.handle),
        Api(3, "Metadata", 0, 12, metadata.handle),
        Api(8, "OffsetCommit", 2, 8, offsets.offset_commit),
        Api(9, "OffsetFetch", 1, 7, offsets.offset_fetch),
        Api(10, "FindCoordinator", 0, 2, find_coordinator.handle),
        Api(11, "JoinGroup", 0, 5, groups.join_group),
        Api(12, "Heartbeat", 0, 3, groups.heartbeat),
        Api(13, "LeaveGroup", 0, 1, groups.leave_group),
        Api(14, "SyncGroup", 0, 3, groups.sync_group),
        Api(15, "DescribeGroups", 0, 5, groups.describe_groups),
        Api(16, "ListGroups", 0, 4, groups.list_groups),
        # librdkafka needs v0 listed to try SASL at all; a v0 request (raw SASL tokens
        # without Kafka framing follow it) is refused by the handler.
        Api(17, "SaslHandshake", 0, 1, sasl.handshake),
        Api(18, "ApiVersions", 0, 3, api_versions.handle, api_versions.answer_unsupported),
        Api(19, "CreateTopics", 2, 4, create_topics.handle),
        Api(20, "DeleteTopics", 1, 6, admin.delete_topics),
        Api(21, "DeleteRecords", 0, 2, admin.delete_records),
        Api(22, "InitProducerId", 0, 4, init_producer_id.handle),
        Api(24, "AddPartitionsToTxn", 0, 3, transactions.handle_add_partitions),
        Api(25, "AddOffsetsToTxn", 0, 3, transactions.handle_add_offsets),
        Api(26, "EndTxn", 0, 1, transactions.handle_end_txn),
        Api(27, "WriteTxnMarkers", 1, 2, txn_admin.write_txn_markers),
        Api(28, "TxnOffsetCommit", 0, 3, transactions.handle_txn_offset_commit),
        Api(29, "DescribeAcls", 1, 3, acls.describe),
        Api(30, "CreateAcls", 1, 3, acls.create),
        Api(31, "DeleteAcls", 1, 3, acls.delete),
        Api(32, "DescribeConfigs", 1, 4, configs.describe_configs),
        Api(33, "AlterConfigs", 0, 2, configs.alter_configs),
        Api(35, "DescribeLogDirs", 1, 4, log_dirs.handle),
        Api(36, "SaslAuthenticate", 0, 2, sasl.authenticate),
        Api(37, "CreatePartitions", 0, 3, admin.create_partitions),
        Api(44, "IncrementalAlterConfigs", 0, 1, configs.incremental_alter_configs),
        Api(50, "DescribeUserScramCredentials", 0, 0, scram_admin.describe),
        Api(51, "AlterUserScramCredentials", 0, 0, scram_admin.alter),
        Api(60, "DescribeCluster", 0, 2, admin.describe_cluster),
        Api(61, "DescribeProducers", 0, 0, txn_admin.describe_producers),
        Api(65, "DescribeTransactions", 0, 0, txn_admin.describe_transactions),
        Api(66, "ListTransactions", 0, 2, txn_admin.list_transactions),
    )
}
