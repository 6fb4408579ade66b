"""A null where the request schema allows none (kio decodes a -1 length as None for any
array) is refused before any handler sees it: the connection is closed, as Kafka's parser
does, with one warning and no traceback; other connections are served on."""

from __future__ import annotations

import struct

import pytest
from kio.schema.errors import ErrorCode
from wire import WireClient, raw_frame

from onceflow.testing import BrokerProcess

NULL_ARRAY = struct.pack(">i", -1)


def _string(value: str) -> bytes:
    return struct.pack(">h", len(value)) + value.encode()


# (api key, version, body): the null arrays that crashed handlers before the check.
CASES = {
    "OffsetCommit topics": (
        8,
        2,
        _string("g") + struct.pack(">i", -1) + _string("") + struct.pack(">q", -1) + NULL_ARRAY,
    ),
    "OffsetCommit partitions": (
        8,
        2,
        _string("g")
        + struct.pack(">i", -1)
        + _string("")
        + struct.pack(">q", -1)
        + struct.pack(">i", 1)
        + _string("t")
        + NULL_ARRAY,
    ),
    "OffsetFetch partition indexes": (
        9,
        1,
        _string("g") + struct.pack(">i", 1) + _string("t") + NULL_ARRAY,
    ),
    "ListOffsets topics": (2, 1, struct.pack(">i", -1) + NULL_ARRAY),
    "ListOffsets partitions": (
        2,
        1,
        struct.pack(">i", -1) + struct.pack(">i", 1) + _string("t") + NULL_ARRAY,
    ),
    "Produce topic data": (0, 3, struct.pack(">hhi", -1, 1, 1000) + NULL_ARRAY),
    "Produce partition data": (
        0,
        3,
        struct.pack(">hhi", -1, 1, 1000) + struct.pack(">i", 1) + _string("t") + NULL_ARRAY,
    ),
    "AddPartitionsToTxn partitions": (
        24,
        0,
        _string("txn")
        + struct.pack(">qh", 1, 0)
        + struct.pack(">i", 1)
        + _string("t")
        + NULL_ARRAY,
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_null_array_closes_the_connection_without_a_traceback(
    shared_broker: BrokerProcess, case: str
) -> None:
    api_key, version, body = CASES[case]
    with WireClient.connect(shared_broker.bootstrap) as bystander:
        with WireClient.connect(shared_broker.bootstrap) as client:
            client.send_bytes(raw_frame(api_key, version, 7, body))
            assert client.closed_by_peer()
        assert bystander.api_versions().error_code == ErrorCode.none
    log = shared_broker.log_path.read_text()
    assert "Traceback" not in log
    assert "is null" in log.splitlines()[-1]
