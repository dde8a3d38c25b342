//! `shardctl`: argument parsing only; the work is in the `shardctl` library.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use shardctl::dev;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(name = "shardctl", version, about = "shardgate's operator CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A local development fleet: shard clusters, a catalog cluster and the proxy.
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
}

#[derive(Subcommand)]
enum DevCommand {
    /// Start the clusters and run the proxy in the foreground until Ctrl-C.
    Up {
        /// Number of shard clusters.
        #[arg(long, default_value_t = 4)]
        shards: usize,
        /// State directory: data dirs, generated passwords, shardgate.toml.
        #[arg(long, default_value = ".sg-dev")]
        dir: PathBuf,
        /// Address the proxy listens on.
        #[arg(long, default_value = "127.0.0.1:6432")]
        listen: SocketAddr,
    },
    /// Stop any clusters under the state directory that are still running; data stays.
    Down {
        #[arg(long, default_value = ".sg-dev")]
        dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Dev {
            command:
                DevCommand::Up {
                    shards,
                    dir,
                    listen,
                },
        } => {
            let shutdown = shutdown_signal()?;
            dev::up(
                dev::UpOptions {
                    shards,
                    dir,
                    listen,
                },
                shutdown,
            )
            .await?;
        }
        Command::Dev {
            command: DevCommand::Down { dir },
        } => {
            let stopped = dev::down(&dir)?;
            if stopped.is_empty() {
                println!("nothing running under {}", dir.display());
            }
            for name in stopped {
                println!("stopped {name}");
            }
        }
    }
    Ok(())
}

/// Registers the handlers now, not when first polled: a Ctrl-C during cluster start-up
/// must still lead to a clean stop instead of killing us with the clusters left running.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
