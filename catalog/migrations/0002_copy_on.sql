-- shardgate catalog, version 2: where a tenant's rows also exist as a copy that is not
-- its home (the target of a move until the flip, the source after it until cleanup, or
-- for good with --keep-source). Fan-out reads leave the tenant out on that shard.
ALTER TABLE shardgate.tenants
    ADD COLUMN copy_on int REFERENCES shardgate.shards (shard_id);
