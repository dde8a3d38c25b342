-- shardgate catalog, version 1: the tables of DESIGN.md §5.
-- Runs inside migrate()'s transaction, under its advisory lock, exactly once per catalog.

CREATE TABLE shardgate.settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE shardgate.shards (
    shard_id        int  PRIMARY KEY CHECK (shard_id >= 0),
    name            text NOT NULL UNIQUE CHECK (name <> ''),
    dsn             text NOT NULL,
    state           text NOT NULL DEFAULT 'active'
                         CHECK (state IN ('active', 'draining', 'offline')),
    capacity_hint   int  CHECK (capacity_hint >= 0),
    max_connections int  CHECK (max_connections > 0),
    pool_size       int  NOT NULL DEFAULT 20 CHECK (pool_size > 0),
    region          text
);

-- tenant_id is the canonical text of the key: decimal for bigint, the text itself,
-- lowercase hyphenated for uuid (one spelling per tenant, checked on load).
CREATE TABLE shardgate.tenants (
    tenant_id  text        PRIMARY KEY,
    shard_id   int         NOT NULL REFERENCES shardgate.shards,
    state      text        NOT NULL DEFAULT 'active'
                           CHECK (state IN ('active', 'gated', 'moving', 'offboarding')),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenants_shard_id ON shardgate.tenants (shard_id);

-- vnode_hash is the u64 ring position stored as its signed bit pattern.
CREATE TABLE shardgate.ring (
    vnode_hash bigint PRIMARY KEY,
    shard_id   int    NOT NULL REFERENCES shardgate.shards
);
CREATE INDEX ring_shard_id ON shardgate.ring (shard_id);

-- Exactly one row; every routing change bumps it in the same transaction.
CREATE TABLE shardgate.map_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version   bigint  NOT NULL CHECK (version >= 0)
);
INSERT INTO shardgate.map_version (singleton, version) VALUES (true, 0);

CREATE TABLE shardgate.proxies (
    proxy_id         text        PRIMARY KEY,
    addr             text        NOT NULL,
    map_version_seen bigint      NOT NULL DEFAULT 0,
    last_seen        timestamptz NOT NULL DEFAULT now(),
    inflight_json    jsonb       NOT NULL DEFAULT '{}'
);

CREATE TABLE shardgate.jobs (
    job_id     bigserial   PRIMARY KEY,
    kind       text        NOT NULL,
    spec       jsonb       NOT NULL DEFAULT '{}',
    phase      text        NOT NULL,
    state      text        NOT NULL,
    error      text,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Fleet DDL status: one row per shard and migration; applied_at NULL while pending or failed.
CREATE TABLE shardgate.ddl (
    shard_id   int         NOT NULL REFERENCES shardgate.shards,
    migration  text        NOT NULL,
    applied_at timestamptz,
    error      text,
    PRIMARY KEY (shard_id, migration)
);

CREATE TABLE shardgate.events (
    event_id  bigserial   PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    kind      text        NOT NULL,
    tenant_id text,
    job_id    bigint,
    detail    jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX events_job_id ON shardgate.events (job_id) WHERE job_id IS NOT NULL;
