"""The operator's clients of the broker: what the fleet tools (fleet/) connect through.

MqttSession is one short connection for a command that runs for seconds and must fail fast;
Subscriber stays for months (the Prometheus exporter) and rides out broker restarts. Both hold an
agent/transport/client.py MqttConnection, like the agent's publisher, so credentials, TLS, the first
attempt's errors and a refused subscription's wording are the same on every side.
"""

from agent.transport.operator.session import MqttSession, Received
from agent.transport.operator.subscriber import Subscriber

__all__ = ["MqttSession", "Received", "Subscriber"]
