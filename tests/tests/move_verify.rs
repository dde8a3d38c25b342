//! The move's verification catches a copy that differs from its source. Most of the
//! comparison runs before the gate, so this proves that the part under the gate still
//! looks at the rows the early comparison found different: a row changed, one missing and
//! one extra on the target fail the move with E_VERIFY_MISMATCH, and the rollback leaves
//! the tenant active on its untouched source with nothing of the move behind.

mod common;

use common::client;
use shardctl::move_cmd::{self, Hooks, MoveError, MoveRequest, Phase};
use shardgate_catalog::db::{self, jobs::JobState};
use shardgate_catalog::{TenantKey, TenantState};
use shardgate_e2e::CatalogFleet;

const SCHEMA: &str = "create table orders (tenant_id bigint not null, id bigint not null, \
                      note text, primary key (tenant_id, id))";
const T: i64 = 777;
const ROWS: i64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_differs_from_its_source_fails_verification_and_rolls_back() {
    let fleet = CatalogFleet::start(SCHEMA, &["orders"], 200, |_| {}).await;
    let map = db::load_map(&mut fleet.catalog_client().await)
        .await
        .unwrap();
    let source = map.locate(&TenantKey::Int(T)).unwrap().shard as usize;
    let target = (source + 1) % 4;
    let c = client(&fleet.proxy).await;
    c.batch_execute(&format!(
        "/* tenant_id={T} */ insert into orders select {T}, g, 'row ' || g \
         from generate_series(1, {ROWS}) g"
    ))
    .await
    .unwrap();
    let url = fleet.catalog_url();
    let req = MoveRequest::new(T.to_string(), format!("s{target}"));

    // Copied and caught up; then the copy goes wrong behind the move's back.
    let e = move_cmd::run_stopping_after(&url, &req, &Hooks::default(), Phase::CatchUp)
        .await
        .expect_err("the move stops after its catch-up");
    let MoveError::Interrupted { job, .. } = e else {
        panic!("{}: {e}", e.code());
    };
    fleet
        .fx
        .connect_shard(target)
        .await
        .batch_execute(&format!(
            "update orders set note = 'wrong' where tenant_id = {T} and id = 5;
             delete from orders where tenant_id = {T} and id = 6;
             insert into orders values ({T}, 99999, 'extra')"
        ))
        .await
        .unwrap();

    let e = move_cmd::resume(&url, job, &Hooks::default())
        .await
        .expect_err("the verification fails");
    assert_eq!(e.code(), "E_VERIFY_MISMATCH", "{e}");
    let message = e.to_string();
    for key in [
        format!("({T}, 5)"),
        format!("({T}, 6)"),
        format!("({T}, 99999)"),
    ] {
        assert!(message.contains(&key), "{key} not named in: {message}");
    }

    // Rolled back: the tenant active on its source, every row there as loaded, the copy
    // and every replication object gone, the job failed with the code.
    let map = db::load_map(&mut fleet.catalog_client().await)
        .await
        .unwrap();
    let placed = map.locate(&TenantKey::Int(T)).unwrap();
    assert_eq!(
        (placed.shard as usize, placed.state),
        (source, TenantState::Active)
    );
    let fx = &fleet.fx;
    let on = |i: usize| async move {
        fx.connect_shard(i)
            .await
            .query_one(
                "select count(*), count(*) filter (where note = 'row ' || id) \
                 from orders where tenant_id = $1",
                &[&T],
            )
            .await
            .unwrap()
    };
    let src = on(source).await;
    assert_eq!((src.get::<_, i64>(0), src.get::<_, i64>(1)), (ROWS, ROWS));
    assert_eq!(on(target).await.get::<_, i64>(0), 0, "the copy was left");
    assert_eq!(fleet.move_leftovers().await, Vec::<String>::new());
    let jobs = db::jobs::list_jobs(&fleet.catalog_client().await, true)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].state, JobState::Failed);
    assert!(
        jobs[0]
            .error
            .as_deref()
            .unwrap_or("")
            .starts_with("E_VERIFY_MISMATCH"),
        "{:?}",
        jobs[0].error
    );
    // Its clients write as before.
    common::within(
        15,
        "a write after the rollback",
        c.execute(
            "insert into orders (tenant_id, id, note) values ($1, $2, 'after')",
            &[&T, &(ROWS + 1)],
        ),
    )
    .await
    .unwrap();
    assert_eq!(on(source).await.get::<_, i64>(0), ROWS + 1);
}
