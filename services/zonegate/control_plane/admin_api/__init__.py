"""The control plane's Admin API: Kong's endpoints, shapes and statuses over the PostgreSQL store."""

from zonegate.control_plane.admin_api.app import build_app

__all__ = ["build_app"]
