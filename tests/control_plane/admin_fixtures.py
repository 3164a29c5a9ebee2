"""The Admin API app on a real store, served by aiohttp's test server, with small request helpers.

Test modules bind the fixtures they use by name (``admin = admin_fixtures.admin``); the ``store``
fixture (a bootstrapped database emptied per test) comes from this directory's conftest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from zonegate.control_plane.admin_api import build_app
from zonegate.control_plane.store import Store
from zonegate.settings import Settings, load_settings

NODE_ID = "0b7c2a1e-5a8f-4c33-9d6e-2f1b3c4d5e6f"
MISSING_ID = "6a3c4e2b-1f0d-4c8e-9b7a-0000000000ff"


def make_settings(prefix: Path, **env: str) -> Settings:
    """Control-plane settings with ``ZONEGATE_<NAME>`` overrides given as ``name=value``."""
    environ = {
        "ZONEGATE_ROLE": "control_plane",
        "ZONEGATE_PG_DSN": "postgresql://zonegate@127.0.0.1:5432/zonegate",
        "ZONEGATE_PREFIX": str(prefix),
    }
    environ.update({f"ZONEGATE_{name.upper()}": value for name, value in env.items()})
    return load_settings(environ)


@dataclass
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]
    text: str


class Admin:
    """Requests to the Admin API; ``json=`` sends JSON, ``form=`` form-encoded pairs, ``data=`` raw."""

    def __init__(self, client: TestClient[Any, Any], store: Store, settings: Settings) -> None:
        self.client = client
        self.store = store
        self.settings = settings
        self.headers: dict[str, str] = {}

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        form: list[tuple[str, str]] | dict[str, str] | None = None,
        data: bytes | str | FormData | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        all_headers = {**self.headers, **(headers or {})}
        kwargs: dict[str, Any] = {"headers": all_headers}
        if json is None and form is None and data is None:
            # Like curl without -d: no body and no Content-Type (aiohttp would add one).
            kwargs["skip_auto_headers"] = ["Content-Type"]
        if json is not None:
            kwargs["json"] = json
        elif form is not None:
            pairs = list(form.items()) if isinstance(form, dict) else form
            kwargs["data"] = pairs
        elif data is not None:
            kwargs["data"] = data
        async with self.client.request(method, path, **kwargs) as response:
            text = await response.text()
            body: Any = None
            if text and response.content_type == "application/json":
                body = await response.json()
            return Reply(response.status, body, response.headers, text)

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("PUT", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("DELETE", path, **kwargs)

    async def created(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """POST that must answer 201; the entity."""
        reply = await self.post(path, **kwargs)
        assert reply.status == 201, (reply.status, reply.body)
        assert isinstance(reply.body, dict)
        return reply.body


async def serve(store: Store, settings: Settings) -> AsyncIterator[Admin]:
    app = build_app(store, settings, node_id=NODE_ID, hostname="test-host")
    async with TestClient(TestServer(app)) as client:
        yield Admin(client, store, settings)


@pytest.fixture
async def admin(store: Store, tmp_path: Path) -> AsyncIterator[Admin]:
    async for served in serve(store, make_settings(tmp_path)):
        yield served
