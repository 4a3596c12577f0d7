//! The data API's one path on PostgreSQL: keyset pages that an ordinary index serves in
//! every mode (read from `EXPLAIN`), and pipelined requests — context, statement and commit
//! sent together over pooled connections with cached statements — that never carry one
//! tenant's context into another's request, even when requests are cancelled mid-flight.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common {
    pub mod pg;
}

use std::sync::Arc;
use std::time::Duration;

use common::pg::TestDb;
use serde_json::{json, Value};
use tenancy::data::{parse_list, DataOp, DataOutput, Object};
use tenancy::{Engine, EngineConfig, Mode, PlaceOptions, Slug, StoreSpec, Tenant};

fn slug(s: &str) -> Slug {
    Slug::parse(s).unwrap()
}

fn config(dir: &std::path::Path, db: &TestDb, connections: usize) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    let mut store = StoreSpec::new("pg", db.url.clone());
    store.data_role = format!("{}_data", db.prefix);
    store.database_prefix = db.prefix.clone();
    store.limits.max_connections = connections;
    store.limits.acquire_timeout = Duration::from_secs(30);
    config.stores = vec![store];
    config
}

fn place(mode: Mode) -> PlaceOptions {
    PlaceOptions {
        store: Some("pg".into()),
        mode: Some(mode),
        plan: None,
    }
}

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn insert(engine: &Engine, tenant: &Tenant, rows: Vec<Object>) {
    let schema = engine.data_schema(tenant).await.unwrap();
    match engine
        .data(tenant, schema, "members".into(), DataOp::Insert(rows))
        .await
        .unwrap()
    {
        DataOutput::Rows(_) => {}
        _ => panic!("an insert answers rows"),
    }
}

async fn list(engine: &Engine, tenant: &Tenant, pairs: &[(&str, &str)]) -> tenancy::Result<Value> {
    let schema = engine.data_schema(tenant).await?;
    let table = schema.table("members")?;
    let q = parse_list(table, &params(pairs))?;
    match engine
        .data(
            tenant,
            Arc::clone(&schema),
            "members".into(),
            DataOp::List(q),
        )
        .await?
    {
        DataOutput::Page(page) => Ok(serde_json::to_value(page).unwrap()),
        _ => panic!("a listing answers a page"),
    }
}

fn member(i: usize, tag: &str) -> Object {
    json!({
        "id": format!("{tag}-{i:05}"),
        "name": format!("{tag} member {i:05}"),
        "dkp": (i * 7919) % 1000,
    })
    .as_object()
    .unwrap()
    .clone()
}

/// A tenant in `mode` and another beside it (shared tables hold both).
async fn two_tenants(engine: &Engine, mode: Mode, prefix: &str) -> (Tenant, Tenant) {
    let name = format!("{mode:?}").to_lowercase();
    let mut made = Vec::new();
    for which in ["a", "b"] {
        let slug = slug(&format!("{prefix}{which}-{name}"));
        made.push(
            engine
                .create_tenant_with(slug, None, None, &place(mode))
                .await
                .unwrap(),
        );
    }
    let other = made.pop().unwrap();
    (made.pop().unwrap(), other)
}

/// The plan of the listing, as one text.
async fn plan(engine: &Engine, tenant: &Tenant, pairs: &[(&str, &str)]) -> String {
    engine
        .explain_list(tenant, "members", &params(pairs))
        .await
        .unwrap()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyset_pages_are_index_scans_in_every_postgres_mode() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), &db, 8)).await.unwrap();
    for mode in [Mode::Database, Mode::Schema, Mode::Shared] {
        let name = format!("{mode:?}").to_lowercase();
        let (tenant, other) = two_tenants(&engine, mode, "ix").await;
        for chunk in 0..10 {
            let rows = (chunk * 1000..(chunk + 1) * 1000)
                .map(|i| member(i, "m"))
                .collect();
            insert(&engine, &tenant, rows).await;
            let rows = (chunk * 1000..(chunk + 1) * 1000)
                .map(|i| member(i, "o"))
                .collect();
            insert(&engine, &other, rows).await;
        }
        // Statistics, as autovacuum would gather them.
        let analyze = match mode {
            Mode::Database => db.url_of(&tenant.placement.location),
            _ => db.url.clone(),
        };
        let (client, conn) = tokio_postgres::connect(&analyze, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client.batch_execute("ANALYZE").await.unwrap();

        for order in ["id", "id.desc", "name", "dkp.desc", "dkp"] {
            // The second page of a listing: a keyset condition from the first page's cursor.
            let first = list(&engine, &tenant, &[("order", order), ("limit", "100")])
                .await
                .unwrap();
            let cursor = first["next"].as_str().unwrap().to_owned();
            let pairs = [
                ("order", order),
                ("limit", "100"),
                ("cursor", cursor.as_str()),
            ];
            let plan = plan(&engine, &tenant, &pairs).await;
            assert!(
                plan.contains("Index Scan") || plan.contains("Index Only Scan"),
                "{name}, order={order}: not an index scan:\n{plan}"
            );
            assert!(
                !plan.contains("Seq Scan"),
                "{name}, order={order}: a sequential scan:\n{plan}"
            );
            // And the page is the right one.
            let second = list(&engine, &tenant, &pairs).await.unwrap();
            assert_eq!(second["data"].as_array().unwrap().len(), 100);
        }
        // The default order (the primary key) needs no sort at all.
        let first = list(&engine, &tenant, &[("limit", "100")]).await.unwrap();
        let cursor = first["next"].as_str().unwrap().to_owned();
        let plan = plan(&engine, &tenant, &[("limit", "100"), ("cursor", &cursor)]).await;
        assert!(!plan.contains("Sort"), "{name}: sorted:\n{plan}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyset_page_on_sqlite_searches_its_index_too() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineConfig::new(dir.path())).await.unwrap();
    let tenant = engine.create_tenant(slug("lite"), None).await.unwrap();
    for chunk in 0..10 {
        let rows = (chunk * 1000..(chunk + 1) * 1000)
            .map(|i| member(i, "m"))
            .collect();
        insert(&engine, &tenant, rows).await;
    }
    for order in ["id", "name", "dkp.desc"] {
        let first = list(&engine, &tenant, &[("order", order), ("limit", "100")])
            .await
            .unwrap();
        let cursor = first["next"].as_str().unwrap().to_owned();
        let plan = plan(
            &engine,
            &tenant,
            &[("order", order), ("limit", "100"), ("cursor", &cursor)],
        )
        .await;
        assert!(plan.contains("USING"), "order={order}: no index:\n{plan}");
        assert!(
            !plan.starts_with("SCAN members\n") && plan != "SCAN members",
            "{plan}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_never_carry_a_tenants_context_to_another() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Few connections, many tenants: every connection serves many tenants in turn.
    let engine = Engine::open(config(dir.path(), &db, 4)).await.unwrap();
    let mut tenants = Vec::new();
    for i in 0..6 {
        let mode = [Mode::Schema, Mode::Shared, Mode::Database][i % 3];
        let tenant = engine
            .create_tenant_with(slug(&format!("p{i}")), None, None, &place(mode))
            .await
            .unwrap();
        let tag = format!("p{i}");
        insert(&engine, &tenant, (0..20).map(|j| member(j, &tag)).collect()).await;
        tenants.push(tenant);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..40 {
        for (i, t) in tenants.iter().enumerate() {
            let (engine, t) = (engine.clone(), t.clone());
            let tag = format!("p{i}");
            let task = tasks.spawn(async move {
                let page = match round % 4 {
                    // A write and a read in one request's worth of statements.
                    0 => {
                        let row = member(1000 + round, &tag);
                        insert(&engine, &t, vec![row]).await;
                        list(&engine, &t, &[("limit", "1000")]).await
                    }
                    1 => list(&engine, &t, &[("order", "name.desc"), ("count", "exact")]).await,
                    _ => list(&engine, &t, &[("dkp", "gte.0"), ("limit", "50")]).await,
                };
                let page = page.unwrap();
                for row in page["data"].as_array().unwrap() {
                    let id = row["id"].as_str().unwrap();
                    assert!(id.starts_with(&format!("{tag}-")), "{tag} saw {id}");
                }
            });
            // Some requests are cancelled mid-flight: their connections must carry
            // nothing to the next checkout.
            if round % 5 == 3 {
                let abort = task;
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_micros(200 * (round as u64 % 7))).await;
                    abort.abort();
                });
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            assert!(e.is_cancelled(), "{e}");
        }
    }
    // Every tenant still sees exactly its own rows.
    for (i, t) in tenants.iter().enumerate() {
        let page = list(&engine, t, &[("limit", "1000")]).await.unwrap();
        let tag = format!("p{i}-");
        for row in page["data"].as_array().unwrap() {
            assert!(row["id"].as_str().unwrap().starts_with(&tag));
        }
    }
    assert!(engine.pg_store("pg").unwrap().pools().open_connections() <= 4);
}

/// What a statement in a tenant's session may do as the data role, and the error it gets.
async fn try_sql(engine: &Engine, tenant: &Tenant, sql: &str) -> Result<(), String> {
    let session = engine.session(tenant).await.unwrap();
    let outcome = session.client().batch_execute(sql).await;
    match outcome {
        Ok(()) => {
            session.commit().await.unwrap();
            Ok(())
        }
        Err(e) => Err(e
            .as_db_error()
            .map_or_else(|| e.to_string(), |d| d.code().code().to_owned())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_role_reaches_nothing_outside_its_tenant() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), &db, 8)).await.unwrap();
    for mode in [Mode::Database, Mode::Schema, Mode::Shared] {
        let name = format!("{mode:?}").to_lowercase();
        let (tenant, other) = two_tenants(&engine, mode, "lp").await;
        insert(&engine, &other, vec![member(1, "other")]).await;
        // Its own tables: read and write.
        try_sql(
            &engine,
            &tenant,
            "INSERT INTO members (id, name) VALUES ('a', 'Ada')",
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: writing its own table: {e}"));
        try_sql(
            &engine,
            &tenant,
            "UPDATE members SET dkp = 5; DELETE FROM members WHERE id = 'a'",
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: changing its own rows: {e}"));
        // No DDL, no ledger, nothing of another tenant.
        let refused = [
            "CREATE TABLE evil (x int)",
            "CREATE TABLE public.evil (x int)",
            "DROP TABLE bids",
            "ALTER TABLE members ADD COLUMN evil int",
            "CREATE INDEX evil ON members (class)",
            "DELETE FROM _tenancy_migrations",
            "INSERT INTO _tenancy_migrations (version, name, checksum) VALUES (99, 'x', 'x')",
        ];
        for sql in refused {
            let outcome = try_sql(&engine, &tenant, sql).await;
            assert!(outcome.is_err(), "{name}: {sql} was allowed");
        }
        // Another schema's table: refused outright in schema mode (its own role has no
        // privilege there); in shared mode the rows stay invisible; a database is its own.
        let other_rows = match mode {
            Mode::Schema => format!("SELECT 1 FROM \"{}\".members", other.placement.location),
            _ => "SELECT 1 FROM members WHERE id = 'other-00001'".to_owned(),
        };
        let session = engine.session(&tenant).await.unwrap();
        match session.client().query(&other_rows, &[]).await {
            Ok(rows) => assert!(rows.is_empty(), "{name}: saw another tenant's rows"),
            Err(e) => assert_eq!(
                e.as_db_error().map(|d| d.code().code()),
                Some("42501"),
                "{name}: {e}"
            ),
        }
        drop(session);
        // As whom: the tenant's own role in schema mode, the data role otherwise.
        let session = engine.session(&tenant).await.unwrap();
        let user: String = session
            .client()
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        let expected = match mode {
            Mode::Schema => format!("{}_{}", db.prefix, tenant.placement.location),
            _ => format!("{}_data", db.prefix),
        };
        assert_eq!(user, expected, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_from_before_tenant_roles_is_granted_on_first_use() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), &db, 8)).await.unwrap();
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    for mode in [Mode::Database, Mode::Schema] {
        let name = format!("{mode:?}").to_lowercase();
        let tenant = engine
            .create_tenant_with(slug(&format!("old-{name}")), None, None, &place(mode))
            .await
            .unwrap();
        // As an older version left it: no tenant role, no grants to the data role.
        let data_role = format!("{}_data", db.prefix);
        match mode {
            Mode::Schema => {
                let role = format!("{}_{}", db.prefix, tenant.placement.location);
                client
                    .batch_execute(&format!(
                        "REVOKE ALL ON ALL TABLES IN SCHEMA \"{s}\" FROM \"{role}\"; \
                         REVOKE ALL ON SCHEMA \"{s}\" FROM \"{role}\"; DROP ROLE \"{role}\"",
                        s = tenant.placement.location
                    ))
                    .await
                    .unwrap();
            }
            _ => {
                let (tenant_db, conn) = tokio_postgres::connect(
                    &db.url_of(&tenant.placement.location),
                    tokio_postgres::NoTls,
                )
                .await
                .unwrap();
                tokio::spawn(conn);
                tenant_db
                    .batch_execute(&format!(
                        "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM \"{data_role}\""
                    ))
                    .await
                    .unwrap();
            }
        }
        // A new engine (no connection or statement that remembers anything).
        let engine = Engine::open(config(dir.path(), &db, 8)).await.unwrap();
        insert(&engine, &tenant, vec![member(1, "old")]).await;
        let page = list(&engine, &tenant, &[]).await.unwrap();
        assert_eq!(page["data"].as_array().unwrap().len(), 1, "{name}");
    }
}

/// What `Engine::query` answers for bad statements, in each backend.
async fn bad_statements_are_refused_clearly(engine: &Engine, tenant: &Tenant, name: &str) {
    use tenancy::data::value::Value;
    use tenancy::Error;
    let q = |sql: &'static str, params: Vec<Value>| engine.query(tenant, sql, params);
    let row = q(
        "INSERT INTO members (id, name, dkp) VALUES ($1, $2, $3) RETURNING id, dkp",
        vec![
            Value::Text("q1".into()),
            Value::Text("Quin".into()),
            Value::Integer(7),
        ],
    )
    .await
    .unwrap();
    assert_eq!(row[0]["dkp"], 7, "{name}");
    let read = q(
        "SELECT name FROM members WHERE id = $1",
        vec![Value::Text("q1".into())],
    )
    .await
    .unwrap();
    assert_eq!(read[0]["name"], "Quin", "{name}");
    // A constraint names itself; nothing is written.
    match q(
        "INSERT INTO members (id, name) VALUES ($1, $2)",
        vec![Value::Text("q2".into()), Value::Text("Quin".into())],
    )
    .await
    {
        Err(Error::ConstraintViolation { constraint, .. }) => {
            assert!(constraint.contains("name"), "{name}: {constraint}")
        }
        other => panic!("{name}: {other:?}"),
    }
    for (sql, params) in [
        ("SELEKT 1", vec![]),
        ("SELECT * FROM no_such_table", vec![]),
        ("SELECT name FROM members WHERE id = $1", vec![]),
        ("SELECT 1", vec![Value::Integer(1), Value::Integer(2)]),
    ] {
        match q(sql, params).await {
            Err(Error::InvalidInput(_)) => {}
            other => panic!("{name}: {sql}: {other:?}"),
        }
    }
    let count = q("SELECT COUNT(*) AS n FROM members", vec![])
        .await
        .unwrap();
    assert_eq!(count[0]["n"], 1, "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applications_own_statement_is_refused_clearly_when_bad() {
    let dir = tempfile::tempdir().unwrap();
    let lite = Engine::open(EngineConfig::new(dir.path().join("lite")))
        .await
        .unwrap();
    let tenant = lite.create_tenant(slug("q-lite"), None).await.unwrap();
    bad_statements_are_refused_clearly(&lite, &tenant, "sqlite").await;
    let Some(db) = TestDb::create().await else {
        return;
    };
    let engine = Engine::open(config(&dir.path().join("pg"), &db, 8))
        .await
        .unwrap();
    for mode in [Mode::Database, Mode::Schema, Mode::Shared] {
        let (tenant, _) = two_tenants(&engine, mode, "q").await;
        bad_statements_are_refused_clearly(&engine, &tenant, &format!("{mode:?}")).await;
    }
}
