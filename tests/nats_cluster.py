"""A real three-node NATS cluster (JetStream, MQTT 3.1.1) on free loopback ports, for the cluster tests.

The code lives in benchmarks/nats_cluster.py, which the broker load benchmark's --cluster mode shares.
"""

import pytest

from benchmarks.nats_cluster import NatsCluster, NatsNode, nats_binary

__all__ = ["NatsCluster", "NatsNode", "nats_binary", "needs_nats"]

needs_nats = pytest.mark.skipif(
    nats_binary() is None, reason="nats-server is not installed; `make test` installs it with apt (package nats-server)"
)
