//! `shardgate --config FILE` runs the proxy; `--check-config FILE` validates and exits.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use shardgate::config::Config;

#[derive(Parser)]
#[command(version, about = "Postgres wire-protocol sharding gateway")]
struct Args {
    /// Run the proxy with this configuration file.
    #[arg(long, value_name = "FILE", conflicts_with = "check_config")]
    config: Option<PathBuf>,
    /// Validate this configuration file and exit (0 = valid).
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(path) = args.check_config {
        Config::load(&path)?;
        println!("{}: ok", path.display());
        return Ok(());
    }
    let path = args
        .config
        .context("--config FILE is required (or --check-config FILE)")?;
    let config = Arc::new(Config::load(&path)?);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let workers = match config.proxy.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // One worker runs everything on the main thread: no work stealing, no cross-thread
    // wake-ups.
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    };
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.proxy.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.proxy.listen))?;
        tracing::info!(addr = %listener.local_addr()?, "shardgate listening");
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        shardgate::run(listener, config, shutdown).await?;
        Ok(())
    })
}
