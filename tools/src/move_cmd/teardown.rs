//! The end of a move: cleanup after the flip (phase 8), or the rollback of one that
//! failed before it.

use serde_json::json;
use shardgate_catalog::TenantState;
use shardgate_catalog::db::{self, ShardRef};

use super::engine::Ctx;
use super::verify::{drop_slot, slot_name};
use super::{MoveError, Phase, Progress};

/// Phase 8: subscription, publication and slot gone; the source's rows deleted (unless
/// kept). The fence row stays: a stale proxy's write must keep failing loudly.
pub(super) async fn cleanup(ctx: &mut Ctx<'_>) -> Result<u64, MoveError> {
    ctx.enter(Phase::Cleanup).await?;
    let name = ctx.name();
    ctx.target.drop_subscription(&name).await?;
    ctx.source.drop_publication_and_slot(&name).await?;
    drop_slot(&ctx.source, &slot_name(&name)).await?;
    ctx.source.drop_marker(ctx.job).await?;
    ctx.target.drop_marker(ctx.job).await?;
    let mut deleted = 0;
    if !ctx.spec.keep_source {
        for t in &ctx.tables {
            let n = ctx
                .source
                .delete_rows(t, &ctx.spec.key_column, &ctx.keys)
                .await?;
            ctx.hooks.emit(Progress::Deleted {
                table: t.display_name(),
                rows: n,
            });
            deleted += n;
        }
        // No copy left anywhere but home (with --keep-source the source's stays fenced
        // and left out of fan-outs for good).
        db::set_copies_on(&mut ctx.catalog, &ctx.keys, None).await?;
    }
    for shard in [&ctx.source, &ctx.target] {
        let left: Vec<_> = shard
            .move_objects()
            .await?
            .into_iter()
            .filter(|o| o.ends_with(&format!(" {name}")) || o.ends_with(&slot_name(&name)))
            .collect();
        if !left.is_empty() {
            return Err(MoveError::PostFlipInconsistent(format!(
                "shard {} still has {}; drop them by hand or run --resume {}",
                shard.name,
                left.join(", "),
                ctx.job
            )));
        }
    }
    ctx.event(
        "move_done",
        json!({ "deleted": deleted, "keep_source": ctx.spec.keep_source }),
    )
    .await?;
    Ok(deleted)
}

/// Undoes a move before its flip: the fence row off the source, the tenant un-gated on the
/// source, subscription, publication and slot dropped, and the copied rows deleted from the
/// target. Returns what could not be done (each step is tried regardless).
pub(super) async fn rollback(ctx: &mut Ctx<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    let name = ctx.name();
    let mut note = |what: &str, r: Result<(), MoveError>| {
        if let Err(e) = r {
            problems.push(format!("{what}: {e}"));
        }
    };
    // Fence first, un-gate second: the other order lets released writes hit the fence.
    note(
        "removing the fence",
        ctx.source.remove_fence(&ctx.spec.tenants).await,
    );
    let ungate = async {
        let map = db::load_map(&mut ctx.catalog).await?;
        let gated: Vec<_> = ctx
            .keys
            .iter()
            .filter(|k| {
                map.locate(k)
                    .is_ok_and(|p| p.shard == ctx.spec.from && p.state == TenantState::Gated)
            })
            .cloned()
            .collect();
        if !gated.is_empty() {
            db::set_tenants(
                &mut ctx.catalog,
                &gated,
                &ShardRef::Id(ctx.spec.from),
                TenantState::Active,
            )
            .await?;
        }
        Ok::<(), MoveError>(())
    };
    note("un-gating", ungate.await);
    note(
        "dropping the subscription",
        ctx.target.drop_subscription(&name).await,
    );
    note(
        "dropping the publication",
        ctx.source.drop_publication_and_slot(&name).await,
    );
    note(
        "dropping the verify slot",
        drop_slot(&ctx.source, &slot_name(&name)).await,
    );
    note("deleting the marker", ctx.source.drop_marker(ctx.job).await);
    note("deleting the marker", ctx.target.drop_marker(ctx.job).await);
    for t in &ctx.tables {
        let r = ctx
            .target
            .delete_rows(t, &ctx.spec.key_column, &ctx.keys)
            .await
            .map(|_| ());
        note("deleting the copy", r);
    }
    let forget = db::set_copies_on(&mut ctx.catalog, &ctx.keys, None)
        .await
        .map(|_| ())
        .or_else(|e| match e {
            shardgate_catalog::CatalogError::UnknownTenant(_) => Ok(()),
            e => Err(e.into()),
        });
    note("forgetting the copy", forget);
    problems
}
