//! The bound on open tenant databases (`cache.max_open`), counted in the process's own
//! file table: every open tenant database holds a file descriptor on its `<id>.db`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tenancy::{CacheConfig, Engine, EngineConfig, Error, Slug};

fn slug(i: usize) -> Slug {
    Slug::parse(&format!("t{i}")).unwrap()
}

/// One pass over this process's file table: `(descriptor, target)` of every descriptor open
/// on a tenant database file under `tenants`.
fn scan(tenants: &Path) -> std::collections::HashSet<(std::ffi::OsString, PathBuf)> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Default::default();
    };
    entries
        .filter_map(|e| {
            let fd = e.ok()?;
            Some((fd.file_name(), std::fs::read_link(fd.path()).ok()?))
        })
        .filter(|(_, target)| {
            target.starts_with(tenants) && target.extension().is_some_and(|x| x == "db")
        })
        .collect()
}

/// Distinct tenant databases open at one instant, as far as the process's file table can
/// tell. One pass over `/proc/self/fd` is not a snapshot (a database closed early in the
/// pass and another opened late both show), so this counts the descriptors seen, on the
/// same file, in two passes one after the other: each was open from its reading in the
/// first pass to its reading in the second (short of a close and a reopen of the same file
/// on the same descriptor number in between), so all were open together at the instant
/// between the passes. Where one pass counted 9 and 10 against 8, a trace of every `openat`
/// and `close` of the same runs (`strace -f`) never had more than 8 open. SQLite keeps the descriptor of a connection closed while another
/// connection of the same file holds a lock (POSIX locks belong to the process), so one
/// database may briefly show two descriptors: databases are counted, not descriptors.
fn open_tenant_files(tenants: &Path) -> usize {
    let first = scan(tenants);
    let second = scan(tenants);
    first
        .intersection(&second)
        .map(|(_, target)| target)
        .collect::<std::collections::HashSet<_>>()
        .len()
}

async fn fleet(dir: &Path, cache: CacheConfig, tenants: usize) -> (Engine, PathBuf) {
    let mut config = EngineConfig::new(dir);
    config.cache = cache;
    let engine = Engine::open(config).await.unwrap();
    for i in 0..tenants {
        engine.create_tenant(slug(i), None).await.unwrap();
    }
    let tenants_dir = engine.store().dir().canonicalize().unwrap();
    (engine, tenants_dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_over_more_tenants_than_max_open_never_exceed_it() {
    const MAX_OPEN: u64 = 8;
    const TENANTS: usize = 40;
    const CLIENTS: usize = 32;
    const REQUESTS: usize = 25;
    if !Path::new("/proc/self/fd").is_dir() {
        eprintln!("skipped: no /proc/self/fd to count open files");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheConfig {
        max_open: MAX_OPEN,
        ..CacheConfig::default()
    };
    let (engine, tenants_dir) = fleet(dir.path(), cache, TENANTS).await;

    // The most tenant files seen open: sampled by a thread and by every request while it
    // holds its tenant's database.
    let most = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (most, done, tenants_dir) = (Arc::clone(&most), Arc::clone(&done), tenants_dir.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                most.fetch_max(open_tenant_files(&tenants_dir), Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(500));
            }
        })
    };
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let (engine, most, tenants_dir) = (engine.clone(), Arc::clone(&most), tenants_dir.clone());
        clients.spawn(async move {
            for r in 0..REQUESTS {
                let (most, tenants_dir) = (Arc::clone(&most), tenants_dir.clone());
                engine
                    .with_tenant_db(&slug((c * 7 + r * 13) % TENANTS), move |db| {
                        let n: i64 =
                            db.query_row("SELECT COUNT(*) FROM members", [], |r| r.get(0))?;
                        most.fetch_max(open_tenant_files(&tenants_dir), Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(2));
                        Ok(n)
                    })
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(client) = clients.join_next().await {
        client.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();

    let most = most.load(Ordering::Relaxed);
    assert!(most > 0, "no tenant file was ever seen open");
    assert!(
        most as u64 <= MAX_OPEN,
        "{most} tenant databases were open at once with cache.max_open = {MAX_OPEN}"
    );
    assert!(engine.store().open_handles() <= MAX_OPEN);
    assert!(open_tenant_files(&tenants_dir) as u64 <= MAX_OPEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_handle_is_in_use_opening_another_waits_then_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheConfig {
        max_open: 1,
        open_wait: Duration::from_millis(300),
        ..CacheConfig::default()
    };
    let (engine, tenants_dir) = fleet(dir.path(), cache, 2).await;

    // Tenant 0's request holds the only handle until told to finish.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (started, is_started) = tokio::sync::oneshot::channel::<()>();
    let holder = {
        let engine = engine.clone();
        tokio::spawn(async move {
            engine
                .with_tenant_db(&slug(0), move |_| {
                    started.send(()).unwrap();
                    held.recv().unwrap();
                    Ok(())
                })
                .await
        })
    };
    is_started.await.unwrap();
    let err = engine
        .with_tenant_db(&slug(1), |_| Ok(()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StoreBusy { .. }), "{err}");
    assert_eq!(open_tenant_files(&tenants_dir), 1);

    // Once tenant 0's request finishes, its handle closes and tenant 1 opens.
    release.send(()).unwrap();
    holder.await.unwrap().unwrap();
    engine.with_tenant_db(&slug(1), |_| Ok(())).await.unwrap();
    assert_eq!(engine.store().open_handles(), 1);
    engine.with_tenant_db(&slug(0), |_| Ok(())).await.unwrap();
    assert!(open_tenant_files(&tenants_dir) <= 1);
}
