"""Kong's Admin API: endpoints, shapes and statuses over the PostgreSQL store or a DB-less node's config."""

from zonegate.control_plane.admin_api.app import build_app

__all__ = ["build_app"]
