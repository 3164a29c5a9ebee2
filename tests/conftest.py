"""Shared test configuration. The real-infrastructure fixtures come from the harness package:

nats_server, nats_server_factory, postgres_server, postgres, echo_upstream, echo_upstream_factory,
zonegate_node_factory (a real ``zonegate start`` process on free ports), and cluster (a hybrid
cluster: TLS nats-server, bootstrapped database, CPs and DPs as real processes).
"""

pytest_plugins = ("harness.fixtures", "harness.zonegate_node", "harness.hybrid")
