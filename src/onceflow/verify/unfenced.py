"""A broker that does not fence, on purpose: the target that shows the verifier's
fenced-writes check failing a run end to end.

A correct broker fences a transactional producer once a newer one has initialised its
transactional id (InitProducerId bumps the epoch and aborts the old one's transaction),
and refuses offsets sent with a consumer's stale group metadata (KIP-447). ``Unfencing``,
the rewriter of a ``KafkaProxy`` in front of a broker, switches both off:

- each InitProducerId gets a transactional id of its own at the broker (``ID~1``,
  ``ID~2``, ...), and every later request of that producer, known by the producer id the
  broker gave it, is sent under it: a newer producer no longer fences an older one;
- TxnOffsetCommit loses its group metadata (generation -1, no member), which brokers
  accept unchecked.

A paused producer that resumes after its successor took over then commits as if nobody
had replaced it. The upstream must be a single node: the coordinator of each rewritten
id has to be the node clients found for the original.
"""

from __future__ import annotations

import collections
import dataclasses
import struct
from typing import Any

from kio.static.primitive import i32

from onceflow.verify.proxy import KafkaProxy, decode, encode

PRODUCE, INIT_PRODUCER_ID, ADD_PARTITIONS, ADD_OFFSETS, END_TXN, TXN_OFFSET_COMMIT = (
    0, 22, 24, 25, 26, 28,
)  # fmt: skip
# AddPartitionsToTxn from v4 on is the brokers' own batched form; clients send v0-v3.
CLIENT_ADD_PARTITIONS_UNTIL = 3
# TxnOffsetCommit carries group metadata from v3 on.
GROUP_METADATA_SINCE = 3
_PRODUCER_ID = struct.Struct(">q")
PRODUCER_ID_AT = 43  # in a record batch v2 header


@dataclasses.dataclass(frozen=True)
class _Fields:
    """Where a request keeps its transactional id and producer id."""

    transactional_id: str
    producer_id: str


_FIELDS = {
    INIT_PRODUCER_ID: _Fields("transactional_id", "producer_id"),
    ADD_PARTITIONS: _Fields("v3_and_below_transactional_id", "v3_and_below_producer_id"),
    ADD_OFFSETS: _Fields("transactional_id", "producer_id"),
    END_TXN: _Fields("transactional_id", "producer_id"),
    TXN_OFFSET_COMMIT: _Fields("transactional_id", "producer_id"),
}


class Unfencing:
    """A ``Rewriter`` that gives every transactional producer incarnation its own
    transactional id at the broker and strips TxnOffsetCommit's group metadata."""

    def __init__(self) -> None:
        self._incarnations: collections.Counter[str] = collections.Counter()
        #: producer id -> the transactional id the broker knows that producer by.
        self._names: dict[int, str] = {}
        self.stats: collections.Counter[str] = collections.Counter()

    def request(self, api_key: int, version: int, frame: bytes) -> tuple[bytes, Any]:
        if api_key == ADD_PARTITIONS and version > CLIENT_ADD_PARTITIONS_UNTIL:
            return frame, None
        if api_key not in _FIELDS and api_key != PRODUCE:
            return frame, None
        header, body = decode("request", api_key, version, frame)
        if api_key == PRODUCE:
            return self._produce(version, header, body, frame), None
        fields = _FIELDS[api_key]
        transactional_id = getattr(body, fields.transactional_id)
        if transactional_id is None:
            return frame, None  # an idempotent producer's InitProducerId
        producer_id = int(getattr(body, fields.producer_id))
        name = self._names.get(producer_id)
        if name is None and api_key == INIT_PRODUCER_ID:
            self._incarnations[transactional_id] += 1
            name = f"{transactional_id}~{self._incarnations[transactional_id]}"
        if name is None:
            return frame, None  # a producer this proxy never saw start: left alone
        changes: dict[str, Any] = {fields.transactional_id: name}
        if api_key == TXN_OFFSET_COMMIT and version >= GROUP_METADATA_SINCE:
            changes |= {"generation_id": i32(-1), "member_id": "", "group_instance_id": None}
            self.stats["group_checks_skipped"] += 1
        body = dataclasses.replace(body, **changes)
        return encode("request", api_key, version, header, body), name

    def _produce(self, version: int, header: Any, body: Any, frame: bytes) -> bytes:
        if body.transactional_id is None:
            return frame
        for topic in body.topic_data:
            for partition in topic.partition_data:
                records = partition.records
                if records and len(records) >= PRODUCER_ID_AT + _PRODUCER_ID.size:
                    (producer_id,) = _PRODUCER_ID.unpack_from(records, PRODUCER_ID_AT)
                    name = self._names.get(producer_id)
                    if name is None:
                        return frame
                    body = dataclasses.replace(body, transactional_id=name)
                    return encode("request", PRODUCE, version, header, body)
        return frame

    def response(self, api_key: int, version: int, frame: bytes, context: Any) -> bytes:
        if api_key == INIT_PRODUCER_ID and context is not None:
            _, body = decode("response", api_key, version, frame)
            if int(body.producer_id) >= 0:
                self._names[int(body.producer_id)] = context
                self.stats["incarnations"] += 1
        return frame


def unfenced_broker(upstream: str) -> KafkaProxy:
    """A started proxy in front of the single-node broker ``upstream`` that behaves as a
    broker that does not fence (see the module's docstring); ``stop()`` it when done."""
    return KafkaProxy(upstream, rewriter=Unfencing()).start()
