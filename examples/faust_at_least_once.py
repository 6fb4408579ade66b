"""At least once with faust-streaming: an agent written as its users write one.

Each input record goes, unchanged and with its key, to the output topic. With
``processing_guarantee="at_least_once"`` Faust commits an input position only after the
agent has taken the records before it and the producer has flushed every output sent
so far, so a crash redoes work (duplicates, allowed) but never skips it.

One thing is added to Faust's defaults: reading the input with ``read_committed``. Faust
reads ``read_uncommitted`` unless the guarantee is exactly once, so it acts on records of
transactions its upstream aborted (outputs for inputs that never happened: the verifier
reports them as aborted reads), and no setting changes that.

An instance that starts while the broker is unreachable exits (aiokafka tries each
bootstrap address once at start-up), to be restarted by its supervisor. The verifier
restarts it too, but counts an exit it did not cause as a doubt: a seed that restarts
an instance just before a broker kill or a network cut makes the run inconclusive
(``--seed 5`` with the default schedule does).

    onceflow verify --guarantee at-least-once --input in --output out \\
        --command "python examples/faust_at_least_once.py {input} {output}"
"""

from __future__ import annotations

import tempfile
from typing import Any

import aiokafka
import faust
from _app import app
from faust.transport.drivers import aiokafka as faust_aiokafka


class _ReadCommittedThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Faust passes read_uncommitted (outside exactly once) and aiokafka has no
        # public way to change it after construction; it reads this at start().
        consumer._isolation_level = "read_committed"
        return consumer


class _ReadCommittedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ReadCommittedThread(self, loop=self.loop, beacon=self.beacon)


class _ReadCommittedTransport(faust_aiokafka.Transport):
    Consumer = _ReadCommittedConsumer


def main() -> None:
    settings = app()
    group = "example-faust-at-least-once"
    faust_app = faust.App(
        group,
        broker=f"kafka://{settings.bootstrap}",
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        # Shorter than the verifier's pause: a paused instance loses its partitions.
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        # A stable member id per instance, so a restarted instance takes its
        # predecessor's place without waiting for its session to expire.
        consumer_group_instance_id=f"{group}-{settings.instance}",
        # Several instances on one machine: no web server (each would want port 6066)
        # and a data directory of its own (a stateless agent keeps no tables in it).
        web_enabled=False,
        datadir=tempfile.mkdtemp(prefix="faust-data-"),
        # No leader-election topic: the agent needs nothing but the two topics.
        topic_disable_leader=True,
    )
    faust_app.transport = _ReadCommittedTransport(faust_app.conf.broker_consumer, faust_app)
    source = faust_app.topic(settings.input, key_serializer="raw", value_serializer="raw")
    sink = faust_app.topic(settings.output, key_serializer="raw", value_serializer="raw")

    @faust_app.agent(source)
    async def copy(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await sink.send(key=event.key, value=event.value)

    # Faust's worker installs its own SIGTERM handler: it commits what is done, stops.
    faust.Worker(faust_app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
