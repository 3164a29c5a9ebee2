-- 001_clustering: the data planes a control plane has heard from (Kong's clustering_data_planes).
--
-- One row per data plane node id, written in batches from heartbeats and acks that arrive over
-- the bus (never once per message). `last_seen` drives Kong's `ttl` and the purge after
-- cluster_data_plane_purge_delay. `config_version` and `rejected_*` are ours: Kong only infers
-- what a data plane runs from its hash; our data planes say which version they applied or refused.

CREATE TABLE clustering_data_planes (
  id                uuid         PRIMARY KEY,
  hostname          text         NOT NULL,
  ip                text         NOT NULL,
  version           text         NOT NULL,
  labels            jsonb        NOT NULL DEFAULT '{}',
  plugins           jsonb        NOT NULL DEFAULT '{}',
  config_hash       text         NOT NULL,
  config_version    bigint       NOT NULL DEFAULT 0,
  sync_status       text         NOT NULL DEFAULT 'unknown',
  rejected_version  bigint,
  rejected_reason   text,
  last_error        text,
  config_group      text         NOT NULL DEFAULT 'default',
  cert_expiry       bigint,
  last_seen         timestamptz  NOT NULL,
  updated_at        timestamptz  NOT NULL
);

CREATE INDEX clustering_data_planes_last_seen_idx ON clustering_data_planes (last_seen);
