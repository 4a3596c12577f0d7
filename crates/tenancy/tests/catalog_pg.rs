//! The catalog on PostgreSQL, through the `Catalog` trait: the same behaviour as the SQLite
//! catalog, and safe for several processes (here: several `PgCatalog` values) on one
//! database. Each test gets its own database (see `common/pg.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common {
    pub mod pg;
}

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::pg::TestDb;
use tenancy::catalog::postgres::PgCatalog;
use tenancy::catalog::{
    Catalog, NewApiKey, NewInvitation, NewRefreshToken, NewTenant, NewUser, TenantFilter,
    TenantMigrationResult, Transition,
};
use tenancy::identity::RefreshUse;
use tenancy::migrations::Script;
use tenancy::{Dialect, Error, Mode, Placement, Role, Slug, Tenant, TenantId, TenantStatus, User};

/// A fresh database, or return from the test (PostgreSQL unreachable: skipped).
macro_rules! test_db {
    () => {
        match TestDb::create().await {
            Some(db) => db,
            None => return,
        }
    };
}

async fn connect(db: &TestDb) -> PgCatalog {
    PgCatalog::connect(&db.url).await.unwrap()
}

async fn raw(db: &TestDb) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

fn slug(s: &str) -> Slug {
    Slug::parse(s).unwrap()
}

fn new_tenant(s: &str) -> NewTenant {
    let id = TenantId::generate();
    NewTenant {
        id,
        slug: slug(s),
        name: format!("Tenant {s}"),
        placement: Placement {
            store: "main".into(),
            mode: Mode::Database,
            location: format!("{id}.db"),
            schema_version: 0,
        },
        owner: None,
        plan: None,
    }
}

fn transition<'a>(
    t: &Tenant,
    from: &'a [TenantStatus],
    to: TenantStatus,
    event: &'a str,
) -> Transition<'a> {
    Transition {
        id: t.id,
        from,
        to,
        expect_owner: None,
        new_owner: None,
        error: None,
        schema_version: None,
        event,
    }
}

async fn activate(cat: &PgCatalog, t: &Tenant) -> Tenant {
    let mut tr = transition(
        t,
        &[TenantStatus::Provisioning],
        TenantStatus::Active,
        "provision.done",
    );
    tr.expect_owner = Some(cat.owner());
    cat.transition(tr).await.unwrap()
}

async fn delete(cat: &PgCatalog, t: &Tenant) {
    let statuses = [TenantStatus::Active, TenantStatus::Suspended];
    cat.transition(transition(
        t,
        &statuses,
        TenantStatus::Deleted,
        "delete.done",
    ))
    .await
    .unwrap();
}

async fn add_user(cat: &PgCatalog, email: &str) -> User {
    cat.insert_user(&new_user(email), None).await.unwrap()
}

fn new_user(email: &str) -> NewUser {
    NewUser {
        id: tenancy::UserId::generate(),
        email: email.into(),
        password_hash: "$argon2id$hash".into(),
        is_superadmin: false,
    }
}

fn new_key(id: &str, tenant: Option<TenantId>) -> NewApiKey {
    NewApiKey {
        id: id.into(),
        tenant_id: tenant,
        role: if tenant.is_some() {
            "admin"
        } else {
            "superadmin"
        }
        .into(),
        label: None,
        secret_hash: format!("hash-of-{id}"),
        created_by: "test".into(),
        expires_at: None,
        max: None,
    }
}

/// Polls `check` until it holds (failing after a generous deadline: this checks that it
/// happens, not how fast).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn tenants_are_inserted_read_and_listed() {
    let db = test_db!();
    let cat = connect(&db).await;
    let owner = add_user(&cat, "owner@example.com").await;

    let mut new = new_tenant("acme");
    new.owner = Some(owner.id);
    new.placement.schema_version = 3;
    let acme = cat.insert_tenant(&new).await.unwrap();
    assert_eq!(acme.id, new.id);
    assert_eq!(acme.slug, slug("acme"));
    assert_eq!(acme.name, "Tenant acme");
    assert_eq!(acme.status, TenantStatus::Provisioning);
    assert_eq!(acme.op_owner.as_deref(), Some(cat.owner()));
    assert_eq!(acme.placement, new.placement);
    assert_eq!(acme.error, None);
    assert_eq!(
        cat.membership_role(acme.id, owner.id).await.unwrap(),
        Some(Role::Owner)
    );

    assert_eq!(cat.tenant(acme.id).await.unwrap(), Some(acme.clone()));
    assert_eq!(
        cat.tenant_by_slug(&slug("acme")).await.unwrap(),
        Some(acme.clone())
    );
    assert_eq!(cat.tenant(TenantId::generate()).await.unwrap(), None);
    assert_eq!(cat.tenant_by_slug(&slug("nobody")).await.unwrap(), None);

    // Byte order, as in SQLite: "a-c" before "ab".
    for s in ["ab", "a-c", "zeta"] {
        cat.insert_tenant(&new_tenant(s)).await.unwrap();
    }
    let all = cat.list_tenants(&TenantFilter::default()).await.unwrap();
    let slugs: Vec<&str> = all.iter().map(|t| t.slug.as_str()).collect();
    assert_eq!(slugs, ["a-c", "ab", "acme", "zeta"]);

    let zeta = all.iter().find(|t| t.slug.as_str() == "zeta").unwrap();
    activate(&cat, zeta).await;
    let active = cat
        .list_tenants(&TenantFilter {
            statuses: Some(vec![TenantStatus::Active]),
            ..TenantFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].slug.as_str(), "zeta");
    let below = cat
        .list_tenants(&TenantFilter {
            schema_below: Some(3),
            ..TenantFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(below.len(), 3, "acme is at version 3");

    delete(&cat, &cat.tenant(zeta.id).await.unwrap().unwrap()).await;
    assert_eq!(
        cat.list_tenants(&TenantFilter::default())
            .await
            .unwrap()
            .len(),
        3
    );
    let with_deleted = TenantFilter {
        include_deleted: true,
        ..TenantFilter::default()
    };
    assert_eq!(cat.list_tenants(&with_deleted).await.unwrap().len(), 4);

    let counts = cat.status_counts().await.unwrap();
    let summary: Vec<(TenantStatus, i64, u64)> = counts
        .iter()
        .map(|c| (c.status, c.schema_version, c.count))
        .collect();
    assert_eq!(
        summary,
        [
            (TenantStatus::Provisioning, 0, 2),
            (TenantStatus::Provisioning, 3, 1)
        ]
    );

    let journal = cat.journal(acme.id).await.unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].event, "provision.begin");
    assert_eq!(journal[0].from_status, None);
    assert_eq!(journal[0].to_status, "provisioning");
    assert_eq!(journal[0].owner.as_deref(), Some(cat.owner()));
}

#[tokio::test]
async fn a_slug_is_unique_among_live_tenants() {
    let db = test_db!();
    let cat = connect(&db).await;
    let first = cat.insert_tenant(&new_tenant("acme")).await.unwrap();
    match cat.insert_tenant(&new_tenant("acme")).await {
        Err(Error::TenantExists { slug }) => assert_eq!(slug, "acme"),
        other => panic!("expected TenantExists, got {other:?}"),
    }
    // Deleting frees the slug.
    let first = activate(&cat, &first).await;
    delete(&cat, &first).await;
    let second = cat.insert_tenant(&new_tenant("acme")).await.unwrap();
    assert_ne!(second.id, first.id);
    assert_eq!(
        cat.tenant_by_slug(&slug("acme"))
            .await
            .unwrap()
            .map(|t| t.id),
        Some(second.id)
    );
    // The deleted one is still there by id.
    let deleted = cat.tenant(first.id).await.unwrap().unwrap();
    assert_eq!(deleted.status, TenantStatus::Deleted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_twenty_concurrent_inserts_of_one_slug_on_two_catalogs_exactly_one_wins() {
    let db = test_db!();
    let a = Arc::new(connect(&db).await);
    let b = Arc::new(connect(&db).await);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let cat = Arc::clone(if i % 2 == 0 { &a } else { &b });
            tokio::spawn(async move { cat.insert_tenant(&new_tenant("contested")).await })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(Error::TenantExists { slug }) => assert_eq!(slug, "contested"),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(
        a.list_tenants(&TenantFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
}

/// event, from, to, owner, detail
type JournalLine<'a> = (
    &'a str,
    Option<&'a str>,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
);

#[tokio::test]
async fn transitions_are_compare_and_set_and_journaled() {
    let db = test_db!();
    let cat = connect(&db).await;
    let other = connect(&db).await;
    let t = cat.insert_tenant(&new_tenant("acme")).await.unwrap();

    // Another owner's operation: busy.
    let mut tr = transition(
        &t,
        &[TenantStatus::Provisioning],
        TenantStatus::Active,
        "provision.done",
    );
    tr.expect_owner = Some(other.owner());
    match cat.transition(tr).await {
        Err(Error::TenantBusy { slug, status }) => {
            assert_eq!((slug.as_str(), status.as_str()), ("acme", "provisioning"));
        }
        other => panic!("expected TenantBusy, got {other:?}"),
    }

    // Wrong status.
    match cat
        .transition(transition(
            &t,
            &[TenantStatus::Failed],
            TenantStatus::Provisioning,
            "retry.begin",
        ))
        .await
    {
        Err(Error::InvalidTransition {
            slug,
            status,
            action,
            expected,
        }) => {
            assert_eq!(slug, "acme");
            assert_eq!(status, "provisioning");
            assert_eq!(action, "retry");
            assert_eq!(expected, "failed");
        }
        other => panic!("expected InvalidTransition, got {other:?}"),
    }

    // Failing records the error; the owner is kept for the journal.
    let mut tr = transition(
        &t,
        &[TenantStatus::Provisioning],
        TenantStatus::Failed,
        "provision.failed",
    );
    tr.expect_owner = Some(cat.owner());
    tr.error = Some("disk full".into());
    let failed = cat.transition(tr).await.unwrap();
    assert_eq!(failed.status, TenantStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("disk full"));
    assert_eq!(failed.op_owner, None);

    // Retry by another owner: nobody owns a failed tenant, so it applies.
    let mut tr = transition(
        &t,
        &[TenantStatus::Failed],
        TenantStatus::Provisioning,
        "retry.begin",
    );
    tr.expect_owner = Some(other.owner());
    tr.new_owner = Some(other.owner());
    let retried = cat.transition(tr).await.unwrap();
    assert_eq!(retried.error, None, "a transition clears the error");
    assert_eq!(retried.op_owner.as_deref(), Some(other.owner()));

    let mut tr = transition(
        &t,
        &[TenantStatus::Provisioning],
        TenantStatus::Active,
        "provision.done",
    );
    tr.expect_owner = Some(other.owner());
    tr.schema_version = Some(4);
    let active = cat.transition(tr).await.unwrap();
    assert_eq!(active.status, TenantStatus::Active);
    assert_eq!(active.placement.schema_version, 4);
    assert!(active.updated_at >= t.updated_at);

    let journal = cat.journal(t.id).await.unwrap();
    let lines: Vec<JournalLine<'_>> = journal
        .iter()
        .map(|j| {
            (
                j.event.as_str(),
                j.from_status.as_deref(),
                j.to_status.as_str(),
                j.owner.as_deref(),
                j.detail.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            (
                "provision.begin",
                None,
                "provisioning",
                Some(cat.owner()),
                None
            ),
            (
                "provision.failed",
                Some("provisioning"),
                "failed",
                Some(cat.owner()),
                Some("disk full")
            ),
            (
                "retry.begin",
                Some("failed"),
                "provisioning",
                Some(other.owner()),
                None
            ),
            (
                "provision.done",
                Some("provisioning"),
                "active",
                Some(other.owner()),
                None
            ),
        ]
    );
    assert!(journal.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(journal.iter().all(|j| j.tenant_id == t.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_transitions_from_one_status_exactly_one_applies() {
    let db = test_db!();
    let a = Arc::new(connect(&db).await);
    let b = Arc::new(connect(&db).await);
    let t = a.insert_tenant(&new_tenant("acme")).await.unwrap();
    let t = activate(&a, &t).await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let cat = Arc::clone(if i % 2 == 0 { &a } else { &b });
            let t = t.clone();
            tokio::spawn(async move {
                cat.transition(transition(
                    &t,
                    &[TenantStatus::Active],
                    TenantStatus::Suspended,
                    "suspend",
                ))
                .await
            })
        })
        .collect();
    let mut applied = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(t) => {
                assert_eq!(t.status, TenantStatus::Suspended);
                applied += 1;
            }
            Err(Error::InvalidTransition { status, .. }) => assert_eq!(status, "suspended"),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(applied, 1);
    let suspends = a
        .journal(t.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.event == "suspend")
        .count();
    assert_eq!(suspends, 1);
}

#[tokio::test]
async fn schema_versions_only_rise() {
    let db = test_db!();
    let cat = connect(&db).await;
    let t = cat.insert_tenant(&new_tenant("acme")).await.unwrap();
    cat.set_schema_version(t.id, 5).await.unwrap();
    cat.set_schema_version(t.id, 2).await.unwrap();
    let t = cat.tenant(t.id).await.unwrap().unwrap();
    assert_eq!(t.placement.schema_version, 5);
}

#[tokio::test]
async fn a_fleet_lock_holds_across_catalogs_until_its_owner_is_gone() {
    let db = test_db!();
    let a = connect(&db).await;
    let b = connect(&db).await;

    b.acquire_lock("migrate").await.unwrap();
    match a.acquire_lock("migrate").await {
        Err(Error::OperationInProgress {
            operation, owner, ..
        }) => {
            assert_eq!(operation, "migrate");
            assert_eq!(owner, std::process::id().to_string());
        }
        other => panic!("expected OperationInProgress, got {other:?}"),
    }
    // Not re-entrant, as in SQLite.
    assert!(matches!(
        b.acquire_lock("migrate").await,
        Err(Error::OperationInProgress { .. })
    ));
    // Other names are other locks.
    a.acquire_lock("backup").await.unwrap();
    // Only the holder releases.
    a.release_lock("migrate").await.unwrap();
    assert!(a.acquire_lock("migrate").await.is_err());

    b.release_lock("migrate").await.unwrap();
    a.acquire_lock("migrate").await.unwrap();
    a.release_lock("migrate").await.unwrap();

    b.acquire_lock("migrate").await.unwrap();
    drop(b);
    eventually("the dead owner's lock is taken over", || async {
        a.acquire_lock("migrate").await.is_ok()
    })
    .await;
    assert!(a.acquire_lock("migrate").await.is_err(), "a holds it now");
}

/// Set for the child process of `a_killed_process_is_dead_and_its_lock_is_taken_over`.
const CHILD_URL: &str = "TENANCY_TEST_CATALOG_CHILD_URL";

/// Not a test: the child process of `a_killed_process_is_dead_and_its_lock_is_taken_over`
/// (this test binary, run again). Takes the lock, says who it is, and waits to be killed.
#[tokio::test]
#[ignore = "run as a child process by another test"]
async fn child_that_holds_the_migrate_lock() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let cat = PgCatalog::connect(&url).await.unwrap();
    cat.acquire_lock("migrate").await.unwrap();
    println!("OWNER {}", cat.owner());
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test]
async fn a_killed_process_is_dead_and_its_lock_is_taken_over() {
    use tokio::io::AsyncBufReadExt;

    let db = test_db!();
    let cat = connect(&db).await;
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_that_holds_the_migrate_lock",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_URL, &db.url)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let owner = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(owner) = line.strip_prefix("OWNER ") {
                return owner.to_owned();
            }
        }
        panic!("the child ended without taking the lock");
    })
    .await
    .expect("the child did not take the lock");

    assert!(cat.is_alive(&owner).await.unwrap());
    match cat.acquire_lock("migrate").await {
        Err(Error::OperationInProgress { owner: pid, .. }) => {
            assert_eq!(pid, child.id().unwrap().to_string());
        }
        other => panic!("expected OperationInProgress, got {other:?}"),
    }

    child.kill().await.unwrap(); // SIGKILL: no destructor runs.
    eventually("the killed process is dead", || async {
        !cat.is_alive(&owner).await.unwrap()
    })
    .await;
    cat.acquire_lock("migrate").await.unwrap();
}

#[tokio::test]
async fn liveness_is_seen_across_catalogs() {
    let db = test_db!();
    let a = connect(&db).await;
    let b = connect(&db).await;
    assert_ne!(a.owner(), b.owner());
    assert!(a.is_alive(a.owner()).await.unwrap());
    assert!(a.is_alive(b.owner()).await.unwrap());
    assert!(b.is_alive(a.owner()).await.unwrap());
    // Checking twice (or at once from both sides) changes nothing.
    let (x, y) = tokio::join!(a.is_alive(b.owner()), a.is_alive(b.owner()));
    assert!(x.unwrap() && y.unwrap());
    assert!(!a
        .is_alive("1234-0190aa00bb00cc00dd00ee00ff001122")
        .await
        .unwrap());
    assert!(!a.is_alive("").await.unwrap());
    assert!(!a.is_alive("it's \"odd\" \\ owner").await.unwrap());

    let b_owner = b.owner().to_owned();
    drop(b);
    eventually("a dropped catalog is dead", || async {
        !a.is_alive(&b_owner).await.unwrap()
    })
    .await;
    assert!(a.is_alive(a.owner()).await.unwrap());
}

#[tokio::test]
async fn generation_follows_own_writes_at_once_and_others_soon() {
    let db = test_db!();
    let a = connect(&db).await;
    let b = connect(&db).await;

    let g0 = a.generation().unwrap();
    assert_eq!(a.generation().unwrap(), g0, "stable while nothing changes");
    let t = a.insert_tenant(&new_tenant("acme")).await.unwrap();
    let g1 = a.generation().unwrap();
    assert_ne!(g1, g0, "own write: at once");

    a.tenant(t.id).await.unwrap();
    a.list_tenants(&TenantFilter::default()).await.unwrap();
    // A write that changes nothing is no change.
    a.set_schema_version(t.id, 0).await.unwrap();
    a.touch_api_keys(&[]).await.unwrap();
    assert_eq!(a.generation().unwrap(), g1, "reads and no-op writes");

    b.set_setting("theme", "dark").await.unwrap();
    eventually("a sees b's write", || async {
        a.generation().unwrap() != g1
    })
    .await;

    let g2 = b.generation().unwrap();
    a.set_schema_version(t.id, 1).await.unwrap();
    eventually("b sees a's write", || async {
        b.generation().unwrap() != g2
    })
    .await;
}

#[tokio::test]
async fn without_its_listener_generation_changes_on_every_call_until_it_reconnects() {
    let db = test_db!();
    let a = connect(&db).await;
    let admin = raw(&db).await;
    let killed = admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = 'tenancy catalog session'",
            &[&db.name],
        )
        .await
        .unwrap();
    assert_eq!(killed, 1);

    eventually("the lost listener is noticed", || async {
        a.generation().unwrap() != a.generation().unwrap()
    })
    .await;
    eventually("the listener is back", || async {
        a.generation().unwrap() == a.generation().unwrap()
    })
    .await;

    // Back to work: liveness lock retaken, notifications counted.
    let b = connect(&db).await;
    eventually("a is alive again", || async {
        b.is_alive(a.owner()).await.unwrap()
    })
    .await;
    let g = a.generation().unwrap();
    b.set_setting("k", "v").await.unwrap();
    eventually("a sees b's write again", || async {
        a.generation().unwrap() != g
    })
    .await;
}

#[tokio::test]
async fn users_emails_are_taken_case_insensitively() {
    let db = test_db!();
    let cat = connect(&db).await;
    let mut new = new_user("Ada@Example.com");
    new.is_superadmin = true;
    let ada = cat.insert_user(&new, None).await.unwrap();
    assert_eq!(ada.email, "Ada@Example.com", "kept as typed");
    assert!(ada.is_superadmin);

    assert!(matches!(
        cat.insert_user(&new_user("ada@example.COM"), None).await,
        Err(Error::EmailTaken)
    ));
    let (found, hash) = cat.user_by_email("ada@example.com").await.unwrap().unwrap();
    assert_eq!(found, ada);
    assert_eq!(hash, "$argon2id$hash");
    assert_eq!(cat.user(ada.id).await.unwrap(), Some(ada));
    assert_eq!(cat.user_by_email("bob@example.com").await.unwrap(), None);
    assert_eq!(cat.user(tenancy::UserId::generate()).await.unwrap(), None);
}

#[tokio::test]
async fn invitations_are_redeemed_once_at_signup() {
    let db = test_db!();
    let cat = connect(&db).await;
    let t = cat.insert_tenant(&new_tenant("acme")).await.unwrap();
    let invite = |hash: &str, email: &str, expires_in: chrono::Duration| NewInvitation {
        token_hash: hash.into(),
        tenant_id: t.id,
        email_norm: email.into(),
        role: Role::Member,
        created_by: "test".into(),
        expires_at: Utc::now() + expires_in,
        max_members: None,
    };
    cat.insert_invitation(&invite(
        "inv-1",
        "bob@example.com",
        chrono::Duration::hours(1),
    ))
    .await
    .unwrap();
    cat.insert_invitation(&invite(
        "inv-old",
        "eve@example.com",
        chrono::Duration::hours(-1),
    ))
    .await
    .unwrap();

    // For another email: refused, and nobody is created.
    assert!(matches!(
        cat.insert_user(&new_user("mallory@example.com"), Some("inv-1"))
            .await,
        Err(Error::InvalidInvitation)
    ));
    assert_eq!(
        cat.user_by_email("mallory@example.com").await.unwrap(),
        None
    );
    // Expired, unknown.
    assert!(matches!(
        cat.insert_user(&new_user("eve@example.com"), Some("inv-old"))
            .await,
        Err(Error::InvalidInvitation)
    ));
    assert!(matches!(
        cat.insert_user(&new_user("eve@example.com"), Some("nope"))
            .await,
        Err(Error::InvalidInvitation)
    ));

    let bob = cat
        .insert_user(&new_user("Bob@example.com"), Some("inv-1"))
        .await
        .unwrap();
    assert_eq!(
        cat.membership_role(t.id, bob.id).await.unwrap(),
        Some(Role::Member)
    );
    let memberships = cat.memberships(bob.id).await.unwrap();
    assert_eq!(memberships.len(), 1);
    assert_eq!(memberships[0].slug, "acme");
    assert_eq!(memberships[0].name, "Tenant acme");
    assert_eq!(memberships[0].role, Role::Member);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_token_works_once() {
    let db = test_db!();
    let a = Arc::new(connect(&db).await);
    let b = Arc::new(connect(&db).await);
    let user = add_user(&a, "ada@example.com").await;
    let t = a.insert_tenant(&new_tenant("acme")).await.unwrap();
    let token = |hash: &str, family: &str, expires_in: chrono::Duration| NewRefreshToken {
        token_hash: hash.into(),
        family: family.into(),
        user_id: user.id,
        tenant_id: Some(t.id),
        expires_at: Utc::now() + expires_in,
    };
    let hour = chrono::Duration::hours(1);
    a.insert_refresh_token(&token("r1", "fam", hour))
        .await
        .unwrap();
    assert_eq!(
        a.use_refresh_token("r1").await.unwrap(),
        RefreshUse::Valid {
            user_id: user.id,
            tenant_id: Some(t.id),
            family: "fam".into()
        }
    );
    a.insert_refresh_token(&token("r2", "fam", hour))
        .await
        .unwrap();
    // Replaying r1 revokes the family: r2 too.
    assert_eq!(
        b.use_refresh_token("r1").await.unwrap(),
        RefreshUse::Replayed
    );
    assert_eq!(
        a.use_refresh_token("r2").await.unwrap(),
        RefreshUse::Replayed
    );

    assert_eq!(
        a.use_refresh_token("nope").await.unwrap(),
        RefreshUse::Invalid
    );
    a.insert_refresh_token(&token("old", "fam2", -hour))
        .await
        .unwrap();
    assert_eq!(
        a.use_refresh_token("old").await.unwrap(),
        RefreshUse::Invalid
    );

    // Logout revokes; unknown hashes are ignored.
    a.insert_refresh_token(&token("r3", "fam3", hour))
        .await
        .unwrap();
    a.revoke_refresh_token("r3").await.unwrap();
    a.revoke_refresh_token("unknown").await.unwrap();
    assert_eq!(
        a.use_refresh_token("r3").await.unwrap(),
        RefreshUse::Replayed
    );

    // Presented ten times at once, on two catalogs: valid exactly once.
    a.insert_refresh_token(&token("r4", "fam4", hour))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let cat = Arc::clone(if i % 2 == 0 { &a } else { &b });
            tokio::spawn(async move { cat.use_refresh_token("r4").await.unwrap() })
        })
        .collect();
    let mut valid = 0;
    for task in tasks {
        match task.await.unwrap() {
            RefreshUse::Valid { .. } => valid += 1,
            RefreshUse::Replayed => {}
            RefreshUse::Invalid => panic!("r4 is known and unexpired"),
        }
    }
    assert_eq!(valid, 1);
}

#[tokio::test]
async fn signing_keys_rotate() {
    let db = test_db!();
    let cat = connect(&db).await;
    let before = Utc::now() - chrono::Duration::seconds(5);
    cat.add_signing_key("k1", "aa").await.unwrap();
    cat.add_signing_key("k2", "bb").await.unwrap();
    assert_eq!(
        cat.signing_keys(before).await.unwrap(),
        [
            ("k2".to_owned(), "bb".to_owned()),
            ("k1".to_owned(), "aa".to_owned())
        ]
    );
    let later = Utc::now() + chrono::Duration::seconds(5);
    assert_eq!(
        cat.signing_keys(later).await.unwrap(),
        [("k2".to_owned(), "bb".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_keeps_its_last_owner() {
    let db = test_db!();
    let a = Arc::new(connect(&db).await);
    let b = Arc::new(connect(&db).await);
    let ada = add_user(&a, "ada@example.com").await;
    let bob = add_user(&a, "bob@example.com").await;
    let cy = add_user(&a, "Cy@example.com").await;
    let mut new = new_tenant("acme");
    new.owner = Some(ada.id);
    let t = a.insert_tenant(&new).await.unwrap();

    a.add_member(t.id, cy.id, Role::Viewer).await.unwrap();
    a.add_member(t.id, bob.id, Role::Admin).await.unwrap();
    assert!(matches!(
        a.add_member(t.id, bob.id, Role::Member).await,
        Err(Error::MemberExists)
    ));
    let members = a.members(t.id).await.unwrap();
    let listed: Vec<(&str, Role)> = members.iter().map(|m| (m.email.as_str(), m.role)).collect();
    assert_eq!(
        listed,
        [
            ("ada@example.com", Role::Owner),
            ("bob@example.com", Role::Admin),
            ("Cy@example.com", Role::Viewer)
        ]
    );

    assert!(matches!(
        a.set_member_role(t.id, ada.id, Role::Admin).await,
        Err(Error::LastOwner)
    ));
    assert!(matches!(
        a.remove_member(t.id, ada.id).await,
        Err(Error::LastOwner)
    ));
    assert!(a.set_member_role(t.id, ada.id, Role::Owner).await.unwrap());
    assert!(!a
        .set_member_role(t.id, tenancy::UserId::generate(), Role::Admin)
        .await
        .unwrap());
    assert!(!a
        .remove_member(t.id, tenancy::UserId::generate())
        .await
        .unwrap());
    assert!(a.remove_member(t.id, cy.id).await.unwrap());
    assert_eq!(a.membership_role(t.id, cy.id).await.unwrap(), None);

    // Two owners each demoted at once by another catalog: one stays.
    assert!(a.set_member_role(t.id, bob.id, Role::Owner).await.unwrap());
    let (x, y) = tokio::join!(
        tokio::spawn({
            let a = Arc::clone(&a);
            async move { a.set_member_role(t.id, ada.id, Role::Member).await }
        }),
        tokio::spawn({
            let b = Arc::clone(&b);
            async move { b.set_member_role(t.id, bob.id, Role::Member).await }
        }),
    );
    let outcomes = [x.unwrap(), y.unwrap()];
    assert_eq!(outcomes.iter().filter(|o| matches!(o, Ok(true))).count(), 1);
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Err(Error::LastOwner)))
            .count(),
        1
    );
    let owners = a
        .members(t.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.role == Role::Owner)
        .count();
    assert_eq!(owners, 1);

    // Memberships of deleted tenants are not listed.
    assert_eq!(a.memberships(bob.id).await.unwrap().len(), 1);
    let t = activate(&a, &t).await;
    delete(&a, &t).await;
    assert!(a.memberships(bob.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn api_keys_are_stored_listed_revoked_and_touched() {
    let db = test_db!();
    let cat = connect(&db).await;
    let t = cat.insert_tenant(&new_tenant("acme")).await.unwrap();
    let mut k1 = new_key("k1", Some(t.id));
    k1.label = Some("store:T01".into());
    k1.expires_at = Some(Utc::now() + chrono::Duration::days(30));
    let key = cat.insert_api_key(&k1).await.unwrap();
    assert_eq!(key.id, "k1");
    assert_eq!(key.tenant_id, Some(t.id));
    assert_eq!(key.role, "admin");
    assert_eq!(key.label.as_deref(), Some("store:T01"));
    assert!(key.expires_at.is_some());
    assert_eq!((key.revoked_at, key.last_used_at), (None, None));
    cat.insert_api_key(&new_key("k2", Some(t.id)))
        .await
        .unwrap();
    cat.insert_api_key(&new_key("p1", None)).await.unwrap();

    let (found, hash) = cat.api_key("k1").await.unwrap().unwrap();
    assert_eq!(found, key);
    assert_eq!(hash, "hash-of-k1");
    assert_eq!(cat.api_key("nope").await.unwrap(), None);

    let tenant_keys: Vec<String> = cat
        .api_keys(Some(t.id))
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(tenant_keys, ["k2", "k1"], "newest first");
    let platform: Vec<String> = cat
        .api_keys(None)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(platform, ["p1"]);

    // Revoking needs the right scope.
    assert!(!cat.revoke_api_key(None, "k1").await.unwrap());
    assert!(!cat.revoke_api_key(Some(t.id), "p1").await.unwrap());
    assert!(cat.revoke_api_key(Some(t.id), "k1").await.unwrap());
    assert!(cat.revoke_api_key(None, "p1").await.unwrap());
    let revoked = cat.api_key("k1").await.unwrap().unwrap().0.revoked_at;
    assert!(revoked.is_some());
    assert!(cat.revoke_api_key(Some(t.id), "k1").await.unwrap());
    assert_eq!(
        cat.api_key("k1").await.unwrap().unwrap().0.revoked_at,
        revoked
    );
    assert_eq!(cat.api_keys(Some(t.id)).await.unwrap().len(), 2);

    // Touches only move forward; the latest of a batch wins.
    let t0 = Utc::now() - chrono::Duration::minutes(10);
    let t1 = t0 + chrono::Duration::minutes(1);
    let t2 = t0 + chrono::Duration::minutes(2);
    cat.touch_api_keys(&[
        ("k2".into(), t1),
        ("k2".into(), t2),
        ("p1".into(), t1),
        ("gone".into(), t1),
    ])
    .await
    .unwrap();
    cat.touch_api_keys(&[("k2".into(), t0)]).await.unwrap();
    let last_used = |id: &'static str| {
        let cat = &cat;
        async move { cat.api_key(id).await.unwrap().unwrap().0.last_used_at }
    };
    assert_eq!(last_used("k2").await, Some(t2.trunc_micros()));
    assert_eq!(last_used("p1").await, Some(t1.trunc_micros()));
    assert_eq!(last_used("k1").await, None);
}

trait TruncMicros {
    fn trunc_micros(self) -> Self;
}

impl TruncMicros for chrono::DateTime<Utc> {
    /// PostgreSQL keeps microseconds.
    fn trunc_micros(self) -> Self {
        use chrono::SubsecRound;
        self.trunc_subsecs(6)
    }
}

#[tokio::test]
async fn domains_belong_to_one_live_tenant() {
    let db = test_db!();
    let cat = connect(&db).await;
    let acme = cat.insert_tenant(&new_tenant("acme")).await.unwrap();
    let other = cat.insert_tenant(&new_tenant("other")).await.unwrap();
    let names = |claims: Vec<tenancy::CustomDomain>| -> Vec<String> {
        claims.into_iter().map(|c| c.domain).collect()
    };
    let claim = cat
        .insert_domain(acme.id, "shop.acme.com", "t1")
        .await
        .unwrap();
    assert_eq!((claim.token.as_str(), claim.verified_at), ("t1", None));
    cat.insert_domain(acme.id, "acme.com", "t2").await.unwrap();
    assert!(matches!(
        cat.insert_domain(acme.id, "acme.com", "t3").await,
        Err(Error::DomainTaken)
    ));
    // Pending: another tenant may claim it too, and it names nobody.
    cat.insert_domain(other.id, "acme.com", "t4").await.unwrap();
    assert_eq!(cat.tenant_by_domain("acme.com").await.unwrap(), None);

    let verified = cat
        .verify_domain(acme.id, "acme.com")
        .await
        .unwrap()
        .unwrap();
    assert!(verified.verified_at.is_some());
    assert!(
        cat.domains(other.id).await.unwrap().is_empty(),
        "the rival claim is gone"
    );
    assert!(matches!(
        cat.insert_domain(other.id, "acme.com", "t5").await,
        Err(Error::DomainTaken)
    ));
    assert_eq!(cat.verify_domain(other.id, "acme.com").await.unwrap(), None);
    assert_eq!(
        names(cat.domains(acme.id).await.unwrap()),
        ["acme.com", "shop.acme.com"]
    );
    assert_eq!(
        cat.tenant_by_domain("acme.com")
            .await
            .unwrap()
            .map(|t| t.id),
        Some(acme.id)
    );
    assert_eq!(cat.tenant_by_domain("nope.com").await.unwrap(), None);
    assert!(!cat.remove_domain(other.id, "acme.com").await.unwrap());
    assert!(cat.remove_domain(acme.id, "shop.acme.com").await.unwrap());
    assert_eq!(names(cat.domains(acme.id).await.unwrap()), ["acme.com"]);

    // Deleted: the tenant's domains are released.
    let acme = activate(&cat, &acme).await;
    delete(&cat, &acme).await;
    assert_eq!(cat.tenant_by_domain("acme.com").await.unwrap(), None);
    assert!(cat.domains(acme.id).await.unwrap().is_empty());
    cat.insert_domain(other.id, "acme.com", "t6").await.unwrap();
    cat.verify_domain(other.id, "acme.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        cat.tenant_by_domain("acme.com")
            .await
            .unwrap()
            .map(|t| t.id),
        Some(other.id)
    );
}

#[tokio::test]
async fn the_audit_is_append_only() {
    let db = test_db!();
    let cat = connect(&db).await;
    let t = cat.insert_tenant(&new_tenant("acme")).await.unwrap();
    cat.append_audit("user:ada", Some(t.id), "member.add", Some("bob"))
        .await
        .unwrap();
    cat.append_audit("superadmin", None, "plan.change", None)
        .await
        .unwrap();
    cat.append_audit("key:k1", Some(t.id), "data.delete", None)
        .await
        .unwrap();
    let entries = cat.audit(t.id).await.unwrap();
    let lines: Vec<(&str, &str, Option<&str>)> = entries
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.detail.as_deref()))
        .collect();
    assert_eq!(
        lines,
        [
            ("user:ada", "member.add", Some("bob")),
            ("key:k1", "data.delete", None)
        ]
    );
    assert!(entries[0].seq < entries[1].seq);
    assert!(entries.iter().all(|e| e.tenant_id == Some(t.id)));

    let raw = raw(&db).await;
    assert!(raw
        .execute("UPDATE audit SET actor = 'x'", &[])
        .await
        .is_err());
    assert!(raw.execute("DELETE FROM audit", &[]).await.is_err());
    assert!(raw.batch_execute("TRUNCATE audit").await.is_err());
    assert_eq!(cat.audit(t.id).await.unwrap().len(), 2);
}

#[tokio::test]
async fn settings_are_upserted() {
    let db = test_db!();
    let cat = connect(&db).await;
    assert_eq!(cat.setting("theme").await.unwrap(), None);
    cat.set_setting("theme", "dark").await.unwrap();
    cat.set_setting("theme", "light").await.unwrap();
    assert_eq!(
        cat.setting("theme").await.unwrap().as_deref(),
        Some("light")
    );
}

#[tokio::test]
async fn failed_migrations_are_those_whose_latest_attempt_failed() {
    let db = test_db!();
    let cat = connect(&db).await;
    let acme = cat.insert_tenant(&new_tenant("acme")).await.unwrap();
    let beta = cat.insert_tenant(&new_tenant("beta")).await.unwrap();
    let gamma = cat.insert_tenant(&new_tenant("gamma")).await.unwrap();

    let run = cat.start_migration_run(2).await.unwrap();
    let result = |t: &Tenant, ok: bool| TenantMigrationResult {
        run_id: run,
        tenant_id: t.id,
        slug: t.slug.to_string(),
        from_version: 0,
        to_version: 1,
        ok,
        error: (!ok).then(|| "syntax error".to_owned()),
    };
    cat.record_tenant_migrations(
        &[acme.clone(), beta.clone(), gamma.clone()].map(|t| result(&t, false)),
    )
    .await
    .unwrap();
    cat.finish_migration_run(run, 0, 3).await.unwrap();
    let version = |t: &Tenant| {
        let id = t.id;
        let cat = &cat;
        async move {
            cat.tenant(id)
                .await
                .unwrap()
                .unwrap()
                .placement
                .schema_version
        }
    };
    assert_eq!(version(&acme).await, 0, "a failure moves no version");

    let run2 = cat.start_migration_run(2).await.unwrap();
    assert!(run2 > run);
    // beta: retried and now fine; gamma: reached the version otherwise.
    cat.record_tenant_migrations(&[TenantMigrationResult {
        run_id: run2,
        ..result(&beta, true)
    }])
    .await
    .unwrap();
    assert_eq!(
        version(&beta).await,
        1,
        "a success raises the version with it"
    );
    cat.set_schema_version(gamma.id, 3).await.unwrap();
    // An outcome that reached less than the tenant already has never lowers it.
    cat.record_tenant_migrations(&[TenantMigrationResult {
        run_id: run2,
        ..result(&gamma, true)
    }])
    .await
    .unwrap();
    assert_eq!(version(&gamma).await, 3);
    cat.finish_migration_run(run2, 1, 0).await.unwrap();

    let failed = cat.failed_migrations().await.unwrap();
    assert_eq!(failed.len(), 1);
    let f = &failed[0];
    assert_eq!(
        (f.run_id, f.tenant_id, f.slug.as_str()),
        (run, acme.id, "acme")
    );
    assert_eq!((f.from_version, f.to_version, f.ok), (0, 1, false));
    assert_eq!(f.error.as_deref(), Some("syntax error"));
}

#[tokio::test]
async fn the_first_registration_of_a_migration_wins() {
    let db = test_db!();
    let cat = connect(&db).await;
    let script = |version: i64, file: &'static str, checksum: &'static str| Script {
        version,
        name: file,
        file,
        sql: "",
        checksum,
    };
    cat.register_migrations(Dialect::Postgres, &[script(1, "0001_a.sql", "c1")])
        .await
        .unwrap();
    cat.register_migrations(
        Dialect::Postgres,
        &[
            script(1, "0001_a.sql", "changed"),
            script(2, "0002_b.sql", "c2"),
        ],
    )
    .await
    .unwrap();
    let registered: Vec<(i64, String, String)> = cat
        .registered_migrations(Dialect::Postgres)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.version, m.file, m.checksum))
        .collect();
    assert_eq!(
        registered,
        [
            (1, "0001_a.sql".to_owned(), "c1".to_owned()),
            (2, "0002_b.sql".to_owned(), "c2".to_owned())
        ]
    );
    assert!(cat
        .registered_migrations(Dialect::Sqlite)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn values_with_quotes_and_backslashes_are_stored_verbatim() {
    let db = test_db!();
    let cat = connect(&db).await;
    // Slugs cannot hold such characters (the `Slug` type refuses them); everything else can.
    let nasty = r#"O'Brien "x" \' \\ $1 %s ; DROP TABLE tenants; --"#;

    let mut new = new_tenant("acme");
    new.name = nasty.to_owned();
    new.placement.location = nasty.to_owned();
    let t = cat.insert_tenant(&new).await.unwrap();
    let read = cat.tenant(t.id).await.unwrap().unwrap();
    assert_eq!(
        (read.name.as_str(), read.placement.location.as_str()),
        (nasty, nasty)
    );

    let email = r#"o'b\"r\\ien@example.com"#;
    let user = cat.insert_user(&new_user(email), None).await.unwrap();
    assert_eq!(user.email, email);
    assert_eq!(
        cat.user_by_email(&email.to_lowercase())
            .await
            .unwrap()
            .map(|(u, _)| u.id),
        Some(user.id)
    );
    assert!(matches!(
        cat.insert_user(&new_user(&email.to_uppercase()), None)
            .await,
        Err(Error::EmailTaken)
    ));

    cat.set_setting(nasty, nasty).await.unwrap();
    assert_eq!(cat.setting(nasty).await.unwrap().as_deref(), Some(nasty));

    cat.append_audit(nasty, Some(t.id), nasty, Some(nasty))
        .await
        .unwrap();
    let entry = &cat.audit(t.id).await.unwrap()[0];
    assert_eq!(
        (
            entry.actor.as_str(),
            entry.action.as_str(),
            entry.detail.as_deref()
        ),
        (nasty, nasty, Some(nasty))
    );

    let mut key = new_key(nasty, Some(t.id));
    key.label = Some(nasty.to_owned());
    cat.insert_api_key(&key).await.unwrap();
    let (stored, _) = cat.api_key(nasty).await.unwrap().unwrap();
    assert_eq!(
        (stored.id.as_str(), stored.label.as_deref()),
        (nasty, Some(nasty))
    );

    cat.insert_domain(t.id, nasty, nasty).await.unwrap();
    cat.verify_domain(t.id, nasty).await.unwrap().unwrap();
    assert_eq!(cat.domains(t.id).await.unwrap()[0].domain, nasty);
    assert_eq!(
        cat.tenant_by_domain(nasty).await.unwrap().map(|t| t.id),
        Some(t.id)
    );

    cat.acquire_lock(nasty).await.unwrap();
    cat.release_lock(nasty).await.unwrap();

    let mut tr = transition(
        &t,
        &[TenantStatus::Provisioning],
        TenantStatus::Failed,
        nasty,
    );
    tr.error = Some(nasty.to_owned());
    let failed = cat.transition(tr).await.unwrap();
    assert_eq!(failed.error.as_deref(), Some(nasty));
    let journal = cat.journal(t.id).await.unwrap();
    assert_eq!(journal[1].event, nasty);

    // And the tables are all still there.
    assert_eq!(
        cat.list_tenants(&TenantFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catalogs_starting_at_once_migrate_the_schema_once() {
    let db = test_db!();
    let url = db.url.clone();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PgCatalog::connect(&url).await })
        })
        .collect();
    let mut catalogs = Vec::new();
    for task in tasks {
        catalogs.push(task.await.unwrap().unwrap());
    }
    // And again on an up-to-date schema.
    catalogs.push(connect(&db).await);
    let versions: Vec<i64> = raw(&db)
        .await
        .query(
            "SELECT version FROM catalog_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Each version once, none skipped (6: the tenant settings).
    let expected: Vec<i64> = (1..=versions.len() as i64).collect();
    assert_eq!(versions, expected);
    assert!(versions.len() >= 6, "{versions:?}");
}

#[tokio::test]
async fn connecting_to_an_unreachable_server_fails_quickly() {
    let attempt = PgCatalog::connect("postgres://postgres@127.0.0.1:1/catalog");
    let outcome = tokio::time::timeout(Duration::from_secs(20), attempt)
        .await
        .expect("connecting to a closed port hung");
    let error = outcome.expect_err("nothing listens on port 1");
    assert!(error.to_string().contains("unavailable"), "{error}");
}

#[tokio::test]
async fn connecting_to_a_server_that_never_answers_times_out() {
    // Accepts connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let url = format!("postgres://postgres@127.0.0.1:{port}/catalog");
    let attempt = PgCatalog::connect(&url);
    let outcome = tokio::time::timeout(Duration::from_secs(20), attempt)
        .await
        .expect("connecting to a silent server hung");
    let error = outcome.expect_err("a silent server is no catalog");
    assert!(error.to_string().contains("unavailable"), "{error}");
}

#[tokio::test]
async fn a_bad_url_is_refused() {
    let error = PgCatalog::connect("not a url at all").await.unwrap_err();
    assert!(matches!(error, Error::Catalog(_)), "{error}");
}

/// The batch writes of bulk creation, on both catalogs: each tenant of a batch succeeds
/// or fails on its own, exactly as one insert or one transition would.
async fn batches_behave_like_single_writes(cat: &dyn Catalog, other: &dyn Catalog) {
    assert!(cat.insert_tenants(&[]).await.unwrap().is_empty());
    assert!(cat.activate_provisioned(&[]).await.unwrap().is_empty());
    let taken = cat.insert_tenant(&new_tenant("taken")).await.unwrap();
    let gone = cat.insert_tenant(&new_tenant("gone")).await.unwrap();
    cat.transition(transition(
        &gone,
        &[TenantStatus::Provisioning],
        TenantStatus::Deleted,
        "delete.done",
    ))
    .await
    .unwrap();
    let owner = cat
        .insert_user(&new_user("owner@example.com"), None)
        .await
        .unwrap();
    let mut batch: Vec<NewTenant> = ["a", "taken", "b", "a", "gone", "c"]
        .iter()
        .map(|s| new_tenant(s))
        .collect();
    batch[5].owner = Some(owner.id);
    let outcomes = cat.insert_tenants(&batch).await.unwrap();
    assert_eq!(outcomes.len(), 6);
    for (i, outcome) in outcomes.iter().enumerate() {
        match (i, outcome) {
            (1 | 3, Err(Error::TenantExists { slug })) => assert_eq!(slug, batch[i].slug.as_str()),
            (1 | 3, other) => panic!("#{i}: expected TenantExists, got {other:?}"),
            (_, Ok(t)) => {
                assert_eq!(t.id, batch[i].id);
                assert_eq!(t.slug, batch[i].slug);
                assert_eq!(t.status, TenantStatus::Provisioning);
                assert_eq!(t.op_owner.as_deref(), Some(cat.owner()));
                assert_eq!(t.placement, batch[i].placement);
                let journal = cat.journal(t.id).await.unwrap();
                assert_eq!(journal.len(), 1, "{journal:?}");
                assert_eq!(journal[0].event, "provision.begin");
            }
            (_, Err(e)) => panic!("#{i}: {e}"),
        }
    }
    // The repeated slug's second row left nothing behind.
    assert!(cat.tenant(batch[3].id).await.unwrap().is_none());
    assert_eq!(
        cat.membership_role(batch[5].id, owner.id).await.unwrap(),
        Some(Role::Owner)
    );
    assert_eq!(
        cat.membership_role(batch[0].id, owner.id).await.unwrap(),
        None
    );

    // Settling: the batch's own tenants become active at their version; a tenant not
    // provisioning, and one whose provisioning another live process owns, fail alone.
    let busy = other.insert_tenant(&new_tenant("busy")).await.unwrap();
    let done = [
        (batch[0].id, 2),
        (taken.id, 2),
        (batch[2].id, 3),
        (busy.id, 2),
    ];
    activate_on(cat, &taken).await;
    let settled = cat.activate_provisioned(&done).await.unwrap();
    assert_eq!(settled.len(), 4);
    let a = settled[0].as_ref().unwrap();
    assert_eq!(
        (a.status, a.placement.schema_version, a.op_owner.as_deref()),
        (TenantStatus::Active, 2, None)
    );
    assert_eq!(settled[2].as_ref().unwrap().placement.schema_version, 3);
    assert!(
        matches!(&settled[1], Err(Error::InvalidTransition { status, .. }) if status == "active"),
        "{:?}",
        settled[1]
    );
    assert!(
        matches!(&settled[3], Err(Error::TenantBusy { .. })),
        "{:?}",
        settled[3]
    );
    let journal = cat.journal(batch[0].id).await.unwrap();
    assert_eq!(
        journal.iter().map(|j| j.event.as_str()).collect::<Vec<_>>(),
        ["provision.begin", "provision.done"]
    );
    assert_eq!(journal[1].from_status.as_deref(), Some("provisioning"));
    assert_eq!(journal[1].to_status, "active");
    let busy_now = cat.tenant(busy.id).await.unwrap().unwrap();
    assert_eq!(busy_now.status, TenantStatus::Provisioning);
    assert_eq!(cat.journal(busy.id).await.unwrap().len(), 1);
    // Settled twice: the second time it is no longer provisioning.
    let again = cat.activate_provisioned(&[(batch[0].id, 2)]).await.unwrap();
    assert!(matches!(&again[0], Err(Error::InvalidTransition { .. })));
}

async fn activate_on(cat: &dyn Catalog, t: &Tenant) {
    let mut tr = transition(
        t,
        &[TenantStatus::Provisioning],
        TenantStatus::Active,
        "provision.done",
    );
    tr.expect_owner = Some(cat.owner());
    cat.transition(tr).await.unwrap();
}

#[tokio::test]
async fn batches_of_tenants_are_inserted_and_settled_one_by_one_on_postgres() {
    let db = test_db!();
    let (cat, other) = (connect(&db).await, connect(&db).await);
    batches_behave_like_single_writes(&cat, &other).await;
}

#[tokio::test]
async fn batches_of_tenants_are_inserted_and_settled_one_by_one_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.db");
    let cat = tenancy::catalog::SqliteCatalog::open(&path).await.unwrap();
    let other = tenancy::catalog::SqliteCatalog::open(&path).await.unwrap();
    batches_behave_like_single_writes(&cat, &other).await;
}
