"""rate-limiting's ``local`` policy counters (``local_counters``): counting per identifier and per
plugin instance, refusals that count nothing, windows that move on one period at a time, the sweep
of ended counters, and counts that survive a config reload keeping the plugin's id and periods."""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterator
from typing import Any

import pytest

from zonegate.core import declarative
from zonegate.data_plane.runtime import Runtime, build_runtime
from zonegate.plugins.api import Exit, PluginContext
from zonegate.plugins.rate_limiting import local_counters
from zonegate.plugins.rate_limiting.handler import RateLimiting
from zonegate.plugins.rate_limiting.windows import window_end, window_start
from zonegate.plugins.registry import loaded_handlers

# One second window and one minute window: starts (second, minute), ends (second, minute).
SECOND_AND_MINUTE = ("second", "minute")
STARTS = (100, 60)
ENDS = (101, 120)
NOW = 100.5
ROOMY = (1_000_000, 1_000_000)  # limits never reached


@pytest.fixture(autouse=True)
def fresh_counts() -> Iterator[None]:
    local_counters.reset()
    yield
    local_counters.reset()


def take_many(table: dict[str, Any], identifier: str, times: int) -> list[list[int]]:
    return [local_counters.take(table, identifier, STARTS, ROOMY, ENDS, NOW)[0] for _ in range(times)]


# -- tables ------------------------------------------------------------------------------------------


def test_one_table_per_plugin_id_and_periods() -> None:
    table = local_counters.table("plugin-a", SECOND_AND_MINUTE)
    assert local_counters.table("plugin-a", SECOND_AND_MINUTE) is table
    assert local_counters.table("plugin-a", ("second", "minute")) is table  # an equal key
    others = [
        local_counters.table("plugin-b", SECOND_AND_MINUTE),
        local_counters.table("plugin-a", ("minute",)),
        local_counters.table("plugin-a", ("second", "minute", "hour")),
    ]
    assert all(other is not table for other in others)
    assert len({id(other) for other in others}) == 3


def test_counts_per_identifier_and_per_table() -> None:
    table = local_counters.table("per-identifier", SECOND_AND_MINUTE)
    other_table = local_counters.table("per-identifier-other", SECOND_AND_MINUTE)

    # ``used`` is the counts before the request: 0, 1, 2... for every period.
    assert take_many(table, "alice", 3) == [[0, 0], [1, 1], [2, 2]]
    # Another identifier starts at 0, and alice's counts are unchanged by bob's requests.
    assert take_many(table, "bob", 2) == [[0, 0], [1, 1]]
    assert take_many(table, "alice", 1) == [[3, 3]]
    # The same identifier under another plugin instance counts on its own.
    assert take_many(other_table, "alice", 1) == [[0, 0]]
    assert take_many(table, "alice", 1) == [[4, 4]]


def test_used_is_a_copy_of_the_counts_before_the_request() -> None:
    table = local_counters.table("copy", SECOND_AND_MINUTE)
    first, stop = local_counters.take(table, "alice", STARTS, ROOMY, ENDS, NOW)
    assert (first, stop) == ([0, 0], None)
    second, _ = local_counters.take(table, "alice", STARTS, ROOMY, ENDS, NOW)
    assert first == [0, 0]  # not the live counts, which are now 2
    assert second == [1, 1]


# -- limits ------------------------------------------------------------------------------------------


def test_a_reached_limit_stops_at_the_first_full_period_and_counts_nothing() -> None:
    table = local_counters.table("limits", SECOND_AND_MINUTE)
    limits = (5, 2)  # the minute limit is reached first
    assert local_counters.take(table, "alice", STARTS, limits, ENDS, NOW) == ([0, 0], None)
    assert local_counters.take(table, "alice", STARTS, limits, ENDS, NOW) == ([1, 1], None)
    # Full: stop names the minute period; neither count moves, however often the client retries.
    for _ in range(3):
        assert local_counters.take(table, "alice", STARTS, limits, ENDS, NOW) == ([2, 2], 1)
    # A looser limit (a reload raising it) sees the counts of the accepted requests only.
    assert local_counters.take(table, "alice", STARTS, (5, 3), ENDS, NOW) == ([2, 2], None)


def test_stop_is_the_first_full_period_when_several_are_full() -> None:
    table = local_counters.table("several-full", SECOND_AND_MINUTE)
    limits = (2, 2)
    take_many(table, "alice", 2)
    assert local_counters.take(table, "alice", STARTS, limits, ENDS, NOW) == ([2, 2], 0)
    # Float limits (as configs carry them) compare the same way.
    assert local_counters.take(table, "alice", STARTS, (3.0, 2.0), ENDS, NOW) == ([2, 2], 1)
    assert local_counters.take(table, "alice", STARTS, (3.0, 3.0), ENDS, NOW) == ([2, 2], None)


def test_a_refused_request_counts_in_no_period() -> None:
    table = local_counters.table("refused", SECOND_AND_MINUTE)
    limits = (1, 10)
    assert local_counters.take(table, "alice", STARTS, limits, ENDS, NOW)[1] is None
    # The second limit refuses these; the minute count must not grow either.
    for _ in range(4):
        assert local_counters.take(table, "alice", STARTS, limits, ENDS, NOW) == ([1, 1], 0)
    # The next second: the second count restarts and the minute one is still the one accepted request.
    assert local_counters.take(table, "alice", (101, 60), limits, (102, 120), 101.5) == ([0, 1], None)


# -- windows -----------------------------------------------------------------------------------------


def test_only_the_period_whose_window_moved_restarts() -> None:
    table = local_counters.table("windows", SECOND_AND_MINUTE)
    take_many(table, "alice", 3)
    # The second window moves on; the minute window is the same one.
    assert local_counters.take(table, "alice", (101, 60), ROOMY, (102, 120), 101.5) == ([0, 3], None)
    assert local_counters.take(table, "alice", (101, 60), ROOMY, (102, 120), 101.5) == ([1, 4], None)
    # Both move on (a new minute).
    assert local_counters.take(table, "alice", (120, 120), ROOMY, (121, 180), 120.0) == ([0, 0], None)


def test_the_minute_window_moving_alone_restarts_only_the_minute_count() -> None:
    table = local_counters.table("windows-hour", ("minute", "hour"))
    starts, ends = (60, 0), (120, 3600)
    for _ in range(2):
        local_counters.take(table, "alice", starts, ROOMY, ends, 61.0)
    assert local_counters.take(table, "alice", (120, 0), ROOMY, (180, 3600), 121.0) == ([0, 2], None)


def test_equal_but_not_identical_starts_are_the_same_windows() -> None:
    table = local_counters.table("equal-starts", SECOND_AND_MINUTE)
    first = tuple([100, 60])
    second = tuple([100, 60])
    assert first == second and first is not second  # what this test is about
    assert local_counters.take(table, "alice", first, ROOMY, ENDS, NOW) == ([0, 0], None)
    assert local_counters.take(table, "alice", second, ROOMY, ENDS, NOW) == ([1, 1], None)
    assert local_counters.take(table, "alice", first, ROOMY, ENDS, NOW) == ([2, 2], None)
    # A list with the same values, too.
    assert local_counters.take(table, "alice", [100, 60], ROOMY, ENDS, NOW) == ([3, 3], None)


# -- the sweep ---------------------------------------------------------------------------------------


def test_sweep_drops_identifiers_whose_windows_all_ended() -> None:
    table = local_counters.table("sweep", SECOND_AND_MINUTE)
    other = local_counters.table("sweep-other", ("minute",))
    local_counters.take(table, "ended", (100, 60), ROOMY, (101, 120), 100.5)
    local_counters.take(table, "ends-now", (159, 120), ROOMY, (160, 180), 159.5)
    local_counters.take(table, "minute-left", (149, 120), ROOMY, (150, 181), 149.5)  # second ended
    local_counters.take(other, "ended-elsewhere", (60,), ROOMY, (120,), 61.0)
    local_counters.take(other, "live-elsewhere", (180,), ROOMY, (240,), 181.0)

    local_counters._sweep(180.0)

    assert set(table) == {"minute-left"}  # end <= now is gone; a later end stays
    assert set(other) == {"live-elsewhere"}
    # The tables are the ones plugin instances hold, and the kept counts are intact.
    assert local_counters.table("sweep", SECOND_AND_MINUTE) is table
    assert local_counters.table("sweep-other", ("minute",)) is other
    assert local_counters.take(table, "minute-left", (150, 120), ROOMY, (151, 181), 150.0) == ([0, 1], None)
    # A swept identifier starts afresh, in the same table.
    assert local_counters.take(table, "ended", (180, 180), ROOMY, (181, 240), 180.0) == ([0, 0], None)


def test_a_moved_window_moves_the_counters_end() -> None:
    table = local_counters.table("sweep-end", SECOND_AND_MINUTE)
    local_counters.take(table, "alice", (100, 60), ROOMY, (101, 120), 100.5)
    local_counters.take(table, "alice", (160, 120), ROOMY, (161, 180), 160.5)  # a new minute
    local_counters._sweep(150.0)  # past the first windows' end, not the new ones'
    assert "alice" in table
    assert local_counters.take(table, "alice", (160, 120), ROOMY, (161, 180), 160.5) == ([1, 1], None)
    local_counters._sweep(180.0)
    assert "alice" not in table


def test_takes_run_the_sweep_every_sweep_every_accepted_requests() -> None:
    table = local_counters.table("sweep-takes", SECOND_AND_MINUTE)
    later = 1_000.0  # every window of "ended" is over; "live"'s are not
    live_starts, live_ends = (1_000, 960), (1_001, 1_020)
    local_counters.take(table, "ended", STARTS, ROOMY, ENDS, NOW)
    every = local_counters._SWEEP_EVERY
    # The count of accepted takes is module state: the next sweep comes after ``before_sweep`` more.
    before_sweep = every - local_counters._writes % every
    for _ in range(before_sweep - 1):
        local_counters.take(table, "live", live_starts, ROOMY, live_ends, later)
    assert "ended" in table  # no sweep yet
    # A refused request is no write and runs no sweep.
    assert local_counters.take(table, "live", live_starts, (1, 1), live_ends, later)[1] == 0
    assert "ended" in table
    local_counters.take(table, "live", live_starts, ROOMY, live_ends, later)
    assert set(table) == {"live"}
    assert local_counters.table("sweep-takes", SECOND_AND_MINUTE) is table


# -- reset -------------------------------------------------------------------------------------------


def test_reset_empties_counts_and_handed_out_tables_keep_working() -> None:
    table = local_counters.table("reset", SECOND_AND_MINUTE)
    take_many(table, "alice", 3)
    local_counters.reset()
    assert table == {}
    assert local_counters.table("reset", SECOND_AND_MINUTE) is table
    assert take_many(table, "alice", 2) == [[0, 0], [1, 1]]
    # What is counted in the held table is what table() hands out again.
    assert set(local_counters.table("reset", SECOND_AND_MINUTE)) == {"alice"}


# -- through the plugin: a config reload -------------------------------------------------------------

PLUGIN_ID = "4d1c2a5e-7a0b-4f3e-9c61-2b8f0e6d9a17"
FIXED_NOW = 1_700_000_110.0  # 10 s into a minute: the minute window cannot roll over


class FakeRequest:
    """What rate-limiting reads of a request (``limit_by: ip``)."""

    def __init__(self, client_ip: str) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.method = "GET"
        self.path = "/limited"
        self.scheme = "http"
        self.client_ip = client_ip
        self.request_id = "test-request"
        self.query_bytes = b""


def runtime(config: dict[str, Any], previous: Runtime | None = None, plugin_id: str = PLUGIN_ID) -> Runtime:
    loaded = declarative.load(
        {
            "_format_version": "3.0",
            "plugins": [{"id": plugin_id, "name": "rate-limiting", "config": {"limit_by": "ip", **config}}],
        }
    )
    return build_runtime(loaded, previous, plugin_handlers=loaded_handlers(["bundled"]))


def plugin_of(built: Runtime) -> RateLimiting:
    (plugin,) = built.plugins.chain(None, None, None, "http")
    assert isinstance(plugin, RateLimiting)
    return plugin


def hit(plugin: RateLimiting, client_ip: str = "192.0.2.10") -> tuple[int, dict[bytes, bytes]]:
    ctx = PluginContext(FakeRequest(client_ip), {}, None)  # type: ignore[arg-type]
    result = plugin.access(ctx)
    assert result is None or isinstance(result, Exit)
    return (200 if result is None else result.status), dict(ctx.response_headers)


@pytest.fixture
def fixed_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: FIXED_NOW)


@pytest.mark.usefixtures("fixed_time")
def test_a_reload_keeping_id_and_periods_continues_the_count() -> None:
    first = runtime({"minute": 3})
    old = plugin_of(first)
    assert [hit(old)[0] for _ in range(2)] == [200, 200]

    reloaded = runtime({"minute": 3}, first)
    new = plugin_of(reloaded)
    assert new is not old  # a new instance, built from the same entity id
    status, headers = hit(new)
    assert status == 200
    assert headers[b"X-RateLimit-Remaining-Minute"] == b"0"  # the third request of three
    status, headers = hit(new)
    assert status == 429
    assert headers[b"RateLimit-Remaining"] == b"0"
    # Another client is counted on its own.
    assert hit(new, "192.0.2.11")[1][b"X-RateLimit-Remaining-Minute"] == b"2"


@pytest.mark.usefixtures("fixed_time")
def test_a_reload_raising_the_limit_keeps_the_count() -> None:
    first = runtime({"minute": 2})
    assert [hit(plugin_of(first))[0] for _ in range(3)] == [200, 200, 429]
    raised = plugin_of(runtime({"minute": 5}, first))
    # Two accepted requests were counted (the refused one was not): 5 - 2 - 1 remain.
    assert hit(raised)[1][b"X-RateLimit-Remaining-Minute"] == b"2"


@pytest.mark.usefixtures("fixed_time")
def test_a_reload_changing_the_periods_or_the_id_starts_afresh() -> None:
    first = runtime({"minute": 3})
    assert [hit(plugin_of(first))[0] for _ in range(3)] == [200, 200, 200]
    assert hit(plugin_of(first))[0] == 429

    more_periods = plugin_of(runtime({"minute": 3, "hour": 10}, first))
    status, headers = hit(more_periods)
    assert status == 200
    assert headers[b"X-RateLimit-Remaining-Minute"] == b"2"
    assert headers[b"X-RateLimit-Remaining-Hour"] == b"9"

    other_id = plugin_of(runtime({"minute": 3}, first, plugin_id="0e6f3b7c-2d4a-4c9e-8b15-7f3a9d2c1e60"))
    status, headers = hit(other_id)
    assert status == 200
    assert headers[b"X-RateLimit-Remaining-Minute"] == b"2"


# -- months and years --------------------------------------------------------------------------------


def test_a_month_count_lasts_its_whole_calendar_month_through_sweeps() -> None:
    # 2024-01-31 12:00 UTC: January started 30.5 days ago, so Kong's 30-day month length would
    # put the window's end in the past and the sweep would forget the count within the month.
    now = float(calendar.timegm((2024, 1, 31, 12, 0, 0, 0, 0, 0)))
    start = window_start("month", now)
    end = window_end("month", start)
    assert end == calendar.timegm((2024, 2, 1, 0, 0, 0, 0, 0, 0))
    table = local_counters.table("rl-month", ("month",))
    for _ in range(2):
        local_counters.take(table, "ann", (start,), (10,), (end,), now)
    local_counters._sweep(now + 1)
    assert local_counters.take(table, "ann", (start,), (10,), (end,), now + 2) == ([2], None)
    local_counters._sweep(end)
    assert "ann" not in table


@pytest.mark.parametrize(
    ("period", "moment", "expected"),
    [
        ("month", (2024, 12, 15, 8, 0, 0), (2025, 1, 1)),
        ("month", (2024, 2, 29, 23, 59, 59), (2024, 3, 1)),
        ("year", (2024, 12, 31, 12, 0, 0), (2025, 1, 1)),  # a leap year: 366 days
    ],
)
def test_window_end_is_the_next_calendar_window(
    period: str, moment: tuple[int, ...], expected: tuple[int, int, int]
) -> None:
    now = calendar.timegm((*moment, 0, 0, 0))
    assert window_end(period, window_start(period, now)) == calendar.timegm((*expected, 0, 0, 0, 0, 0, 0))
