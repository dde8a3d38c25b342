//! The shortest path through the proxy: a client logs in with SCRAM and runs a query.

use shardgate_e2e::Fixture;

#[tokio::test]
async fn select_through_the_proxy() {
    let fx = Fixture::start().await;
    let client = fx.connect_proxy().await.expect("connect through proxy");
    let row = client
        .query_one("select $1::int + 1, current_database()", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_eq!(row.get::<_, String>(1), "app");
}
