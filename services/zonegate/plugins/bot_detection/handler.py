"""bot-detection's handler (Kong's ``handler.lua``): allow wins, then deny, then the bot list.

Each User-Agent's verdict is memoized per plugin instance (Kong keeps an LRU of 10,000 per
config), so a busy client costs one dict lookup after its first request.
"""

from __future__ import annotations

import re
from typing import Final

from zonegate import __version__
from zonegate.core import pcre
from zonegate.plugins.api import AccessResult, Exit, Plugin, PluginContext, SharedIndexes
from zonegate.plugins.bot_detection.rules import BOT_RE

CACHE_SIZE: Final = 10_000
ONE_AGENT: Final = "Only one User-Agent header allowed"


def _compile(patterns: list[str] | None) -> tuple[re.Pattern[str], ...]:
    # PCRE classes (\w, \d, \b) are ASCII unless asked otherwise, as in Kong.
    return tuple(re.compile(pcre.to_python(p), re.ASCII) for p in patterns or ())


class BotDetection(Plugin):
    NAME = "bot-detection"
    PRIORITY = 2500
    VERSION = __version__

    def configure(self, shared: SharedIndexes) -> None:
        self.allow = _compile(self.config.get("allow"))
        self.deny = _compile(self.config.get("deny"))
        self.verdicts: dict[str, bool] = {}  # User-Agent -> refused

    def access(self, ctx: PluginContext) -> AccessResult:
        agents = ctx.header_values("User-Agent")
        if not agents:
            return None
        if len(agents) > 1:
            return Exit(400, ONE_AGENT)
        agent = agents[0]
        refused = self.verdicts.get(agent)
        if refused is None:
            refused = self._refused(agent.strip())
            if len(self.verdicts) >= CACHE_SIZE:
                self.verdicts.clear()
            self.verdicts[agent] = refused
        return Exit(403, "Forbidden") if refused else None

    def _refused(self, agent: str) -> bool:
        if any(rule.search(agent) for rule in self.allow):
            return False
        if any(rule.search(agent) for rule in self.deny):
            return True
        return BOT_RE.search(agent) is not None
