"""Test helpers: an onceflow broker in-process or as a real process, and Apache Kafka
clusters of real JVMs."""

from onceflow.testing.broker_process import BrokerProcess
from onceflow.testing.kafka import KafkaCluster, KafkaNode, KafkaNotAvailable

__all__ = ["BrokerProcess", "KafkaCluster", "KafkaNode", "KafkaNotAvailable"]
