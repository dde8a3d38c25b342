//! A fleet whose map lives in a catalog: 4 shard clusters with a schema, a catalog cluster
//! that lists them, and an in-process proxy that reads its map from there (the setup of
//! the live-map, gate and move tests).

use shardctl::pg::{PgCluster, PgOptions};
use shardgate::config::{CatalogConfig, Config};
use shardgate_catalog::db::{self, NewShard};
use shardgate_catalog::schema::{self, InitOptions};

use crate::{Fixture, ProxyHandle, ScratchDir, start_proxy};

/// The catalog cluster's superuser password.
pub const CATALOG_PASSWORD: &str = "cat";

/// The parts of a catalog fleet; dropped in field order (proxy, catalog, its directory,
/// then the shards).
pub struct CatalogFleet {
    pub proxy: ProxyHandle,
    pub catalog: PgCluster,
    pub catalog_dir: ScratchDir,
    pub fx: Fixture,
}

impl CatalogFleet {
    /// Starts it: `schema` on every shard, the shards registered in a fresh catalog,
    /// `sharded_tables` and `poll_ms` in the proxy's config, then `tweak`.
    pub async fn start(
        schema_sql: &str,
        sharded_tables: &[&str],
        poll_ms: u64,
        tweak: impl FnOnce(&mut Config),
    ) -> CatalogFleet {
        let fx = Fixture::builder().shards(4).without_proxy().start().await;
        for i in 0..4 {
            fx.connect_shard(i)
                .await
                .batch_execute(schema_sql)
                .await
                .unwrap();
        }
        let catalog_dir = ScratchDir::new("catalog");
        let catalog = PgCluster::start(PgOptions {
            name: "catalog".into(),
            base_dir: catalog_dir.path().to_owned(),
            superuser_password: CATALOG_PASSWORD.into(),
            ..PgOptions::default()
        })
        .await
        .unwrap();
        catalog.create_database("shardgate").await.unwrap();
        let url = catalog.url("postgres", CATALOG_PASSWORD, "shardgate");
        let mut c = db::connect(&url).await.unwrap();
        schema::migrate(&mut c, InitOptions::default())
            .await
            .unwrap();
        for spec in &fx.config.shards {
            db::add_shard(&mut c, &NewShard::new(spec.name.clone(), spec.url.clone()))
                .await
                .unwrap();
        }
        let mut config = fx.config.clone();
        config.shards.clear();
        config.catalog = Some(CatalogConfig { url, poll_ms });
        config.sharding.sharded_tables = sharded_tables.iter().map(|t| t.to_string()).collect();
        tweak(&mut config);
        let proxy = start_proxy(config).await;
        CatalogFleet {
            proxy,
            catalog,
            catalog_dir,
            fx,
        }
    }

    pub fn catalog_url(&self) -> String {
        self.catalog.url("postgres", CATALOG_PASSWORD, "shardgate")
    }

    pub async fn catalog_client(&self) -> tokio_postgres::Client {
        db::connect(&self.catalog_url()).await.unwrap()
    }

    /// Publications, subscriptions and slots named sg_move_% on every shard.
    pub async fn move_leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..4 {
            let c = self.fx.connect_shard(i).await;
            for r in c
                .query(shardctl::move_cmd::shard::MOVE_OBJECTS_SQL, &[])
                .await
                .unwrap()
            {
                out.push(format!("s{i}: {}", r.get::<_, String>(0)));
            }
        }
        out
    }

    /// The config file of another proxy of this fleet (a [`crate::ProxyProcess`]): the
    /// fixture's users and settings, the in-process proxy's `[catalog]` and sharded tables,
    /// no `[[shards]]`, listening on a port the kernel picks; then `tweak` on the TOML.
    pub fn proxy_toml(&self, tweak: impl FnOnce(&mut toml::Table)) -> String {
        let mut t: toml::Table = self.fx.toml.parse().expect("the fixture's TOML parses");
        t.remove("shards");
        let config = &self.proxy.config;
        let catalog = config
            .catalog
            .as_ref()
            .expect("a catalog fleet has a catalog");
        let table = |pairs: Vec<(&str, toml::Value)>| {
            toml::Value::Table(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        };
        t.insert(
            "catalog".into(),
            table(vec![
                ("url", catalog.url.clone().into()),
                ("poll_ms", (catalog.poll_ms as i64).into()),
            ]),
        );
        let section = |t: &toml::Table, name: &str| -> toml::Table {
            t.get(name)
                .and_then(|v| v.as_table())
                .cloned()
                .unwrap_or_default()
        };
        let mut proxy = section(&t, "proxy");
        proxy.insert("listen".into(), "127.0.0.1:0".into());
        t.insert("proxy".into(), toml::Value::Table(proxy));
        let mut sharding = section(&t, "sharding");
        sharding.insert(
            "sharded_tables".into(),
            config.sharding.sharded_tables.clone().into(),
        );
        t.insert("sharding".into(), toml::Value::Table(sharding));
        tweak(&mut t);
        let text = toml::to_string(&t).expect("TOML serialises");
        shardgate::config::Config::from_toml(&text)
            .unwrap_or_else(|e| panic!("the fleet's proxy config is invalid: {e}\n{text}"));
        text
    }
}
