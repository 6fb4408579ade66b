"""DescribeLogDirs: the one data directory, the size of every partition in it, and the
disk's capacity (what ``kafka-log-dirs.sh`` and ``onceflow topics describe`` show)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from kio.schema.errors import ErrorCode

from onceflow.broker.log.partition import PartitionLog
from onceflow.broker.protocol import NO_THROTTLE, build, response_module
from onceflow.broker.security.access import Operation, ResourceType, allowed

API_KEY = 35


def partition_size(partition: PartitionLog) -> int:
    """Bytes of the partition's segment files."""
    return sum(segment.size for segment in partition.segments)


def handle(broker: Any, header: Any, request: Any) -> Any:
    m = response_module(API_KEY, request.__version__)
    if not allowed(broker, Operation.DESCRIBE, ResourceType.CLUSTER):
        return build(
            m.DescribeLogDirsResponse,
            throttle_time=NO_THROTTLE,
            error_code=ErrorCode.cluster_authorization_failed,
            results=(),
        )
    live = {name: t for name, t in broker.topics.topics.items() if not t.deleting}
    # None asks for every partition; a topic or partition that does not exist is left out.
    wanted = (
        {name: range(len(t.partitions)) for name, t in live.items()}
        if request.topics is None
        else {w.topic: w.partitions for w in request.topics if w.topic in live}
    )
    topics = tuple(
        build(
            m.DescribeLogDirsTopic,
            name=name,
            partitions=tuple(
                build(
                    m.DescribeLogDirsPartition,
                    partition_index=index,
                    partition_size=partition_size(live[name].partitions[index]),
                    offset_lag=0,
                    is_future_key=False,
                )
                for index in indexes
                if 0 <= index < len(live[name].partitions)
            ),
        )
        for name, indexes in wanted.items()
    )
    data_dir = Path(broker.config.data_dir).resolve()
    disk = shutil.disk_usage(data_dir)
    return build(
        m.DescribeLogDirsResponse,
        throttle_time=NO_THROTTLE,
        error_code=ErrorCode.none,
        results=(
            build(
                m.DescribeLogDirsResult,
                error_code=ErrorCode.none,
                log_dir=str(data_dir),
                topics=topics,
                total_bytes=disk.total,
                usable_bytes=disk.free,
            ),
        ),
    )
