"""bot-detection through the real proxy: Kong's built-in bot list, allow and deny regexes, one
User-Agent only; and its schema."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from data_plane.test_proxy_e2e import request, service
from harness.echo_upstream import EchoUpstream
from zonegate.core import declarative
from zonegate.core.errors import DeclarativeConfigError
from zonegate.plugins.bot_detection.rules import BOT_RE

BROWSER = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_5) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/50.0.2661.102 Safari/537.36"
)


def test_bot_detection(zonegate_node_factory: Any, echo_upstream: EchoUpstream) -> None:
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                {
                    **service("svc", echo_upstream),
                    "routes": [
                        {"name": "plain", "paths": ["/plain"], "plugins": [{"name": "bot-detection"}]},
                        {
                            "name": "lists",
                            "paths": ["/lists"],
                            "plugins": [
                                {
                                    "name": "bot-detection",
                                    "config": {
                                        "allow": ["facebookexternalhit"],
                                        "deny": ["^Hello", "curl/\\d+"],
                                    },
                                }
                            ],
                        },
                    ],
                }
            ],
        }
    )

    def status(path: str, agent: str | None) -> int:
        return request(node, "GET", path, headers={"User-Agent": agent} if agent is not None else {})[0]

    assert status("/plain", None) == 200
    assert status("/plain", BROWSER) == 200
    assert status("/plain", "HelloWorld") == 200
    assert status("/plain", "curl/8.5.0") == 200
    for bot in (
        "Googlebot/2.1 (+http://www.google.com/bot.html)",
        "facebookexternalhit/1.1",
        "Twitterbot/1.0",
    ):
        assert status("/plain", bot) == 403
    code, _, body = request(node, "GET", "/plain", headers={"User-Agent": "  bingbot/2.0  "})
    assert code == 403 and json.loads(body)["message"] == "Forbidden"
    assert "request_id" in json.loads(body)
    # Twice: the verdict is remembered, and stays the same.
    assert status("/plain", "Python-urllib/3.11") == 403
    assert status("/plain", "Python-urllib/3.11") == 403

    assert status("/lists", "facebookexternalhit/1.1") == 200  # allow wins over the bot list
    assert status("/lists", "HelloWorld") == 403  # deny
    assert status("/lists", "Say HelloWorld") == 200  # patterns are searched, anchors kept
    assert status("/lists", "curl/8.5.0") == 403
    assert status("/lists", "Googlebot/2.1") == 403  # the bot list still applies
    assert status("/lists", BROWSER) == 200

    conn = http.client.HTTPConnection("127.0.0.1", node.proxy_port, timeout=15)
    try:
        conn.putrequest("GET", "/plain", skip_accept_encoding=True)
        conn.putheader("User-Agent", BROWSER)
        conn.putheader("User-Agent", "other")
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 400
        assert json.loads(response.read())["message"] == "Only one User-Agent header allowed"
    finally:
        conn.close()


def test_builtin_rules() -> None:
    for bot in (
        "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
        "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
        "Apache-HttpClient/4.5.13 (Java/11)",
        "Scrapy/2.11 (+https://scrapy.org)",
        "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    ):
        assert BOT_RE.search(bot), bot
    for person in (
        BROWSER,
        "curl/8.5.0",
        "python-requests/2.31",
        "Mozilla/5.0 (Linux; Android 12; CUBOT X30)",
    ):
        assert not BOT_RE.search(person), person


def test_schema_defaults_and_refusals() -> None:
    loaded = declarative.load({"_format_version": "3.0", "plugins": [{"name": "bot-detection"}]})
    assert loaded.of("plugins")[0]["config"] == {"allow": [], "deny": []}
    with pytest.raises(DeclarativeConfigError) as info:
        declarative.load(
            {
                "_format_version": "3.0",
                "plugins": [
                    {"name": "bot-detection", "config": {"allow": ["ok", "(https?:\\/\\/.*"], "deny": [""]}}
                ],
            }
        )
    assert info.value.fields["plugins"][0] == {
        "config": {
            "allow": [None, "not a valid regex: (https?:\\/\\/.*"],
            "deny": ["length must be at least 1"],
        }
    }
    with pytest.raises(DeclarativeConfigError) as info:
        declarative.load(
            {
                "_format_version": "3.0",
                "consumers": [{"username": "c", "plugins": [{"name": "bot-detection"}]}],
            }
        )
    assert "consumers[0].plugins[0].consumer: value must be null" in info.value.lines()
