"""librdkafka's in-memory mock cluster, created through its C API.

``test.mock.num.brokers`` would hide the cluster inside one client and auto-create
topics with 4 partitions; the C API (of the same librdkafka that confluent-kafka loads)
gives a bootstrap address other clients and processes can use, and exact topics.
The cluster lives in the calling process, on librdkafka's own threads.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError


@dataclass(frozen=True)
class MockCluster:
    """A running mock cluster: where clients connect and how to make a topic on it."""

    bootstrap: str
    create_topic: Callable[[str, int], None]


def _librdkafka() -> ctypes.CDLL:
    """The librdkafka that confluent-kafka loaded, with the mock API's signatures."""
    package = Path(confluent_kafka.__file__).parent
    found = sorted(package.parent.glob("confluent_kafka.libs/librdkafka*.so*"))
    lib = ctypes.CDLL(str(found[0]) if found else "librdkafka.so.1")
    ptr, c_int = ctypes.c_void_p, ctypes.c_int
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "rd_kafka_conf_new": (ptr, []),
        "rd_kafka_conf_set": (c_int, [ptr, ctypes.c_char_p, ctypes.c_char_p, ptr, ctypes.c_size_t]),
        "rd_kafka_new": (ptr, [c_int, ptr, ctypes.c_char_p, ctypes.c_size_t]),
        "rd_kafka_destroy": (None, [ptr]),
        "rd_kafka_mock_cluster_new": (ptr, [ptr, c_int]),
        "rd_kafka_mock_cluster_destroy": (None, [ptr]),
        "rd_kafka_mock_cluster_bootstraps": (ctypes.c_char_p, [ptr]),
        "rd_kafka_mock_topic_create": (c_int, [ptr, ctypes.c_char_p, c_int, c_int]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


@contextlib.contextmanager
def mock_cluster(brokers: int = 1) -> Iterator[MockCluster]:
    """librdkafka's mock cluster with ``brokers`` brokers, owned by a bare handle."""
    lib = _librdkafka()
    conf = lib.rd_kafka_conf_new()
    lib.rd_kafka_conf_set(conf, b"log_level", b"3", None, 0)  # no "no bootstrap" warning
    errstr = ctypes.create_string_buffer(512)
    handle = lib.rd_kafka_new(0, conf, errstr, len(errstr))  # 0: RD_KAFKA_PRODUCER
    if not handle:
        raise RuntimeError(f"rd_kafka_new failed: {errstr.value.decode()}")
    mock = lib.rd_kafka_mock_cluster_new(handle, brokers)
    try:
        if not mock:
            raise RuntimeError("rd_kafka_mock_cluster_new failed")

        def create_topic(name: str, partitions: int) -> None:
            error = lib.rd_kafka_mock_topic_create(mock, name.encode(), partitions, 1)
            if error:
                raise RuntimeError(f"mock topic {name}: error {KafkaError(error).name()}")

        yield MockCluster(lib.rd_kafka_mock_cluster_bootstraps(mock).decode(), create_topic)
    finally:
        if mock:
            lib.rd_kafka_mock_cluster_destroy(mock)
        lib.rd_kafka_destroy(handle)
