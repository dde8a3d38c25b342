//! `shardctl`: argument parsing only; the work is in the `shardctl` library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use shardctl::catalog_cmd::{self, Format, Report};
use shardctl::dev;
use shardctl::move_cmd::{self, MoveRequest};
use shardctl::place_cmd::{self, EXIT_CODES_HELP};
use shardctl::rebalance_cmd;
use shardctl::split_cmd::{self, SplitBy, SplitRequest};
use shardctl::verify_cmd::{self, VerifyRequest};
use shardgate_catalog::db::{InitOptions, NewShard};
use shardgate_catalog::{KeyType, Strategy, TenantState};
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
    /// Create or upgrade the catalog schema and record its settings (idempotent).
    Init {
        #[command(flatten)]
        catalog: CatalogArgs,
        /// hash or directory; default hash on a new catalog, the stored one otherwise.
        #[arg(long)]
        strategy: Option<Strategy>,
        /// bigint, text or uuid; default bigint on a new catalog, the stored one otherwise.
        #[arg(long)]
        key_type: Option<KeyType>,
        /// Virtual nodes per shard on the hash ring; default 256 on a new catalog.
        #[arg(long)]
        vnodes: Option<u32>,
    },
    /// Shards in the catalog.
    Shard {
        #[command(subcommand)]
        command: ShardCommand,
    },
    /// Tenants in the catalog.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Preview placement: the shard a new tenant would get now. Changes nothing.
    ///
    /// Among active shards below their capacity_hint, the one with the fewest live
    /// tenants, ties to the smallest name.
    #[command(after_help = EXIT_CODES_HELP)]
    Place {
        #[command(flatten)]
        catalog: CatalogArgs,
        /// Check this shard (name or id) instead of choosing: it must be active and below
        /// its capacity_hint, else E_SHARD_NOT_FOUND / E_NO_CAPACITY (exit 2).
        #[arg(long, value_name = "NAME")]
        preferred_shard: Option<String>,
    },
    /// Move one tenant's rows to another shard while clients keep writing (online).
    Move(MoveArgs),
    /// Compare one tenant's rows on two shards: per sharded table, row count and checksum.
    ///
    /// Exit 0 when every table is equal; 13 (E_VERIFY_MISMATCH) with the per-table report
    /// when any differs or is missing on one side; 2 (E_INVALID) for an unknown shard,
    /// 3 (E_CATALOG) and 4 (E_SHARD) when the catalog or a shard fails.
    Verify(VerifyArgs),
    /// Moves about half of a shard's load (rows or recent writes) to another shard, all
    /// its chosen tenants under one gate.
    Split(SplitArgs),
    /// Evens out the shards' load by moving tenants from the heaviest to the lightest:
    /// --plan prints the moves, --execute runs them (one gate per shard pair).
    Rebalance(RebalanceArgs),
    /// Long-running jobs (moves): running ones, or all with --all.
    Jobs {
        #[command(flatten)]
        catalog: CatalogArgs,
        /// Finished jobs too.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["tenant", "resume", "abort"]))]
struct MoveArgs {
    #[command(flatten)]
    catalog: CatalogArgs,
    /// The tenant to move, read as the catalog's key_type.
    #[arg(long, allow_hyphen_values = true, requires = "to")]
    tenant: Option<String>,
    /// Target shard name (or id).
    #[arg(long)]
    to: Option<String>,
    /// Leave the tenant's rows on the source (fenced) instead of deleting them.
    #[arg(long)]
    keep_source: bool,
    #[command(flatten)]
    opts: MoveOptions,
    /// Check and print the plan; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Continue job JOB from its persisted phase.
    #[arg(long, value_name = "JOB")]
    resume: Option<i64>,
    /// Undo job JOB (only before its flip).
    #[arg(long, value_name = "JOB")]
    abort: Option<i64>,
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    catalog: CatalogArgs,
    /// The tenant to compare, read as the catalog's key_type.
    #[arg(long, allow_hyphen_values = true)]
    tenant: String,
    /// A shard name (or id); give it twice, once per side.
    #[arg(long = "shard", value_name = "NAME", required = true)]
    shards: Vec<String>,
    /// The column that holds the tenant key on the shards.
    #[arg(long, default_value = move_cmd::DEFAULT_KEY_COLUMN)]
    key_column: String,
}

#[derive(Args)]
struct SplitArgs {
    #[command(flatten)]
    catalog: CatalogArgs,
    /// The shard to split (name or id).
    #[arg(long)]
    shard: String,
    /// The shard that receives the tenants (name or id; `shard add` it first).
    #[arg(long)]
    into: String,
    /// What "half" is measured by: the tenants' rows, or their rows written recently.
    #[arg(long, value_enum, default_value = "rows")]
    by: SplitByArg,
    #[command(flatten)]
    opts: MoveOptions,
    /// Print which tenants would move; change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("mode").required(true).args(["plan", "execute"]))]
struct RebalanceArgs {
    #[command(flatten)]
    catalog: CatalogArgs,
    /// Print the moves; change nothing.
    #[arg(long)]
    plan: bool,
    /// Run the moves.
    #[arg(long)]
    execute: bool,
    /// What load is measured by: the tenants' rows, or their rows written recently.
    #[arg(long, value_enum, default_value = "rows")]
    by: SplitByArg,
    #[command(flatten)]
    opts: MoveOptions,
}

/// What every command that moves tenants takes (move, split, rebalance).
#[derive(Args)]
struct MoveOptions {
    /// Replication lag in bytes under which the gate may shut.
    #[arg(long, default_value_t = move_cmd::DEFAULT_MAX_LAG)]
    max_lag: u64,
    /// Longest the tenants' statements may be held, in ms; past it the move rolls back.
    #[arg(long, default_value_t = move_cmd::DEFAULT_GATE_TIMEOUT.as_millis() as u64)]
    gate_timeout: u64,
    /// The column that holds the tenant key on the shards.
    #[arg(long, default_value = move_cmd::DEFAULT_KEY_COLUMN)]
    key_column: String,
}

impl MoveOptions {
    /// A request to move `tenants` to `to` with these options.
    fn request(self, tenants: Vec<String>, to: String, dry_run: bool) -> MoveRequest {
        MoveRequest {
            tenants,
            max_lag: self.max_lag,
            gate_timeout: std::time::Duration::from_millis(self.gate_timeout),
            dry_run,
            key_column: self.key_column,
            ..MoveRequest::new(String::new(), to)
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SplitByArg {
    Rows,
    Writes,
}

/// Where the catalog is and how to print; every catalog command takes these.
#[derive(Args)]
struct CatalogArgs {
    /// Catalog database URL (postgres://user:password@host:port/db).
    #[arg(long, env = "SHARDGATE_CATALOG")]
    catalog: String,
    /// Output: text, or one JSON object.
    #[arg(long, default_value = "text")]
    format: Format,
}

#[derive(Subcommand)]
enum ShardCommand {
    /// Every shard with its live tenants and free capacity (passwords masked).
    List {
        #[command(flatten)]
        catalog: CatalogArgs,
    },
    /// Add a shard to the catalog (with its virtual nodes on the hash ring).
    Add {
        #[command(flatten)]
        catalog: CatalogArgs,
        #[arg(long)]
        name: String,
        /// The shard's database URL, as the proxy should log in to it.
        #[arg(long)]
        url: String,
        /// Shard id; default one more than the highest in use.
        #[arg(long)]
        id: Option<u32>,
        #[arg(long, default_value_t = 20)]
        pool_size: u32,
        /// Most live tenants placement puts on this shard (default unbounded). Suggested:
        /// floor(max_connections / pool_size / 2), printed when only --max-connections is
        /// given.
        #[arg(long)]
        capacity_hint: Option<u32>,
        /// The server's max_connections, for the connection budget.
        #[arg(long)]
        max_connections: Option<u32>,
        #[arg(long)]
        region: Option<String>,
        /// Add no virtual nodes: ring-placed tenants stay where they are (a split target).
        #[arg(long)]
        no_ring: bool,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Place a new tenant by capacity and record it (active). Moves no data.
    ///
    /// Without --shard, the shard `shardctl place` would name; with it, that shard or an
    /// error, never another shard. A tenant that already has a row is refused.
    #[command(after_help = EXIT_CODES_HELP)]
    Add {
        #[command(flatten)]
        catalog: CatalogArgs,
        /// The tenant's key, read as the catalog's key_type.
        #[arg(allow_hyphen_values = true)]
        id: String,
        /// Put it on this shard (name or id); fails with E_NO_CAPACITY if the shard is full
        /// or not active.
        #[arg(long, value_name = "NAME")]
        shard: Option<String>,
    },
    /// Pin one tenant to a shard (raw; it moves no data).
    Set {
        #[command(flatten)]
        catalog: CatalogArgs,
        /// The tenant's key, read as the catalog's key_type.
        #[arg(allow_hyphen_values = true)]
        id: String,
        /// Shard name (or id).
        #[arg(long)]
        shard: String,
        #[arg(long, default_value = "active")]
        state: TenantState,
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
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    match run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

/// Prints clap's message. `place` and `tenant add` document exit codes 1-3 as placement
/// outcomes, so their argument errors exit 4 instead of clap's 2.
fn usage_error(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    let args: Vec<String> = std::env::args().skip(1).take(2).collect();
    if e.use_stderr() && has_placement_exit_codes(&args) {
        ExitCode::from(place_cmd::exit::USAGE)
    } else {
        ExitCode::from(e.exit_code().clamp(0, 255) as u8)
    }
}

fn has_placement_exit_codes(args: &[String]) -> bool {
    match args {
        [cmd, ..] if cmd == "place" => true,
        [cmd, sub, ..] => cmd == "tenant" && sub == "add",
        _ => false,
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
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
        Command::Init {
            catalog,
            strategy,
            key_type,
            vnodes,
        } => {
            let opts = InitOptions {
                strategy,
                key_type,
                vnodes_per_shard: vnodes,
            };
            print(
                catalog_cmd::init(&catalog.catalog, opts).await?,
                catalog.format,
            );
        }
        Command::Shard {
            command:
                ShardCommand::Add {
                    catalog,
                    name,
                    url,
                    id,
                    pool_size,
                    capacity_hint,
                    max_connections,
                    region,
                    no_ring,
                },
        } => {
            let shard = NewShard {
                id,
                pool_size,
                capacity_hint,
                max_connections,
                region,
                join_ring: !no_ring,
                ..NewShard::new(name, url)
            };
            print(
                catalog_cmd::shard_add(&catalog.catalog, shard).await?,
                catalog.format,
            );
        }
        Command::Tenant {
            command:
                TenantCommand::Set {
                    catalog,
                    id,
                    shard,
                    state,
                },
        } => {
            let done = catalog_cmd::tenant_set(&catalog.catalog, &id, &shard, state).await?;
            print(done, catalog.format);
        }
        Command::Shard {
            command: ShardCommand::List { catalog },
        } => {
            print(
                place_cmd::shard_list(&catalog.catalog).await?,
                catalog.format,
            );
        }
        Command::Tenant {
            command: TenantCommand::Add { catalog, id, shard },
        } => {
            let result = place_cmd::tenant_add(&catalog.catalog, &id, shard.as_deref()).await;
            return Ok(place_cmd::finish(result, catalog.format));
        }
        Command::Place {
            catalog,
            preferred_shard,
        } => {
            let result = place_cmd::place(&catalog.catalog, preferred_shard.as_deref()).await;
            return Ok(place_cmd::finish(result, catalog.format));
        }
        Command::Move(args) => move_tenant(args).await,
        Command::Verify(args) => return Ok(verify(args).await),
        Command::Split(args) => split(args).await,
        Command::Rebalance(args) => rebalance(args).await,
        Command::Jobs { catalog, all } => {
            print(
                move_cmd::jobs::list(&catalog.catalog, all).await?,
                catalog.format,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Progress of a move, split or rebalance goes to stderr.
fn progress_hooks() -> move_cmd::Hooks {
    let sink: move_cmd::ProgressSink = std::sync::Arc::new(|p| eprintln!("{p}"));
    move_cmd::Hooks {
        progress: Some(sink),
        gate_ack: None,
    }
}

/// Prints the outcome, or the failure's E_ code and exits with the status the README
/// documents.
fn finish(result: Result<impl Report, move_cmd::MoveError>, format: Format) {
    match result {
        Ok(outcome) => print(outcome, format),
        Err(e) => {
            eprintln!("{}: {e}", e.code());
            std::process::exit(e.exit_code());
        }
    }
}

async fn move_tenant(args: MoveArgs) {
    let hooks = progress_hooks();
    let url = &args.catalog.catalog;
    let result = match (args.resume, args.abort, args.tenant) {
        (Some(job), _, _) => move_cmd::resume(url, job, &hooks).await,
        (_, Some(job), _) => move_cmd::abort(url, job, &hooks).await,
        (_, _, Some(tenant)) => {
            let to = args.to.unwrap_or_default();
            let req = MoveRequest {
                keep_source: args.keep_source,
                ..args.opts.request(vec![tenant], to, args.dry_run)
            };
            move_cmd::run(url, &req, &hooks).await
        }
        (None, None, None) => unreachable!("clap requires one of --tenant, --resume, --abort"),
    };
    finish(result, args.catalog.format);
}

async fn rebalance(args: RebalanceArgs) {
    let moves = args.opts.request(Vec::new(), String::new(), false);
    let (by, execute) = (args.by.into(), args.execute);
    let hooks = progress_hooks();
    let result = rebalance_cmd::rebalance(&args.catalog.catalog, by, execute, &moves, &hooks).await;
    finish(result, args.catalog.format);
}

impl From<SplitByArg> for SplitBy {
    fn from(a: SplitByArg) -> SplitBy {
        match a {
            SplitByArg::Rows => SplitBy::Rows,
            SplitByArg::Writes => SplitBy::Writes,
        }
    }
}

async fn split(args: SplitArgs) {
    let req = SplitRequest {
        shard: args.shard,
        by: args.by.into(),
        moves: args.opts.request(Vec::new(), args.into, args.dry_run),
    };
    let result = split_cmd::split(&args.catalog.catalog, &req, &progress_hooks()).await;
    finish(result, args.catalog.format);
}

/// Prints the comparison either way; a difference or a failure exits with its move code.
async fn verify(args: VerifyArgs) -> ExitCode {
    let req = VerifyRequest {
        tenant: args.tenant,
        shards: args.shards,
        key_column: args.key_column,
    };
    let format = args.catalog.format;
    let result = verify_cmd::verify(&args.catalog.catalog, &req).await;
    let failed = match result {
        Ok(verified) => {
            println!("{}", verified.render(format));
            match verified.mismatch() {
                Ok(()) => return ExitCode::SUCCESS,
                Err(e) => e,
            }
        }
        Err(e) => {
            if format == Format::Json {
                println!("{}", verify_cmd::failure_json(&e));
            }
            e
        }
    };
    eprintln!("{}: {failed}", failed.code());
    ExitCode::from(failed.exit_code().clamp(0, 255) as u8)
}

fn print(report: impl Report, format: Format) {
    println!("{}", report.render(format));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_placement_commands_remap_argument_errors() {
        assert!(has_placement_exit_codes(&args(&["place", "--bogus"])));
        assert!(has_placement_exit_codes(&args(&["tenant", "add"])));
        assert!(!has_placement_exit_codes(&args(&["tenant", "set"])));
        assert!(!has_placement_exit_codes(&args(&["shard"])));
        assert!(!has_placement_exit_codes(&args(&[])));
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
