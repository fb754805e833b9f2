//! Throwaway PostgreSQL clusters for integration tests.
//!
//! Each `TestPostgres` owns a temporary directory holding its data directory,
//! server log and Unix socket, and listens on its own random port on
//! 127.0.0.1, so tests run in parallel and never touch a system cluster
//! (or need `/var/run/postgresql` to exist).

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

/// Debian's location of the PostgreSQL 15 server tools, which are not on
/// PATH; `OMH_PG_BIN` points elsewhere for other installs.
const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Another process can take the port between our probe and the server's
/// bind; that race is retried with a fresh port this many times.
const START_ATTEMPTS: usize = 3;

#[derive(Debug, Clone, Copy, Default)]
pub struct PgOptions {
    /// Preload TimescaleDB so `CREATE EXTENSION timescaledb` works.
    pub timescaledb: bool,
}

pub struct TestPostgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    /// PostgreSQL refuses to run as root, so when the tests do, the server
    /// tools run as the `postgres` OS user instead.
    as_postgres: bool,
    running: bool,
}

impl TestPostgres {
    /// Creates a cluster, starts it and creates the database `demo`.
    pub fn start(opts: PgOptions) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("omh-pg-").tempdir()?;
        // The new directory belongs to our effective user: owned by root
        // means we are root.
        let as_postgres = dir.path().metadata()?.uid() == 0;
        if as_postgres {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path()))?;
        }
        let bin =
            std::env::var_os("OMH_PG_BIN").map_or_else(|| DEFAULT_PG_BIN.into(), PathBuf::from);
        let mut pg = TestPostgres {
            dir,
            bin,
            port: 0,
            as_postgres,
            running: false,
        };

        let data = pg.data_dir();
        run(pg
            .tool("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            // Independent of whatever LANG the test runner has (and whether
            // that locale is installed).
            .arg("--locale=C"))?;

        let conf_path = data.join("postgresql.conf");
        let initdb_conf = std::fs::read_to_string(&conf_path)?;
        for attempt in 1..=START_ATTEMPTS {
            pg.port = free_port()?;
            // Later settings win, so appending to initdb's file is enough;
            // rewriting it from the original keeps retries from piling up.
            std::fs::write(&conf_path, initdb_conf.clone() + &pg.settings(opts))?;
            match pg.start_again() {
                Ok(()) => break,
                Err(_) if attempt < START_ATTEMPTS && pg.log_tail().contains("already in use") => {}
                Err(err) => return Err(err),
            }
        }

        run(pg
            .tool("createdb")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(pg.port.to_string())
            .arg("demo"))
        .with_context(|| format!("creating database demo; server log:\n{}", pg.log_tail()))?;
        Ok(pg)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/demo", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server cleanly (for outage tests); `start_again` resumes it
    /// on the same port with the same data.
    pub fn stop(&mut self) -> Result<()> {
        self.pg_ctl_stop("fast")?;
        self.running = false;
        Ok(())
    }

    /// Starts the server on the existing data directory; returns once it
    /// accepts connections.
    pub fn start_again(&mut self) -> Result<()> {
        run(self
            .tool("pg_ctl")
            .args(["-w", "-t", "30", "-D"])
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .arg("start"))
        .with_context(|| format!("starting PostgreSQL; server log:\n{}", self.log_tail()))?;
        self.running = true;
        Ok(())
    }

    /// Connects to `demo`; the connection is driven by a spawned task.
    pub async fn client(&self) -> Result<tokio_postgres::Client> {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connecting to {}", self.url()))?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                eprintln!("test postgres connection ended: {err}");
            }
        });
        Ok(client)
    }

    /// Runs `omh-host migrate` on `demo` with default settings, as a user
    /// would; returns its output.
    pub async fn apply_migrations(&self) -> Result<String> {
        self.migrate(&[]).await
    }

    /// Runs `omh-host migrate` on `demo` with extra arguments; returns its
    /// standard output, or an error holding both outputs when it fails.
    pub async fn migrate(&self, args: &[&str]) -> Result<String> {
        migrate(&self.url(), args).await
    }

    fn settings(&self, opts: PgOptions) -> String {
        let mut conf = format!(
            "\n# omh test harness\nport = {}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\nfsync = off\n",
            self.port,
            self.dir.path().display(),
        );
        if opts.timescaledb {
            conf += "shared_preload_libraries = 'timescaledb'\ntimescaledb.telemetry_level = off\n";
        }
        conf
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// The last lines of the server log, for error messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<()> {
        run(self
            .tool("pg_ctl")
            .args(["-w", "-D"])
            .arg(self.data_dir())
            .args(["-m", mode, "stop"]))
    }

    /// A PostgreSQL tool as a command, run as `postgres` when we are root,
    /// from a directory that user can read (the tools refuse to start when
    /// they cannot resolve the current directory).
    fn tool(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        };
        cmd.current_dir(self.dir.path());
        cmd
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        // Immediate: the data is thrown away with the directory anyway.
        if self.running
            && let Err(err) = self.pg_ctl_stop("immediate")
        {
            eprintln!("stopping test postgres: {err:#}");
        }
    }
}

/// Runs a command to completion; its output goes into the error on failure.
fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
    }
    Ok(())
}

/// A port that was free a moment ago (the kernel picks it at random).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs `omh-host migrate --database URL ARGS...`; returns its standard
/// output, or an error holding both outputs when it fails.
pub async fn migrate(database: &str, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_omh-host"))
        .args(["migrate", "--database", database])
        .args(args)
        .output()
        .await
        .context("running omh-host migrate")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "omh-host migrate {args:?} failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}
