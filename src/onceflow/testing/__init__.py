"""Test helpers: run an onceflow broker in a test, in-process or as a real process."""

from onceflow.testing.broker_process import BrokerProcess

__all__ = ["BrokerProcess"]
