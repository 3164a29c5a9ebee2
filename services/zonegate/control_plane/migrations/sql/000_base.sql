-- 000_base: the entity tables, the revision log and the config version.
--
-- One table per entity kind. Real columns for what PostgreSQL must enforce or index (id, unique
-- names and keys, cache keys, foreign keys, tags, timestamps); every other field of the entity in
-- the `entity` jsonb column (see zonegate/control_plane/tables.py for why). Constraint names are
-- part of the contract: the store turns violations of `<table>_<field>_key`, `<table>_cache_key`,
-- `<table>_<field>_fkey` and `<table>_pkey` into Kong's error bodies.
--
-- Foreign keys follow Kong: a route keeps its service (RESTRICT), a certificate in use by a service
-- or upstream cannot go (RESTRICT); plugins go with their route, service or consumer, credentials
-- with their consumer, targets with their upstream, SNIs with their certificate (CASCADE).

CREATE TABLE certificates (
  id          uuid           PRIMARY KEY,
  created_at  timestamptz(0) NOT NULL,
  updated_at  timestamptz(0) NOT NULL,
  tags        text[],
  entity      jsonb          NOT NULL
);

CREATE TABLE snis (
  id              uuid           PRIMARY KEY,
  created_at      timestamptz(0) NOT NULL,
  updated_at      timestamptz(0) NOT NULL,
  name            text           NOT NULL CONSTRAINT snis_name_key UNIQUE,
  certificate_id  uuid           NOT NULL CONSTRAINT snis_certificate_fkey
                                 REFERENCES certificates (id) ON DELETE CASCADE,
  tags            text[],
  entity          jsonb          NOT NULL
);
CREATE INDEX snis_certificate_id_idx ON snis (certificate_id, id);

CREATE TABLE ca_certificates (
  id           uuid           PRIMARY KEY,
  created_at   timestamptz(0) NOT NULL,
  updated_at   timestamptz(0) NOT NULL,
  cert_digest  text           CONSTRAINT ca_certificates_cert_digest_key UNIQUE,
  tags         text[],
  entity       jsonb          NOT NULL
);

CREATE TABLE services (
  id                     uuid           PRIMARY KEY,
  created_at             timestamptz(0) NOT NULL,
  updated_at             timestamptz(0) NOT NULL,
  name                   text           CONSTRAINT services_name_key UNIQUE,
  client_certificate_id  uuid           CONSTRAINT services_client_certificate_fkey
                                        REFERENCES certificates (id) ON DELETE RESTRICT,
  tags                   text[],
  entity                 jsonb          NOT NULL
);
CREATE INDEX services_client_certificate_id_idx ON services (client_certificate_id, id);

CREATE TABLE routes (
  id          uuid           PRIMARY KEY,
  created_at  timestamptz(0) NOT NULL,
  updated_at  timestamptz(0) NOT NULL,
  name        text           CONSTRAINT routes_name_key UNIQUE,
  service_id  uuid           CONSTRAINT routes_service_fkey
                             REFERENCES services (id) ON DELETE RESTRICT,
  tags        text[],
  entity      jsonb          NOT NULL
);
CREATE INDEX routes_service_id_idx ON routes (service_id, id);

CREATE TABLE consumers (
  id          uuid           PRIMARY KEY,
  created_at  timestamptz(0) NOT NULL,
  updated_at  timestamptz(0) NOT NULL,
  username    text           CONSTRAINT consumers_username_key UNIQUE,
  custom_id   text           CONSTRAINT consumers_custom_id_key UNIQUE,
  tags        text[],
  entity      jsonb          NOT NULL
);

CREATE TABLE upstreams (
  id                     uuid           PRIMARY KEY,
  created_at             timestamptz(0) NOT NULL,
  updated_at             timestamptz(0) NOT NULL,
  name                   text           NOT NULL CONSTRAINT upstreams_name_key UNIQUE,
  client_certificate_id  uuid           CONSTRAINT upstreams_client_certificate_fkey
                                        REFERENCES certificates (id) ON DELETE RESTRICT,
  tags                   text[],
  entity                 jsonb          NOT NULL
);
CREATE INDEX upstreams_client_certificate_id_idx ON upstreams (client_certificate_id, id);

CREATE TABLE targets (
  id           uuid           PRIMARY KEY,
  created_at   timestamptz(0) NOT NULL,
  updated_at   timestamptz(0) NOT NULL,
  target       text           NOT NULL,
  upstream_id  uuid           NOT NULL CONSTRAINT targets_upstream_fkey
                              REFERENCES upstreams (id) ON DELETE CASCADE,
  tags         text[],
  entity       jsonb          NOT NULL,
  CONSTRAINT targets_cache_key UNIQUE (upstream_id, target)
);
CREATE INDEX targets_upstream_id_idx ON targets (upstream_id, id);

CREATE TABLE plugins (
  id             uuid           PRIMARY KEY,
  created_at     timestamptz(0) NOT NULL,
  updated_at     timestamptz(0) NOT NULL,
  name           text           NOT NULL,
  instance_name  text           CONSTRAINT plugins_instance_name_key UNIQUE,
  route_id       uuid           CONSTRAINT plugins_route_fkey
                                REFERENCES routes (id) ON DELETE CASCADE,
  service_id     uuid           CONSTRAINT plugins_service_fkey
                                REFERENCES services (id) ON DELETE CASCADE,
  consumer_id    uuid           CONSTRAINT plugins_consumer_fkey
                                REFERENCES consumers (id) ON DELETE CASCADE,
  tags           text[],
  entity         jsonb          NOT NULL
);
-- Kong's plugin cache key: one instance of a plugin per (route, service, consumer) scope, where
-- "no route" equals "no route". A plain UNIQUE would treat NULLs as distinct (and UNIQUE NULLS NOT
-- DISTINCT needs PostgreSQL 15), so the absent scopes are mapped to the nil uuid.
CREATE UNIQUE INDEX plugins_cache_key ON plugins (
  name,
  coalesce(route_id, '00000000-0000-0000-0000-000000000000'),
  coalesce(service_id, '00000000-0000-0000-0000-000000000000'),
  coalesce(consumer_id, '00000000-0000-0000-0000-000000000000')
);
CREATE INDEX plugins_route_id_idx ON plugins (route_id, id);
CREATE INDEX plugins_service_id_idx ON plugins (service_id, id);
CREATE INDEX plugins_consumer_id_idx ON plugins (consumer_id, id);

CREATE TABLE keyauth_credentials (
  id           uuid           PRIMARY KEY,
  created_at   timestamptz(0) NOT NULL,
  key          text           CONSTRAINT keyauth_credentials_key_key UNIQUE,
  consumer_id  uuid           NOT NULL CONSTRAINT keyauth_credentials_consumer_fkey
                              REFERENCES consumers (id) ON DELETE CASCADE,
  tags         text[],
  entity       jsonb          NOT NULL
);
CREATE INDEX keyauth_credentials_consumer_id_idx ON keyauth_credentials (consumer_id, id);

CREATE TABLE basicauth_credentials (
  id           uuid           PRIMARY KEY,
  created_at   timestamptz(0) NOT NULL,
  username     text           NOT NULL CONSTRAINT basicauth_credentials_username_key UNIQUE,
  consumer_id  uuid           NOT NULL CONSTRAINT basicauth_credentials_consumer_fkey
                              REFERENCES consumers (id) ON DELETE CASCADE,
  tags         text[],
  entity       jsonb          NOT NULL
);
CREATE INDEX basicauth_credentials_consumer_id_idx ON basicauth_credentials (consumer_id, id);

CREATE TABLE jwt_secrets (
  id           uuid           PRIMARY KEY,
  created_at   timestamptz(0) NOT NULL,
  key          text           CONSTRAINT jwt_secrets_key_key UNIQUE,
  consumer_id  uuid           NOT NULL CONSTRAINT jwt_secrets_consumer_fkey
                              REFERENCES consumers (id) ON DELETE CASCADE,
  tags         text[],
  entity       jsonb          NOT NULL
);
CREATE INDEX jwt_secrets_consumer_id_idx ON jwt_secrets (consumer_id, id);

CREATE TABLE acls (
  id           uuid           PRIMARY KEY,
  created_at   timestamptz(0) NOT NULL,
  "group"      text           NOT NULL,
  consumer_id  uuid           NOT NULL CONSTRAINT acls_consumer_fkey
                              REFERENCES consumers (id) ON DELETE CASCADE,
  tags         text[],
  entity       jsonb          NOT NULL,
  CONSTRAINT acls_cache_key UNIQUE (consumer_id, "group")
);
CREATE INDEX acls_consumer_id_idx ON acls (consumer_id, id);

-- Tag filters (?tags=a,b is @>, ?tags=a/b is &&) and /tags/{tag} use these.
CREATE INDEX certificates_tags_idx ON certificates USING gin (tags);
CREATE INDEX snis_tags_idx ON snis USING gin (tags);
CREATE INDEX ca_certificates_tags_idx ON ca_certificates USING gin (tags);
CREATE INDEX services_tags_idx ON services USING gin (tags);
CREATE INDEX routes_tags_idx ON routes USING gin (tags);
CREATE INDEX consumers_tags_idx ON consumers USING gin (tags);
CREATE INDEX upstreams_tags_idx ON upstreams USING gin (tags);
CREATE INDEX targets_tags_idx ON targets USING gin (tags);
CREATE INDEX plugins_tags_idx ON plugins USING gin (tags);
CREATE INDEX keyauth_credentials_tags_idx ON keyauth_credentials USING gin (tags);
CREATE INDEX basicauth_credentials_tags_idx ON basicauth_credentials USING gin (tags);
CREATE INDEX jwt_secrets_tags_idx ON jwt_secrets USING gin (tags);
CREATE INDEX acls_tags_idx ON acls USING gin (tags);

-- The config version: one row, bumped first thing by every write transaction. The row lock it
-- takes orders writers, so versions are handed out in commit order with no gaps, and a
-- snapshot-isolated read sees the version that matches the rows it reads.
CREATE TABLE config_state (
  singleton  boolean  PRIMARY KEY DEFAULT true CHECK (singleton),
  version    bigint   NOT NULL
);
INSERT INTO config_state (singleton, version) VALUES (true, 0);

-- One row per write, in the same transaction: what changed, for audit and for the publisher.
-- `entity` is the entity as written (or as it was, for a delete); `detail` holds what else the
-- write did: the ids a delete cascaded to, the entity counts of a replace_all.
CREATE TABLE revisions (
  version     bigint       PRIMARY KEY,
  created_at  timestamptz  NOT NULL DEFAULT now(),
  kind        text,
  entity_id   uuid,
  op          text         NOT NULL
              CONSTRAINT revisions_op_check CHECK (op IN ('create', 'update', 'delete', 'replace_all')),
  entity      jsonb,
  detail      jsonb
);
