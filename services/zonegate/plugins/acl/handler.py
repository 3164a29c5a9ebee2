"""acl's handler (Kong's ``kong/plugins/acl/handler.lua``, 3.8+ behaviour).

The groups checked are the consumer's (its ``acls``), or the groups an auth plugin
authenticated (``ctx.authenticated_groups``) when there is no consumer, when the consumer is
the anonymous one, or always with ``always_use_authenticated_groups`` (falling back to the
consumer's when there are none). No consumer and no authenticated groups: 401
``Unauthorized``, or 403 when a credential was presented. A refusal is 403 ``You cannot
consume this service``. An allowed request carries its groups upstream in
``X-Consumer-Groups`` (``X-Authenticated-Groups`` for authenticated groups) unless
``hide_groups_header``, which also drops a client's own copies. Decisions per consumer are
memoized for the life of the config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from zonegate import __version__
from zonegate.plugins.api import AccessResult, Exit, Plugin, PluginContext, SharedIndexes

CONSUMER_GROUPS: Final = "X-Consumer-Groups"
AUTHENTICATED_GROUPS: Final = "X-Authenticated-Groups"
FORBIDDEN: Final = Exit(403, "You cannot consume this service")
UNAUTHORIZED: Final = Exit(401, "Unauthorized")


class Acl(Plugin):
    NAME = "acl"
    PRIORITY = 950
    VERSION = __version__

    def configure(self, shared: SharedIndexes) -> None:
        config = self.config
        self.deny_mode = bool(config.get("deny"))
        self.groups = frozenset((config["deny"] if self.deny_mode else config.get("allow")) or ())
        self.hide_groups_header: bool = config["hide_groups_header"]
        self.always_use_authenticated_groups: bool = config["always_use_authenticated_groups"]
        self.acls = shared.grouped("acls", "consumer")
        # consumer id -> the groups header value, or None when refused
        self._decisions: dict[str, str | None] = {}

    def decide(self, groups: Sequence[str]) -> str | None:
        """The header value for an allowed request, None for a refused one."""
        in_group = not self.groups.isdisjoint(groups)
        if in_group == self.deny_mode:
            return None
        return "" if self.hide_groups_header else ", ".join(groups)

    def access(self, ctx: PluginContext) -> AccessResult:
        consumer, credential = ctx.consumer, ctx.credential
        authenticated = ctx.authenticated_groups
        if consumer is None:
            if authenticated is None:
                return FORBIDDEN if credential is not None else UNAUTHORIZED
            return self._pass(ctx, self.decide(authenticated), AUTHENTICATED_GROUPS)
        if authenticated is not None and (credential is None or self.always_use_authenticated_groups):
            return self._pass(ctx, self.decide(authenticated), AUTHENTICATED_GROUPS)
        consumer_id: str = consumer["id"]
        if consumer_id in self._decisions:
            return self._pass(ctx, self._decisions[consumer_id], CONSUMER_GROUPS)
        # A consumer without groups has an empty list (Kong's groups loader): allow refuses it.
        decision = self.decide([entry["group"] for entry in self.acls.get(consumer_id, ())])
        self._decisions[consumer_id] = decision
        return self._pass(ctx, decision, CONSUMER_GROUPS)

    def _pass(self, ctx: PluginContext, header_value: str | None, header: str) -> Exit | None:
        if header_value is None:
            return FORBIDDEN
        if self.hide_groups_header:
            ctx.clear_header(CONSUMER_GROUPS)
            ctx.clear_header(AUTHENTICATED_GROUPS)
        else:
            ctx.set_header(header, header_value)
        return None
