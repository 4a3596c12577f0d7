//! PostgreSQL for tests (DESIGN §10): each test gets its own uniquely named database (and
//! a unique prefix for any database or role it creates), dropped when the value drops.
//! Where PostgreSQL is unreachable the test is skipped with a notice, except under
//! `CI=true`, where it fails.

#![allow(dead_code)]

use std::time::Duration;

/// The server tests use.
pub fn server_url() -> String {
    std::env::var("TENANCY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database of one test. `prefix` names everything the test creates on the server.
pub struct TestDb {
    /// Unique per test: `t<hex>`.
    pub prefix: String,
    pub name: String,
    pub url: String,
}

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

async fn admin() -> Option<tokio_postgres::Client> {
    let url = server_url();
    let connect = tokio_postgres::connect(&url, tokio_postgres::NoTls);
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok((client, conn))) => {
            tokio::spawn(conn);
            Some(client)
        }
        outcome => {
            let why = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".to_owned(),
            };
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("PostgreSQL at {url} is unreachable under CI=true: {why}");
            }
            eprintln!("NOTICE: skipping a PostgreSQL test: {url} is unreachable ({why})");
            None
        }
    }
}

impl TestDb {
    /// A fresh empty database, or `None` (test skipped) where PostgreSQL is unreachable.
    pub async fn create() -> Option<TestDb> {
        let client = admin().await?;
        let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let name = format!("{prefix}_main");
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("creating the test database");
        Some(TestDb {
            url: url_with_database(&server_url(), &name),
            prefix,
            name,
        })
    }

    /// The URL of another database on the same server.
    pub fn url_of(&self, database: &str) -> String {
        url_with_database(&server_url(), database)
    }

    async fn cleanup(prefix: String) {
        let Some(client) = admin().await else { return };
        let pattern = format!("{prefix}%");
        let dbs = client
            .query(
                "SELECT datname FROM pg_database WHERE datname LIKE $1",
                &[&pattern],
            )
            .await
            .unwrap_or_default();
        for row in dbs {
            let db: String = row.get(0);
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
                .await;
        }
        let roles = client
            .query(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE $1",
                &[&pattern],
            )
            .await
            .unwrap_or_default();
        for row in roles {
            let role: String = row.get(0);
            let _ = client
                .batch_execute(&format!("DROP ROLE IF EXISTS \"{role}\""))
                .await;
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let prefix = self.prefix.clone();
        // A runtime of its own: the test's runtime may be shutting down.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(TestDb::cleanup(prefix));
            }
        })
        .join();
    }
}
