//! `omh-host`: an open manufacturing hub in one process. It polls devices
//! through WebAssembly driver plugins, publishes their data on an embedded
//! MQTT broker, and stores it through sink plugins, all from one manifest.

mod buffer;
mod bus;
mod gateway;
mod http;
mod manifest;
mod migrate;
mod plugin;
mod simulator;
mod site;
mod status;
mod storage;
mod uplink;

use clap::{Parser, Subcommand};
use plugin::catalog::{Catalog, WIT_PACKAGE, WIT_VERSION};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "omh-host",
    version,
    about = "Open manufacturing hub: devices -> MQTT bus -> database, with WebAssembly plugins",
    long_about = "Open manufacturing hub: devices -> MQTT bus -> database, with WebAssembly plugins.\n\n\
        One manifest (TOML) describes the site: Modbus simulators, devices with their driver \
        plugin and groups of tags polled at an interval, transforms, the embedded MQTT broker \
        and sinks that write to PostgreSQL/TimescaleDB or an embedded SQLite file.\n\n\
        `omh-host --manifest site.toml` runs the site until Ctrl-C.",
    after_help = "Examples:\n  \
        omh-host --manifest examples/quickstart.toml\n  \
        omh-host check --manifest site.toml\n  \
        omh-host migrate --database postgres://user@localhost/omh\n  \
        omh-host passwd scada\n  \
        omh-host plugins list --manifest site.toml\n\n\
        Logging: OMH_LOG=debug (or any tracing filter, e.g. OMH_LOG=info,omh_host=debug)."
)]
struct Cli {
    /// Site manifest to run (same as `omh-host run --manifest FILE`).
    #[arg(long, short, global = true, value_name = "FILE", env = "OMH_MANIFEST")]
    manifest: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the site described by --manifest until Ctrl-C or SIGTERM.
    Run,
    /// Validate --manifest and the plugins it names, without starting anything.
    ///
    /// Exits non-zero and prints one line per problem, each naming the
    /// file, the key path and the bad value.
    Check,
    /// Create or upgrade the database schema (tables `conditions` and
    /// `readings`).
    ///
    /// Applies the numbered SQL files built into this binary that the
    /// database has not seen yet, each in its own transaction, and records
    /// them in the table `omh_migrations`; running it again applies nothing.
    /// On PostgreSQL with the TimescaleDB extension loadable (in
    /// shared_preload_libraries) the tables become hypertables with
    /// compression and retention policies; on plain PostgreSQL they are
    /// ordinary tables with a BRIN index on time. The duration options only
    /// take effect in the run that creates the tables or policies.
    #[command(after_help = "Examples:\n  \
        omh-host migrate --database postgres://omh:secret@localhost:5432/omh\n  \
        omh-host migrate --database postgres://omh@db/omh --chunk-interval 12h --retain-for none\n  \
        omh-host migrate --database sqlite:data/quickstart.db")]
    Migrate {
        /// Database to migrate: postgres://user:password@host:port/db or
        /// sqlite:path/to/file.db.
        #[arg(long, value_name = "URL", env = "OMH_DATABASE_URL")]
        database: String,
        #[command(flatten)]
        settings: migrate::TimescaleSettings,
    },
    /// Print the manifest lines for an MQTT user, with an argon2 hash of
    /// their password (the manifest never holds the password itself).
    ///
    /// On a terminal the password is asked for twice, without echo;
    /// otherwise the first line of standard input is the password.
    #[command(after_help = "Examples:\n  \
        omh-host passwd scada >> site.toml\n  \
        printf '%s\\n' \"$PASSWORD\" | omh-host passwd grafana")]
    Passwd {
        /// The MQTT username the lines are for.
        #[arg(value_name = "USERNAME")]
        username: String,
    },
    /// Work with plugins (.wasm components).
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// List the plugins in a directory: file, world, WIT version, size.
    ///
    /// The directory is --dir, or the `plugins.dir` of --manifest.
    List {
        /// Plugins directory to list (overrides the manifest's).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Show what one plugin file is: its world and WIT version, whether this
    /// host can load it, what it imports and exports, and the settings it
    /// documents (if its author used the SDK's `describe_settings!`).
    Inspect {
        /// The `.wasm` component to inspect.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        None | Some(Command::Run) => run(cli.manifest.as_deref()),
        Some(Command::Check) => check(cli.manifest.as_deref()),
        Some(Command::Migrate { database, settings }) => migrate::run(&database, &settings),
        Some(Command::Passwd { username }) => passwd(&username),
        Some(Command::Plugins {
            command: PluginsCommand::List { dir },
        }) => list_plugins(cli.manifest.as_deref(), dir),
        Some(Command::Plugins {
            command: PluginsCommand::Inspect { file },
        }) => inspect_plugin(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    // rumqttd logs every client that disconnects as an error; the gateway
    // logs connections itself, so those two modules stay quiet.
    let filter = tracing_subscriber::EnvFilter::try_from_env("OMH_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,rumqttd=warn,rumqttd::server::broker=off,rumqttd::router::routing=off",
        )
    });
    // Colours only for a person at a terminal, not in files or journals.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

fn require_manifest(manifest: Option<&Path>) -> anyhow::Result<&Path> {
    manifest.ok_or_else(|| {
        anyhow::anyhow!("no manifest: pass --manifest FILE (try examples/quickstart.toml)")
    })
}

fn run(manifest: Option<&Path>) -> anyhow::Result<()> {
    let loaded = manifest::load(require_manifest(manifest)?)?;
    raise_open_files_limit();
    tokio::runtime::Runtime::new()?.block_on(site::run(loaded))
}

/// Each MQTT client costs two sockets (its own and the gateway's link to
/// rumqttd), so the usual soft limit of 1,024 open files would cap the
/// broker near 500 clients. Raised to the hard limit, as nginx or Go
/// programs do.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open files limit"),
    }
}

fn check(manifest: Option<&Path>) -> anyhow::Result<()> {
    let path = require_manifest(manifest)?;
    let loaded = manifest::load(path)?;
    let catalog = Catalog::scan(&loaded.plugins_dir)?;
    site::resolve_plugins(&loaded.manifest, &catalog).map_err(|problems| {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {p}", path.display()))
            .collect();
        anyhow::anyhow!(lines.join("\n"))
    })?;
    let m = &loaded.manifest;
    println!(
        "{}: OK ({} devices, {} groups, {} transforms, {} sinks, {} simulators)",
        path.display(),
        m.devices.len(),
        m.devices.values().map(|d| d.groups.len()).sum::<usize>(),
        m.transforms.len(),
        m.sinks.len(),
        m.simulators.len()
    );
    Ok(())
}

fn passwd(username: &str) -> anyhow::Result<()> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {username}: "))?;
        if rpassword::prompt_password("again: ")? != first {
            anyhow::bail!("the two passwords differ");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    let key = if username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        username.to_string()
    } else {
        format!("{username:?}")
    };
    println!("[broker.users.{key}]");
    println!("password_hash = \"{}\"", gateway::hash_password(&password));
    println!("# Topic filters this user may publish to (e.g. the write topic) and read.");
    println!("publish = []");
    println!("subscribe = [\"#\"]");
    Ok(())
}

fn list_plugins(manifest: Option<&Path>, dir: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = match (dir, manifest) {
        (Some(dir), _) => dir,
        (None, Some(manifest)) => manifest::load(manifest)?.plugins_dir,
        (None, None) => anyhow::bail!("pass --dir DIR or --manifest FILE"),
    };
    let catalog = Catalog::scan(&dir)?;
    println!(
        "plugins in {} (host supports {WIT_PACKAGE}@{WIT_VERSION}):",
        dir.display()
    );
    println!(
        "{:<24} {:<10} {:<8} {:>9}  FILE",
        "NAME", "WORLD", "WIT", "SIZE"
    );
    for plugin in &catalog.plugins {
        println!(
            "{:<24} {:<10} {:<8} {:>6} KiB  {}",
            plugin.name,
            plugin.world.to_string(),
            plugin.wit_version,
            plugin.size >> 10,
            plugin.path.display()
        );
    }
    for (path, reason) in &catalog.rejected {
        println!("rejected {}: {reason}", path.display());
    }
    Ok(())
}

fn inspect_plugin(file: &Path) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let description = plugin::inspect::describe(&bytes).map_err(anyhow::Error::msg)?;
    println!("file      {} ({} KiB)", file.display(), bytes.len() >> 10);
    match plugin::catalog::inspect(file) {
        Ok(plugin) => {
            println!("world     {}", plugin.world);
            println!(
                "wit       {WIT_PACKAGE}@{} (this host: {WIT_VERSION}; loadable)",
                plugin.wit_version
            );
        }
        Err(reason) => println!("loadable  no: {reason}"),
    }
    println!("exports   {}", description.exports.join(", "));
    println!("imports   {}", description.imports.join("\n          "));
    match description.settings {
        Some(settings) => {
            println!("settings");
            for line in settings.lines() {
                println!("  {line}");
            }
        }
        None => println!("settings  (not documented in the file)"),
    }
    Ok(())
}
