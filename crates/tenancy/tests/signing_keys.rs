//! Access-token signing keys at rest: sealed with the secret key in both catalogs, keys an
//! older version stored in clear sealed at start-up, and tokens valid across restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common {
    pub mod pg;
}

use std::path::Path;

use common::pg::TestDb;
use tenancy::secrets::SecretKey;
use tenancy::{Engine, EngineConfig};

const PW: &str = "lok'tar ogar 42";
const LEGACY: &str = "abababababababababababababababababababababababababababababababab";

/// Where the catalog is: the data folder's SQLite file, or a PostgreSQL database.
enum Where<'a> {
    Sqlite(&'a Path),
    Pg(&'a str),
}

impl Where<'_> {
    async fn secrets(&self) -> Vec<String> {
        match self {
            Where::Sqlite(dir) => {
                let conn = tenancy::rusqlite::Connection::open(dir.join("catalog.db")).unwrap();
                let mut stmt = conn.prepare("SELECT secret FROM signing_keys").unwrap();
                stmt.query_map([], |r| r.get(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            }
            Where::Pg(url) => client(url)
                .await
                .query("SELECT secret FROM signing_keys", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect(),
        }
    }

    /// Makes the current key a clear one, as an older version stored it.
    async fn store_in_clear(&self, secret_hex: &str) {
        let sql = "UPDATE signing_keys SET secret = $1 WHERE retired_at IS NULL";
        match self {
            Where::Sqlite(dir) => {
                let conn = tenancy::rusqlite::Connection::open(dir.join("catalog.db")).unwrap();
                conn.execute(&sql.replace("$1", "?1"), [secret_hex])
                    .unwrap();
            }
            Where::Pg(url) => {
                client(url)
                    .await
                    .execute(sql, &[&secret_hex])
                    .await
                    .unwrap();
            }
        }
    }
}

async fn client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

async fn keys_are_sealed_and_survive_restarts(config: EngineConfig, at: Where<'_>) {
    let key = config.secret_key.clone().unwrap();
    let engine = Engine::open(config.clone()).await.unwrap();
    engine.create_user("a@b.co", PW, false).await.unwrap();
    let first = engine.login("a@b.co", PW, None, None).await.unwrap();
    engine.rotate_signing_key().await.unwrap();
    let second = engine.login("a@b.co", PW, None, None).await.unwrap();
    drop(engine);

    let stored = at.secrets().await;
    assert_eq!(stored.len(), 2);
    for secret in &stored {
        assert!(secret.starts_with("sealed:v1:"), "{secret}");
        let clear = key.open(secret).unwrap();
        assert_eq!(clear.len(), 64, "the sealed key is the hex secret");
        assert!(!secret.contains(&clear));
    }

    // A restart keeps every issued token valid.
    let engine = Engine::open(config.clone()).await.unwrap();
    for session in [&first, &second] {
        engine
            .verify_access_token(&session.access_token)
            .await
            .unwrap();
    }
    drop(engine);

    // A key an older version stored in clear is sealed at start-up and keeps working.
    at.store_in_clear(LEGACY).await;
    let engine = Engine::open(config.clone()).await.unwrap();
    let legacy = engine.login("a@b.co", PW, None, None).await.unwrap();
    drop(engine);
    let stored = at.secrets().await;
    assert!(
        stored.iter().all(|s| s.starts_with("sealed:v1:")),
        "{stored:?}"
    );
    assert!(stored.iter().any(|s| key.open(s).unwrap() == LEGACY));
    let engine = Engine::open(config.clone()).await.unwrap();
    engine
        .verify_access_token(&legacy.access_token)
        .await
        .unwrap();
    drop(engine);

    // Another secret key cannot open them: refused at start, not silently replaced.
    let mut wrong = config;
    wrong.secret_key = Some(SecretKey::generate());
    let err = Engine::open(wrong).await.err().expect("wrong key refused");
    assert!(matches!(err, tenancy::Error::Secrets(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_are_sealed_in_the_sqlite_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(dir.path());
    config.secret_key = Some(SecretKey::generate());
    keys_are_sealed_and_survive_restarts(config, Where::Sqlite(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_are_sealed_in_the_postgres_catalog() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(dir.path());
    config.catalog_url = Some(db.url.clone());
    config.secret_key = Some(SecretKey::generate());
    keys_are_sealed_and_survive_restarts(config, Where::Pg(&db.url)).await;
}
