"""Shared test configuration. The real-infrastructure fixtures come from the harness package:

nats_server, nats_server_factory, postgres_server, postgres, echo_upstream, echo_upstream_factory.
"""

pytest_plugins = ("harness.fixtures",)
