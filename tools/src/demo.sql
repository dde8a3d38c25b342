-- The demo schema `shardctl dev up` puts on every shard (as the superuser, once).
--
-- Sharded tables carry tenant_id and lead their primary key with it, so a tenant's rows
-- are one contiguous key range and a tenant move can copy them by a row filter. `plans`
-- has no tenant_id: it is a global table, read from one shard and written to all.
--
-- Row-level security follows the session setting app.tenant_id, which the proxy sets on
-- the server for every statement it routes to one tenant: a session naming a tenant sees
-- and writes only that tenant's rows. A session naming none (an operator's report, a
-- cross-tenant read) is not restricted; the policy guards tenant-scoped traffic against
-- a forgotten WHERE, it is not an authorisation boundary between database users.

CREATE TABLE plans (
    plan_id    int PRIMARY KEY,
    name       text NOT NULL,
    max_orders int NOT NULL
);

CREATE TABLE orders (
    tenant_id    bigint NOT NULL,
    order_id     bigint NOT NULL,
    customer     text NOT NULL,
    status       text NOT NULL DEFAULT 'new',
    amount_cents bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, order_id)
);

CREATE TABLE line_items (
    tenant_id   bigint NOT NULL,
    order_id    bigint NOT NULL,
    line_no     int NOT NULL,
    sku         text NOT NULL,
    qty         int NOT NULL,
    price_cents bigint NOT NULL,
    PRIMARY KEY (tenant_id, order_id, line_no),
    FOREIGN KEY (tenant_id, order_id) REFERENCES orders ON DELETE CASCADE
);

-- What writers did, in their own words: the move tests compare it with the rows.
CREATE TABLE write_log (
    tenant_id bigint NOT NULL,
    seq       bigint NOT NULL,
    writer    text NOT NULL,
    op        text NOT NULL,
    row_key   bigint,
    checksum  text,
    at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, seq)
);

DO $demo$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['orders', 'line_items', 'write_log'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            $p$CREATE POLICY tenant_isolation ON %I
                 USING (coalesce(current_setting('app.tenant_id', true), '') = ''
                        OR tenant_id = nullif(current_setting('app.tenant_id', true), '')::bigint)$p$,
            t);
    END LOOP;
END
$demo$;

-- The proxy logs in as `app` (not a superuser, so the policies apply to it).
GRANT SELECT, INSERT, UPDATE, DELETE ON plans, orders, line_items, write_log TO app;
GRANT CREATE ON SCHEMA public TO app;
