"""ListOffsets MAX_TIMESTAMP (-3) from segment metadata, across segments and restarts."""

from __future__ import annotations

from collections.abc import Callable

from kio.schema.errors import ErrorCode
from wire import WireClient, build_batch

from onceflow.testing import BrokerProcess

MAX_TIMESTAMP = -3
SEGMENT_BYTES = 1024
VALUE = b"v" * 300  # three batches a segment
# Batch timestamps in produce order: the largest sits in an older segment, and a tie
# later must not move the answer (the first record with the largest timestamp wins).
TIMESTAMPS = [1_000, 5_000, 2_000, 3_000, 5_000, 4_000, 1_500, 2_500, 3_500, 4_500]


def max_timestamp(client: WireClient) -> tuple[int, int]:
    answer = client.list_offsets("t", 0, MAX_TIMESTAMP)
    assert answer.error_code == ErrorCode.none, answer
    return answer.offset, answer.timestamp


def test_max_timestamp_offset_spans_segments_and_restarts(
    onceflow_broker_process_factory: Callable[..., BrokerProcess],
) -> None:
    broker = onceflow_broker_process_factory(extra_args=("--segment-bytes", str(SEGMENT_BYTES)))
    with WireClient.connect(broker.bootstrap) as client:
        client.ensure_topic("t")
        for timestamp in TIMESTAMPS:
            batch = build_batch([(None, VALUE)], timestamp_ms=timestamp)
            assert client.produce("t", 0, batch).error_code == ErrorCode.none
        assert len(list((broker.data_dir / "t-0").glob("*.log"))) >= 3
        assert max_timestamp(client) == (1, 5_000)
    broker.kill()
    broker.start()  # segments loaded from their index files
    with WireClient.connect(broker.bootstrap) as client:
        assert max_timestamp(client) == (1, 5_000)
        later = build_batch([(None, VALUE)], timestamp_ms=9_000)
        offset = client.produce("t", 0, later).base_offset
        assert max_timestamp(client) == (offset, 9_000)
