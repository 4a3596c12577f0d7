//! PostgreSQL for tests (DESIGN §10): each test gets its own uniquely named database (and
//! a unique prefix for any database or role it creates), dropped when the value drops.
//! Where PostgreSQL is unreachable the test is skipped with a notice, except under
//! `CI=true`, where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code
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

/// A TCP proxy in front of the test server that a test can cut (every connection through
/// it closed, new ones refused) and start again on the same port: PostgreSQL "stops"
/// mid-traffic without disturbing the other tests that use it.
pub struct Proxy {
    pub port: u16,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    /// Listens on `port` (0: any) of 127.0.0.1, forwarding to the test server.
    pub async fn start(port: u16) -> Proxy {
        let upstream = server_address();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (stop, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut cut = rx.clone();
            loop {
                tokio::select! {
                    _ = cut.changed() => break,
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { break };
                        let mut cut = rx.clone();
                        let upstream = upstream.clone();
                        tokio::spawn(async move {
                            let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await
                            else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = cut.changed() => {}
                            }
                        });
                    }
                }
            }
        });
        Proxy { port, stop }
    }

    /// Closes every connection through the proxy and stops listening.
    pub fn cut(&self) {
        let _ = self.stop.send(true);
    }
}

/// `host:port` of the test server.
fn server_address() -> String {
    let config: tokio_postgres::Config = server_url().parse().expect("a PostgreSQL URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}
