"""The control plane's config as a declarative file sees it, and the hash of that.

Declarative files carry no timestamps (``core.declarative`` drops them on both sides), so the
config a file describes and the config the store holds differ by ``created_at``/``updated_at``
alone. ``export_hash`` hashes the store's config without them: it equals ``zonegate config hash``
of the file ``zonegate config db-export`` writes, and is what ``POST /config?check_hash=1``
compares an uploaded file against.
"""

from __future__ import annotations

from zonegate.core.canonical import config_hash
from zonegate.core.config import Config
from zonegate.core.schema import TIMESTAMP_FIELDS


def without_timestamps(config: Config) -> Config:
    return Config.build(
        {
            kind: [{k: v for k, v in entity.items() if k not in TIMESTAMP_FIELDS} for entity in entities]
            for kind, entities in config.entities.items()
        }
    )


def export_hash(config: Config) -> str:
    return config_hash(without_timestamps(config)).config_hash
