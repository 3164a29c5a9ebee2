"""Fixtures of the bus tests: PKI material and the shared cluster certificate, made once per module."""

from __future__ import annotations

import pytest

from bus.support import Pair, Pki, make_pki, write
from zonegate.bus import certificates


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def cluster_pair(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    """The shared-mode cluster certificate and key (what ``zonegate hybrid gen-cert`` writes)."""
    return write(certificates.generate_cluster_certificate(), tmp_path_factory.mktemp("shared"), "cluster")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # nats-py leaves the StreamWriter of a connection the server refused (bad certificate)
    # unclosed; its __del__ warning surfaces in whichever test runs later. The refusal itself is
    # what these tests assert, so that one leak is not an error here.
    leak = pytest.mark.filterwarnings(
        "ignore:Exception ignored in.*StreamWriter.__del__:pytest.PytestUnraisableExceptionWarning"
    )
    for item in items:
        if "tests/bus/" in str(item.fspath):
            item.add_marker(leak)
