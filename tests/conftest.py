"""Shared test configuration. The real-infrastructure fixtures come from the harness package:

nats_server, nats_server_factory, postgres_server, postgres, echo_upstream, echo_upstream_factory,
zonegate_node_factory (a real ``zonegate start`` process on free ports), and cluster (a hybrid
cluster: TLS nats-server, bootstrapped database, CPs and DPs as real processes).
"""

pytest_plugins = ("harness.fixtures", "harness.zonegate_node", "harness.hybrid")


def pytest_configure(config: object) -> None:
    # A compiled module is imported before its source: after an edit without ``make compile`` the
    # suite would test the old code. Refuse instead.
    import pytest

    from zonegate.compiled import hot_path_status

    stale = [name for name, state in hot_path_status().items() if state == "stale"]
    if stale:
        raise pytest.UsageError(f"stale compiled modules, run `make compile` first: {', '.join(stale)}")
