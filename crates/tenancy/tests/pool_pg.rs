//! The connection budget of a PostgreSQL store shared by many hot tenant databases (the
//! policy of `store/pgpool.rs`): while the budget covers the hot databases their connections
//! are reused rather than closed and opened again; one hot database grows into the budget
//! once the others go cold; a database that becomes hot gets its share from a busy one;
//! idle connections close after the idle timeout. The budget itself and `StoreBusy` are
//! tested in `modes_pg.rs`. Each test has its own database (tests/common/pg.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common {
    pub mod pg;
}

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pg::TestDb;
use tenancy::store::HOT_WINDOW;
use tenancy::{Engine, EngineConfig, Error, Mode, PlaceOptions, Slug, StoreSpec, Tenant};

/// An engine whose store `pg` has a budget of `budget` connections and waits long for one
/// (a slow machine must not turn a fairness test into a `StoreBusy` one).
async fn engine(dir: &Path, db: &TestDb, budget: usize) -> Engine {
    let mut config = EngineConfig::new(dir);
    let mut store = StoreSpec::new("pg", db.url.clone());
    store.data_role = format!("{}_data", db.prefix);
    store.database_prefix = db.prefix.clone();
    store.limits.max_connections = budget;
    store.limits.acquire_timeout = Duration::from_secs(30);
    config.stores = vec![store];
    Engine::open(config).await.unwrap()
}

/// `n` tenants in `database` mode: a database each.
async fn databases(engine: &Engine, n: usize) -> Vec<Tenant> {
    let place = PlaceOptions {
        store: Some("pg".into()),
        mode: Some(Mode::Database),
        plan: None,
    };
    let mut tenants = Vec::new();
    for i in 0..n {
        let slug = Slug::parse(&format!("db{i}")).unwrap();
        tenants.push(
            engine
                .create_tenant_with(slug, None, None, &place)
                .await
                .unwrap(),
        );
    }
    tenants
}

/// One unit of work on the tenant's database, holding its connection for `hold`.
async fn work(engine: &Engine, tenant: &Tenant, hold: Duration) -> Result<(), Error> {
    let session = engine.session(tenant).await?;
    session
        .client()
        .query_one("SELECT pg_sleep($1)::text", &[&hold.as_secs_f64()])
        .await
        .map_err(|e| Error::TenantDb(e.to_string()))?;
    session.commit().await
}

/// Connections open to each of these databases, by the server's account.
async fn backends(db: &TestDb, tenants: &[Tenant]) -> Vec<i64> {
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut counts = Vec::new();
    for t in tenants {
        let n: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1",
                &[&t.placement.location],
            )
            .await
            .unwrap()
            .get(0);
        counts.push(n);
    }
    counts
}

/// The server's count once it settles (a closed connection's backend takes a moment to
/// exit), or the last one seen.
async fn settled_backends(db: &TestDb, tenants: &[Tenant], want: &[i64]) -> Vec<i64> {
    let mut seen = backends(db, tenants).await;
    for _ in 0..40 {
        if seen == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = backends(db, tenants).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_over_as_many_databases_as_connections_reuses_them() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    const BUDGET: usize = 6;
    let engine = engine(dir.path(), &db, BUDGET).await;
    let tenants = Arc::new(databases(&engine, BUDGET).await);
    let pools = Arc::clone(engine.pg_store("pg").unwrap().pools());
    let opened_before = pools.connections_opened();

    // 24 tasks, 50 units of work each, every one on the next database in turn: far more
    // work in flight than connections, and every database always busy.
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..24 {
        let (engine, tenants) = (engine.clone(), Arc::clone(&tenants));
        tasks.spawn(async move {
            for i in 0..50 {
                let t = &tenants[(task + i) % tenants.len()];
                work(&engine, t, Duration::ZERO).await?;
            }
            Ok::<_, Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    let opened = pools.connections_opened() - opened_before;
    // 1,200 units of work: one connection per database, and perhaps a few more while the
    // shares settle. (Closing another hot database's idle connection whenever a database
    // had none idle opened over 1,100.)
    assert!(
        opened <= (BUDGET + BUDGET / 2) as u64,
        "{opened} connections opened for 1,200 units of work on {BUDGET} databases"
    );
    assert!(pools.open_connections() <= BUDGET);
    // Every database kept its own connection, by the server's account too.
    let want = vec![1; BUDGET];
    assert_eq!(settled_backends(&db, &tenants, &want).await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_database_grows_into_the_budget_once_the_others_go_cold() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), &db, 4).await;
    let tenants = databases(&engine, 4).await;
    for t in &tenants {
        work(&engine, t, Duration::ZERO).await.unwrap();
    }
    assert_eq!(
        settled_backends(&db, &tenants, &[1, 1, 1, 1]).await,
        [1, 1, 1, 1]
    );

    // Twelve tasks on the first database until well after the others went cold.
    let until = Instant::now() + HOT_WINDOW + Duration::from_millis(1500);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let (engine, hot) = (engine.clone(), tenants[0].clone());
        tasks.spawn(async move {
            while Instant::now() < until {
                work(&engine, &hot, Duration::from_millis(10)).await?;
            }
            Ok::<_, Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    // It took the whole budget, from the cold databases' idle connections.
    let want = [4, 0, 0, 0];
    assert_eq!(settled_backends(&db, &tenants, &want).await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_becomes_hot_gets_its_share_from_a_busy_one() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), &db, 4).await;
    let tenants = databases(&engine, 2).await;
    let (busy, newcomer) = (tenants[0].clone(), tenants[1].clone());
    let served = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let until = Instant::now() + Duration::from_secs(3);

    // Eight tasks keep all four connections of the budget busy on the first database.
    let mut tasks = tokio::task::JoinSet::new();
    let spawn = |tasks: &mut tokio::task::JoinSet<Result<(), Error>>, t: Tenant, i: usize| {
        let (engine, served) = (engine.clone(), Arc::clone(&served));
        tasks.spawn(async move {
            while Instant::now() < until {
                work(&engine, &t, Duration::from_millis(50)).await?;
                served[i].fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
    };
    for _ in 0..8 {
        spawn(&mut tasks, busy.clone(), 0);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The newcomer's first unit of work waits about one of the busy database's, not the
    // acquire timeout.
    let started = Instant::now();
    work(&engine, &newcomer, Duration::ZERO).await.unwrap();
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(1), "waited {waited:?}");

    // Busy too from now on: the two share the budget.
    let counted_from = [0, 1].map(|i| served[i].load(Ordering::Relaxed));
    for _ in 0..8 {
        spawn(&mut tasks, newcomer.clone(), 1);
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    let [busy_served, newcomer_served] =
        [0, 1].map(|i| served[i].load(Ordering::Relaxed) - counted_from[i]);
    assert!(
        newcomer_served * 2 >= busy_served,
        "the newcomer did {newcomer_served} units of work, the busy one {busy_served}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_after_the_idle_timeout() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(dir.path());
    let mut store = StoreSpec::new("pg", db.url.clone());
    store.data_role = format!("{}_data", db.prefix);
    store.database_prefix = db.prefix.clone();
    store.limits.idle_timeout = Duration::from_millis(300);
    config.stores = vec![store];
    let engine = Engine::open(config).await.unwrap();
    let tenants = databases(&engine, 2).await;
    work(&engine, &tenants[0], Duration::ZERO).await.unwrap();
    assert_eq!(settled_backends(&db, &tenants, &[1, 0]).await, [1, 0]);
    // Idle connections are swept (at most once a second) when another comes back.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    work(&engine, &tenants[1], Duration::ZERO).await.unwrap();
    assert_eq!(settled_backends(&db, &tenants, &[0, 1]).await, [0, 1]);
}
