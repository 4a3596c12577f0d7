//! A scratch area on a PostgreSQL server for one benchmark run: every database and role
//! the run creates is named `<prefix>…` with one random prefix (`bench_<8 hex>`), and all
//! of them are dropped at the end — by [`Scratch::cleanup`], or, if that did not run
//! (a panic), when the [`Scratch`] drops.

use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use tokio_postgres::{Client, NoTls};

/// The server used unless `TENANCY_BENCH_POSTGRES_URL` says otherwise.
/// Plaintext (`sslmode=disable`): the benchmarks compare the stack with bare clients that
/// connect without TLS.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable";

/// The databases and roles of one run on one server.
pub struct Scratch {
    server: String,
    /// `bench_<8 hex>`: starts the name of everything the run creates on the server.
    pub prefix: String,
    /// `SHOW server_version`.
    pub version: String,
    cleaned: bool,
}

/// A connection to `url` as its own user, or why not (within 5 s).
async fn connect(url: &str) -> Result<Client> {
    let connecting = tokio_postgres::connect(url, NoTls);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(5), connecting)
        .await
        .map_err(|_| anyhow!("PostgreSQL at {url} did not answer within 5 s"))?
        .with_context(|| {
            format!("PostgreSQL at {url} is unreachable (set TENANCY_BENCH_POSTGRES_URL)")
        })?;
    tokio::spawn(connection);
    Ok(client)
}

/// `server` with its database replaced by `database`.
fn url_with_database(server: &str, database: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (server, None),
    };
    let base = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

/// `"name"`; the names quoted here are built by [`Scratch::name`] or read back from the
/// server's catalogs by prefix.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Scratch {
    /// Checks that the server at `server` answers and picks a fresh prefix.
    pub async fn open(server: &str) -> Result<Scratch> {
        let client = connect(server).await?;
        let version: String = client
            .query_one("SHOW server_version", &[])
            .await
            .context("asking PostgreSQL its version")?
            .get(0);
        Ok(Scratch {
            server: server.to_owned(),
            prefix: format!("bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            version,
            cleaned: false,
        })
    }

    /// `<prefix>_<suffix>`: a name this run may give a database or a role, or use as a
    /// prefix of such names. `suffix` is lower-case letters, digits and `_`.
    pub fn name(&self, suffix: &str) -> Result<String> {
        ensure!(
            !suffix.is_empty()
                && suffix
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "scratch name suffix {suffix:?} must be a–z, 0–9 and _"
        );
        Ok(format!("{}_{suffix}", self.prefix))
    }

    /// Creates the empty database `<prefix>_<suffix>` and returns its URL.
    pub async fn create_database(&self, suffix: &str) -> Result<String> {
        let name = self.name(suffix)?;
        connect(&self.server)
            .await?
            .batch_execute(&format!("CREATE DATABASE {}", quote(&name)))
            .await
            .with_context(|| format!("creating the database {name}"))?;
        Ok(url_with_database(&self.server, &name))
    }

    /// Drops every database (connections and all) and then every role whose name starts
    /// with the prefix. Returns how many of each it dropped; goes on past failures and
    /// reports the first. Runs once: a later drop of the [`Scratch`] does not retry.
    pub async fn cleanup(&mut self) -> Result<(usize, usize)> {
        self.cleaned = true;
        drop_all(&self.server, &self.prefix).await
    }
}

async fn drop_all(server: &str, prefix: &str) -> Result<(usize, usize)> {
    let client = connect(server).await?;
    let mut first_error = None;
    let databases: Vec<String> = client
        .query(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1)",
            &[&prefix],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut dropped = (0, 0);
    for name in databases {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote(&name));
        match client.batch_execute(&sql).await {
            Ok(()) => dropped.0 += 1,
            Err(e) => {
                first_error.get_or_insert_with(|| anyhow!("dropping the database {name}: {e}"));
            }
        }
    }
    // Roles last: their grants lived in the databases just dropped.
    let roles: Vec<String> = client
        .query(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)",
            &[&prefix],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for name in roles {
        match client
            .batch_execute(&format!("DROP ROLE IF EXISTS {}", quote(&name)))
            .await
        {
            Ok(()) => dropped.1 += 1,
            Err(e) => {
                first_error.get_or_insert_with(|| anyhow!("dropping the role {name}: {e}"));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(dropped),
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let (server, prefix) = (self.server.clone(), self.prefix.clone());
        // A runtime of its own: the benchmark's may be unwinding.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                if let Err(e) = rt.block_on(drop_all(&server, &prefix)) {
                    eprintln!("cleaning up {prefix}…: {e:#}");
                }
            }
        })
        .join();
    }
}
