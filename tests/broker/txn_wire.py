"""Raw transaction-protocol requests, for tests that must control when each one is sent
and read its answer separately (a client library hides both)."""

from __future__ import annotations

import datetime
from typing import Any

from kio.schema.errors import ErrorCode
from wire import WireClient, build_batch, fix_crc, request_module

from onceflow.broker.protocol import build
from onceflow.broker.records import ATTRIBUTES_OFFSET

INIT_PRODUCER_ID, ADD_PARTITIONS, ADD_OFFSETS, END_TXN, TXN_OFFSET_COMMIT = 22, 24, 25, 26, 28
OFFSET_COMMIT = 8
TRANSACTIONAL_ATTRIBUTE = 0x10


def transactional_batch(
    values: list[bytes], producer_id: int, epoch: int, base_sequence: int
) -> bytes:
    batch = bytearray(
        build_batch(
            [(None, v) for v in values],
            producer_id=producer_id,
            producer_epoch=epoch,
            base_sequence=base_sequence,
        )
    )
    batch[ATTRIBUTES_OFFSET + 1] |= TRANSACTIONAL_ATTRIBUTE
    fix_crc(batch)
    return bytes(batch)


class TxnProducer:
    """One transactional id on one connection, speaking the protocol step by step."""

    def __init__(self, bootstrap: str, transactional_id: str) -> None:
        self.wire = WireClient.connect(bootstrap)
        self.transactional_id = transactional_id
        m = request_module(INIT_PRODUCER_ID, 4)
        response = self.wire.request(
            build(
                m.InitProducerIdRequest,
                transactional_id=transactional_id,
                transaction_timeout=datetime.timedelta(seconds=60),
                producer_id=-1,
                producer_epoch=-1,
            )
        )
        assert response.error_code == ErrorCode.none, response
        self.producer_id, self.epoch = response.producer_id, response.producer_epoch
        self.sequences: dict[tuple[str, int], int] = {}

    def close(self) -> None:
        self.wire.close()

    def add_partitions(self, partitions: list[tuple[str, int]]) -> None:
        for error in self.try_add_partitions(partitions):
            assert error == ErrorCode.none, error

    def try_add_partitions(self, partitions: list[tuple[str, int]]) -> list[ErrorCode]:
        """AddPartitionsToTxn; returns each partition's error code."""
        m = request_module(ADD_PARTITIONS, 3)
        by_topic: dict[str, list[int]] = {}
        for topic, index in partitions:
            by_topic.setdefault(topic, []).append(index)
        response = self.wire.request(
            build(
                m.AddPartitionsToTxnRequest,
                v3_and_below_transactional_id=self.transactional_id,
                v3_and_below_producer_id=self.producer_id,
                v3_and_below_producer_epoch=self.epoch,
                v3_and_below_topics=tuple(
                    build(m.AddPartitionsToTxnTopic, name=name, partitions=tuple(indexes))
                    for name, indexes in by_topic.items()
                ),
            )
        )
        return [
            result.partition_error_code
            for topic in response.results_by_topic_v3_and_below
            for result in topic.results_by_partition
        ]

    def produce(self, topic: str, partition: int, values: list[bytes]) -> int:
        """Append one transactional batch; returns its base offset."""
        sequence = self.sequences.get((topic, partition), 0)
        batch = transactional_batch(values, self.producer_id, self.epoch, sequence)
        self.sequences[(topic, partition)] = sequence + len(values)
        answer = self.wire.produce(topic, partition, batch)
        assert answer.error_code == ErrorCode.none, answer
        return answer.base_offset

    def add_offsets(self, group: str) -> None:
        m = request_module(ADD_OFFSETS, 3)
        response = self.wire.request(
            build(
                m.AddOffsetsToTxnRequest,
                transactional_id=self.transactional_id,
                producer_id=self.producer_id,
                producer_epoch=self.epoch,
                group_id=group,
            )
        )
        assert response.error_code == ErrorCode.none, response

    def txn_offset_commit_request(
        self,
        group: str,
        offsets: dict[tuple[str, int], int],
        *,
        generation: int = -1,
        member_id: str = "",
    ) -> Any:
        """TxnOffsetCommit v3, with the consumer's group metadata when given (KIP-447)."""
        m = request_module(TXN_OFFSET_COMMIT, 3)
        return build(
            m.TxnOffsetCommitRequest,
            transactional_id=self.transactional_id,
            group_id=group,
            producer_id=self.producer_id,
            producer_epoch=self.epoch,
            generation_id=generation,
            member_id=member_id,
            group_instance_id=None,
            topics=_commit_topics(
                offsets, m.TxnOffsetCommitRequestTopic, m.TxnOffsetCommitRequestPartition
            ),
        )

    def txn_offset_commit(self, group: str, offsets: dict[tuple[str, int], int]) -> None:
        response = self.wire.request(self.txn_offset_commit_request(group, offsets))
        for topic in response.topics:
            for partition in topic.partitions:
                assert partition.error_code == ErrorCode.none, partition

    def end_txn_request(self, commit: bool) -> Any:
        m = request_module(END_TXN, 1)
        return build(
            m.EndTxnRequest,
            transactional_id=self.transactional_id,
            producer_id=self.producer_id,
            producer_epoch=self.epoch,
            committed=commit,
        )

    def end_txn(self, commit: bool) -> ErrorCode:
        return self.wire.request(self.end_txn_request(commit)).error_code


def offset_commit_request(group: str, offsets: dict[tuple[str, int], int]) -> Any:
    """A simple (group-less member) OffsetCommit, as an admin or a standalone consumer."""
    m = request_module(OFFSET_COMMIT, 8)
    return build(
        m.OffsetCommitRequest,
        group_id=group,
        generation_id_or_member_epoch=-1,
        member_id="",
        group_instance_id=None,
        topics=_commit_topics(offsets, m.OffsetCommitRequestTopic, m.OffsetCommitRequestPartition),
    )


def _commit_topics(
    offsets: dict[tuple[str, int], int], topic_class: type, partition_class: type
) -> tuple[Any, ...]:
    """The topics array of an OffsetCommit or TxnOffsetCommit request."""
    by_topic: dict[str, list[Any]] = {}
    for (topic, index), offset in offsets.items():
        by_topic.setdefault(topic, []).append(
            build(
                partition_class,
                partition_index=index,
                committed_offset=offset,
                committed_leader_epoch=-1,
                committed_metadata="",
            )
        )
    return tuple(
        build(topic_class, name=name, partitions=tuple(parts)) for name, parts in by_topic.items()
    )
