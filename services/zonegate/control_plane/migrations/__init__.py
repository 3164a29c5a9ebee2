"""Versioned SQL migrations of the control plane's PostgreSQL schema (see ``migrations.py``)."""

from zonegate.control_plane.migrations.migrations import (
    MIGRATIONS_LOCK_KEY,
    SUBSYSTEM,
    Migration,
    MigrationError,
    SchemaState,
    UpResult,
    bootstrap,
    check_schema,
    finish,
    load_migrations,
    migration_lock,
    not_ready_message,
    pending_migrations,
    reset,
    schema_state,
    up,
)

__all__ = [
    "MIGRATIONS_LOCK_KEY",
    "SUBSYSTEM",
    "Migration",
    "MigrationError",
    "SchemaState",
    "UpResult",
    "bootstrap",
    "check_schema",
    "finish",
    "load_migrations",
    "migration_lock",
    "not_ready_message",
    "pending_migrations",
    "reset",
    "schema_state",
    "up",
]
