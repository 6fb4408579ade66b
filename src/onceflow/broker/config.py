"""Settings of one embedded broker."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path

from onceflow.broker.security.listeners import Listener, SecurityProtocol
from onceflow.broker.security.sasl import MECHANISMS
from onceflow.broker.security.tls import TlsConfig

DEFAULT_SEGMENT_BYTES = 128 * 1024 * 1024


class FlushPolicy(enum.StrEnum):
    """When appended data is forced to disk."""

    #: acks=1/all are answered only after fsync; group commit batches the fsyncs.
    ALWAYS = "always"
    #: leave flushing to the OS (Kafka's default): fast, not power-loss safe.
    NEVER = "never"


@dataclasses.dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Everything ``onceflow broker`` can be told; the defaults are the CLI's."""

    data_dir: Path = Path("onceflow-data")
    host: str = "127.0.0.1"
    #: The host clients are told to connect to (Metadata, FindCoordinator,
    #: DescribeCluster); None means ``host``, or loopback when ``host`` is a wildcard.
    advertised_host: str | None = None
    #: 0 picks a free ephemeral port; ``Broker.port`` tells which.
    port: int = 9092
    flush: FlushPolicy = FlushPolicy.ALWAYS
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    #: Create an unknown topic when a Metadata request asks for it (as Kafka's
    #: auto.create.topics.enable; Produce never creates topics).
    auto_create_topics: bool = True
    default_partitions: int = 1
    node_id: int = 0
    #: Largest request frame accepted, like Kafka's socket.request.max.bytes.
    max_request_bytes: int = 100 * 1024 * 1024
    #: Open connections allowed in total and per client address (Kafka's
    #: max.connections and max.connections.per.ip); more are closed at once.
    max_connections: int = 2**31 - 1
    max_connections_per_ip: int = 2**31 - 1
    #: Requests, and request bytes, a connection may have unanswered before the broker
    #: stops reading it (a client that never reads its answers stalls only itself).
    max_inflight_requests: int = 100
    max_inflight_bytes: int = 100 * 1024 * 1024
    #: Request bytes being read or awaiting their answer, broker-wide (Kafka's
    #: queued.max.request.bytes): past it, connections wait before reading the body of
    #: their next request, so many large requests at once cannot exhaust memory.
    queued_max_request_bytes: int = 256 * 1024 * 1024
    #: A connection whose request has not arrived whole this long after its first byte
    #: is closed (a slow loris); idle connections between requests are left alone.
    request_read_timeout_ms: int = 30_000
    #: Committed offsets of a group that has been empty this long are deleted
    #: (Kafka's offsets.retention.minutes, default 7 days; fractions allowed).
    offsets_retention_minutes: float = 7 * 24 * 60
    #: How often expired offsets (and offsets of deleted topics) are looked for.
    offsets_retention_check_interval_ms: int = 600_000
    #: Session timeouts a JoinGroup may ask for (Kafka's group.min/max.session.timeout.ms).
    group_min_session_timeout_ms: int = 6_000
    group_max_session_timeout_ms: int = 1_800_000
    #: How long the first join of an empty group waits for more members
    #: (Kafka's group.initial.rebalance.delay.ms; 0 answers the first member at once).
    group_initial_rebalance_delay_ms: int = 0
    #: How often retention (and segment.ms on quiet logs) is applied, like Kafka's
    #: log.retention.check.interval.ms (default 5 minutes).
    log_retention_check_interval_ms: int = 300_000
    #: How often compacted topics are looked at for cleaning (Kafka's log.cleaner.backoff.ms).
    log_cleaner_backoff_ms: int = 15_000
    #: Serve Prometheus metrics over HTTP on ``host`` at this port; None (the default)
    #: serves none, 0 picks a free port (``Broker.metrics.port`` tells which).
    metrics_port: int | None = None
    #: Where to accept connections, and how (``NAME://HOST:PORT``, see
    #: ``security.listeners``); empty means one PLAINTEXT listener on host:port.
    listeners: tuple[Listener, ...] = ()
    #: Certificate and key of the SSL and SASL_SSL listeners.
    tls: TlsConfig | None = None
    #: SASL mechanisms offered on SASL listeners.
    sasl_mechanisms: tuple[str, ...] = MECHANISMS
    #: A connection must finish its TLS handshake and SASL authentication within this
    #: long, or it is closed (so a client that stalls cannot hold a connection).
    authentication_timeout_ms: int = 10_000
    #: Check every request against the ACLs (Kafka's authorizer.class.name); when off,
    #: every client may do everything and the ACL APIs answer SECURITY_DISABLED.
    acls_enabled: bool = False
    #: Principals (``User:NAME``) allowed everything whatever the ACLs say.
    super_users: tuple[str, ...] = ()
    #: Allow an operation on a resource no ACL selects (Kafka's
    #: allow.everyone.if.no.acl.found); otherwise it is denied.
    allow_everyone_if_no_acl_found: bool = False

    def effective_listeners(self) -> tuple[Listener, ...]:
        """The listeners to open: ``listeners``, or PLAINTEXT on host:port."""
        if self.listeners:
            return self.listeners
        return (
            Listener(
                SecurityProtocol.PLAINTEXT.value,
                SecurityProtocol.PLAINTEXT,
                self.host,
                self.port,
                self.advertised_host,
            ),
        )

    @property
    def client_host(self) -> str:
        """The host the first listener advertises to clients."""
        return self.effective_listeners()[0].client_host()
