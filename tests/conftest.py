"""Shared test configuration. The real-infrastructure fixtures come from the harness package:

nats_server, nats_server_factory, postgres_server, postgres, echo_upstream, echo_upstream_factory,
and zonegate_node_factory (a real ``zonegate start`` process on free ports).
"""

pytest_plugins = ("harness.fixtures", "harness.zonegate_node")
