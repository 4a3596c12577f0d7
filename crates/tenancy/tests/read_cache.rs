//! The read cache of the request path drops only what a write changed. Ordinary traffic
//! (logins, refreshes, logouts, audit rows, `last_used_at`) evicts nothing, whichever
//! process wrote it; a revocation, a suspension, a membership or a domain change is seen on
//! this process's next request and within milliseconds when another process made it;
//! concurrent misses of one key cost one catalog query; custom domains, registered or not,
//! are cached too. Every scenario runs on a SQLite catalog and on a PostgreSQL one (skipped,
//! with a notice, where PostgreSQL is unreachable).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common {
    pub mod pg;
}

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pg::TestDb;
use tenancy::catalog::postgres::PgCatalog;
use tenancy::catalog::{
    Catalog, Change, Changes, NewApiKey, NewInvitation, NewRefreshToken, NewTenant, NewUser,
    SqliteCatalog, TenantMigrationResult, Transition, CHANGES_MAX,
};
use tenancy::identity::KeyScope;
use tenancy::{
    AdminToken, Engine, EngineConfig, Mode, Placement, Role, Slug, Tenant, TenantId, TenantStatus,
    User, UserId,
};

const PASSWORD: &str = "correct horse battery";

/// Vouches for every domain: these tests are about what the cache sees, not about who owns
/// a domain (verification has tests of its own, over HTTP).
#[derive(Debug)]
struct Vouched;

#[async_trait::async_trait]
impl tenancy::DomainVerifier for Vouched {
    async fn verify(&self, _: &tenancy::Domain, _: &str) -> Result<(), String> {
        Ok(())
    }
}

/// Registers a domain for the tenant and verifies it: from then on it names the tenant.
async fn add_verified_domain(engine: &Engine, tenant: TenantId, domain: &str) {
    engine.add_domain(tenant, domain, &[]).await.unwrap();
    engine
        .verify_domain(tenant, domain, &Vouched)
        .await
        .unwrap();
}
/// How long another process's change may take to reach a server's cache, at most, here:
/// far more than it takes (2 ms of polling for SQLite, one notification for PostgreSQL),
/// so that a loaded machine does not fail the test.
const BOUND: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
enum CatalogKind {
    Sqlite,
    Postgres,
}

/// One test per catalog kind: `name::sqlite` and `name::postgres`, each calling `name(kind)`.
macro_rules! both_catalogs {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            use super::CatalogKind;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(CatalogKind::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(CatalogKind::Postgres).await
            }
        }
    )+};
}

both_catalogs!(
    ordinary_traffic_evicts_nothing,
    changes_are_seen_on_the_next_request_here_and_soon_elsewhere,
    concurrent_misses_of_one_key_cost_one_query,
    custom_domains_are_cached_registered_or_not,
    writes_report_what_they_change,
);

/// Two engines on one catalog, as two processes: `server` serves requests, `other` is the
/// CLI or another replica.
struct Pair {
    server: Engine,
    other: Engine,
    /// Declared after the engines: dropped once their connections are closed.
    _db: Option<TestDb>,
    _dir: tempfile::TempDir,
}

/// `None`: PostgreSQL is unreachable (the test is skipped).
async fn pair(kind: CatalogKind) -> Option<Pair> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(dir.path());
    let db = match kind {
        CatalogKind::Sqlite => None,
        CatalogKind::Postgres => {
            let db = TestDb::create().await?;
            config.catalog_url = Some(db.url.clone());
            Some(db)
        }
    };
    let server = Engine::open(config.clone()).await.unwrap();
    config.sweep_store_files = false;
    let other = Engine::open(config).await.unwrap();
    Some(Pair {
        server,
        other,
        _db: db,
        _dir: dir,
    })
}

fn slug(s: &str) -> Slug {
    Slug::parse(s).unwrap()
}

/// A tenant, its member ada with a session, and a member API key of the tenant.
struct Fixture {
    tenant: Tenant,
    ada: User,
    email: String,
    /// An access token of ada.
    token: String,
    key_id: String,
    key: String,
}

async fn fixture(e: &Engine, name: &str) -> Fixture {
    let tenant = e.create_tenant(slug(name), None).await.unwrap();
    let email = format!("ada@{name}.gg");
    let ada = e.create_user(&email, PASSWORD, false).await.unwrap();
    let tenancy::AddedMember::Invited { invitation, .. } = e
        .add_member(tenant.id, &email, Role::Member, "test")
        .await
        .unwrap();
    e.accept_invitation(ada.id, &invitation).await.unwrap();
    let (key, secret) = new_key(e, &tenant).await;
    let session = e.login(&email, PASSWORD, None, None).await.unwrap();
    Fixture {
        tenant,
        ada,
        email,
        token: session.access_token,
        key_id: key,
        key: secret,
    }
}

/// A member key of `tenant`: (id, full key).
async fn new_key(e: &Engine, tenant: &Tenant) -> (String, String) {
    let (key, secret) = e
        .create_api_key(
            KeyScope::Tenant {
                tenant_id: tenant.id,
                role: Role::Member,
            },
            None,
            None,
            "test",
        )
        .await
        .unwrap();
    (key.id, secret)
}

/// What a request of the fixture's key, then one of ada, reads: the key and its tenant, the
/// tenant by slug, ada's user and her role in the tenant. Returns her role.
async fn request(e: &Engine, f: &Fixture) -> Option<Role> {
    let admin = AdminToken::from_secret("an admin token nobody presents here");
    e.authenticate_api_key(&f.key).await.unwrap();
    let tenant = e.find_tenant(&f.tenant.slug).await.unwrap().unwrap();
    let ada = e.authenticate(&f.token, &admin).await.unwrap();
    let access = e.access(&ada, &tenant, "test").await.unwrap();
    access.map(|a| a.role)
}

/// The catalog queries `e` makes while `work` runs.
async fn queries<T>(e: &Engine, work: impl Future<Output = T>) -> (T, u64) {
    let before = e.catalog().query_count();
    let out = work.await;
    (out, e.catalog().query_count() - before)
}

/// Waits until `check` holds: at once when `writer` is `reader` (the very next request),
/// within `BOUND` otherwise.
async fn seen<F, Fut>(reader: &Engine, writer: &Engine, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let same = std::ptr::eq(reader, writer);
    let start = Instant::now();
    while !check().await {
        assert!(!same, "{what}: not seen on the next request");
        assert!(start.elapsed() < BOUND, "{what}: not seen within {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Returns once `reader` has applied every change `writer` made so far: `writer` registers
/// a domain that `reader` has cached as unknown, and `reader` looks until it resolves
/// (changes arrive in commit order).
async fn caught_up(reader: &Engine, writer: &Engine, tenant: &Tenant) {
    let domain = format!("m{}.example.com", uuid::Uuid::new_v4().simple());
    assert!(reader.tenant_by_domain(&domain).await.unwrap().is_none());
    add_verified_domain(writer, tenant.id, &domain).await;
    seen(reader, writer, "the marker domain", || async {
        reader.tenant_by_domain(&domain).await.unwrap().is_some()
    })
    .await;
}

/// Writes of every kind the request path does not cache.
async fn ordinary_traffic(e: &Engine, f: &Fixture, round: usize) {
    let session = e.login(&f.email, PASSWORD, None, None).await.unwrap();
    let session = e.refresh(&session.refresh_token).await.unwrap();
    e.logout(&session.refresh_token).await.unwrap();
    assert!(e
        .login(&f.email, "wrong password!", None, None)
        .await
        .is_err());
    e.catalog()
        .append_audit("test", Some(f.tenant.id), "test.poke", None)
        .await
        .unwrap();
    e.authenticate_api_key(&f.key).await.unwrap();
    e.flush().await.unwrap();
    e.catalog()
        .set_setting("theme", &format!("dark-{round}"))
        .await
        .unwrap();
    // Another tenant comes and goes: changes, but not to anything `f` reads.
    let other = e
        .create_tenant(slug(&format!("other-{round}")), None)
        .await
        .unwrap();
    e.suspend_tenant(&other).await.unwrap();
}

async fn ordinary_traffic_evicts_nothing(kind: CatalogKind) {
    let Some(p) = pair(kind).await else { return };
    let f = fixture(&p.server, "acme").await;
    for (round, writer) in [&p.server, &p.other].into_iter().enumerate() {
        assert_eq!(request(&p.server, &f).await, Some(Role::Member));
        let (_, warm) = queries(&p.server, request(&p.server, &f)).await;
        assert_eq!(
            warm, 0,
            "round {round}: a warm request reads no catalog row"
        );

        ordinary_traffic(writer, &f, round).await;
        caught_up(&p.server, writer, &f.tenant).await;
        let (role, cost) = queries(&p.server, request(&p.server, &f)).await;
        assert_eq!(role, Some(Role::Member));
        assert_eq!(
            cost, 0,
            "round {round}: logins, refreshes, audit rows and key use evicted something"
        );
    }
}

async fn changes_are_seen_on_the_next_request_here_and_soon_elsewhere(kind: CatalogKind) {
    let Some(p) = pair(kind).await else { return };
    let server = &p.server;
    for (round, writer) in [&p.server, &p.other].into_iter().enumerate() {
        let f = fixture(writer, &format!("acme-{round}")).await;
        assert_eq!(request(server, &f).await, Some(Role::Member));
        let domain = format!("raid{round}.acme.gg");
        add_verified_domain(writer, f.tenant.id, &domain).await;
        seen(server, writer, "an added domain", || async {
            server
                .tenant_by_domain(&domain)
                .await
                .unwrap()
                .map(|t| t.id)
                == Some(f.tenant.id)
        })
        .await;
        // Warm again: everything below is a change to a cached row.
        assert_eq!(request(server, &f).await, Some(Role::Member));

        writer
            .set_member_role(f.tenant.id, f.ada.id, Role::Viewer)
            .await
            .unwrap();
        seen(server, writer, "a changed role", || async {
            request(server, &f).await == Some(Role::Viewer)
        })
        .await;
        writer.remove_member(f.tenant.id, f.ada.id).await.unwrap();
        seen(server, writer, "a removed member", || async {
            request(server, &f).await.is_none()
        })
        .await;
        writer.remove_domain(f.tenant.id, &domain).await.unwrap();
        seen(server, writer, "a removed domain", || async {
            server.tenant_by_domain(&domain).await.unwrap().is_none()
        })
        .await;
        writer
            .revoke_api_key(Some(f.tenant.id), &f.key_id)
            .await
            .unwrap();
        seen(server, writer, "a revoked key", || async {
            server.authenticate_api_key(&f.key).await.is_err()
        })
        .await;

        let (_, other_key) = new_key(writer, &f.tenant).await;
        server.authenticate_api_key(&other_key).await.unwrap();
        writer.suspend_tenant(&f.tenant).await.unwrap();
        seen(server, writer, "a suspension", || async {
            let by_slug = server.find_tenant(&f.tenant.slug).await.unwrap().unwrap();
            let by_id = server.tenant_by_id(f.tenant.id).await.unwrap().unwrap();
            by_slug.status == TenantStatus::Suspended && by_id.status == TenantStatus::Suspended
        })
        .await;
        writer.delete_tenant(&f.tenant.slug).await.unwrap();
        seen(server, writer, "a deletion", || async {
            server.find_tenant(&f.tenant.slug).await.unwrap().is_none()
                && server.authenticate_api_key(&other_key).await.is_err()
        })
        .await;
        // The slug is free again: a new tenant that takes it is found.
        let again = writer
            .create_tenant(f.tenant.slug.clone(), None)
            .await
            .unwrap();
        seen(server, writer, "a new tenant on a freed slug", || async {
            server
                .find_tenant(&f.tenant.slug)
                .await
                .unwrap()
                .map(|t| t.id)
                == Some(again.id)
        })
        .await;
    }
}

async fn concurrent_misses_of_one_key_cost_one_query(kind: CatalogKind) {
    let Some(p) = pair(kind).await else { return };
    let server = &p.server;
    let f = fixture(server, "acme").await;
    request(server, &f).await;
    // The key's use written now, not by the periodic flush while queries are counted.
    server.flush().await.unwrap();
    let (_, cold_key) = new_key(&p.other, &f.tenant).await;
    caught_up(server, &p.other, &f.tenant).await;

    let (outcomes, cost) = queries(
        server,
        at_once(100, || {
            let (server, key) = (server.clone(), cold_key.clone());
            async move { server.authenticate_api_key(&key).await.is_ok() }
        }),
    )
    .await;
    assert!(outcomes.iter().all(|&ok| ok));
    assert_eq!(cost, 1, "100 concurrent misses of one key, one query");

    let (outcomes, cost) = queries(
        server,
        at_once(100, || {
            let server = server.clone();
            async move { server.find_tenant(&slug("nobody")).await.unwrap().is_none() }
        }),
    )
    .await;
    assert!(outcomes.iter().all(|&none| none));
    assert_eq!(cost, 1, "an unknown slug too");
}

/// `n` calls made at once, each in a task of its own.
async fn at_once<T, F, Fut>(n: usize, call: F) -> Vec<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let start = Arc::new(tokio::sync::Barrier::new(n));
    let tasks = (0..n).map(|_| {
        let (start, call) = (Arc::clone(&start), call());
        tokio::spawn(async move {
            start.wait().await;
            call.await
        })
    });
    futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|outcome| outcome.unwrap())
        .collect()
}

async fn custom_domains_are_cached_registered_or_not(kind: CatalogKind) {
    let Some(p) = pair(kind).await else { return };
    let (server, other) = (&p.server, &p.other);
    let f = fixture(server, "acme").await;
    caught_up(server, server, &f.tenant).await;

    let host = "raid.acme.gg";
    assert!(server.tenant_by_domain(host).await.unwrap().is_none());
    let (found, cost) = queries(server, server.tenant_by_domain(host)).await;
    assert!(found.unwrap().is_none());
    assert_eq!(cost, 0, "an unknown domain is cached as such");

    add_verified_domain(other, f.tenant.id, "Raid.Acme.GG").await;
    seen(server, other, "a domain added elsewhere", || async {
        server.tenant_by_domain(host).await.unwrap().is_some()
    })
    .await;
    // The claim and its verification are two writes, two notifications: the lookup that
    // first sees the domain may come before the second one arrives and drops it again.
    let deadline = std::time::Instant::now() + BOUND;
    loop {
        let (found, cost) = queries(server, server.tenant_by_domain(host)).await;
        assert_eq!(found.unwrap().unwrap().id, f.tenant.id);
        if cost == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a registered domain is cached"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Its tenant's changes show through it.
    other.suspend_tenant(&f.tenant).await.unwrap();
    seen(server, other, "a suspension through the domain", || async {
        server.tenant_by_domain(host).await.unwrap().unwrap().status == TenantStatus::Suspended
    })
    .await;
    server.resume_tenant(&f.tenant).await.unwrap();
    assert_eq!(
        server.tenant_by_domain(host).await.unwrap().unwrap().status,
        TenantStatus::Active
    );

    server.remove_domain(f.tenant.id, host).await.unwrap();
    assert!(
        server.tenant_by_domain(host).await.unwrap().is_none(),
        "a removed domain stops resolving on the next request"
    );
    add_verified_domain(server, f.tenant.id, host).await;
    assert!(server.tenant_by_domain(host).await.unwrap().is_some());
    other.remove_domain(f.tenant.id, host).await.unwrap();
    seen(server, other, "a domain removed elsewhere", || async {
        server.tenant_by_domain(host).await.unwrap().is_none()
    })
    .await;
}

/// Two catalog values on one catalog, as two processes.
async fn two_catalogs(
    kind: CatalogKind,
) -> Option<(
    Box<dyn Catalog>,
    Box<dyn Catalog>,
    Option<TestDb>,
    tempfile::TempDir,
)> {
    let dir = tempfile::tempdir().unwrap();
    Some(match kind {
        CatalogKind::Sqlite => {
            let path = dir.path().join("catalog.db");
            let a = SqliteCatalog::open(&path).await.unwrap();
            let b = SqliteCatalog::open(&path).await.unwrap();
            (Box::new(a), Box::new(b), None, dir)
        }
        CatalogKind::Postgres => {
            let db = TestDb::create().await?;
            let a = PgCatalog::connect(&db.url).await.unwrap();
            let b = PgCatalog::connect(&db.url).await.unwrap();
            (Box::new(a), Box::new(b), Some(db), dir)
        }
    })
}

fn new_tenant(s: &str) -> NewTenant {
    let id = TenantId::generate();
    NewTenant {
        id,
        slug: slug(s),
        name: s.to_owned(),
        placement: Placement {
            store: "default".into(),
            mode: Mode::Database,
            location: format!("{id}.db"),
            schema_version: 0,
        },
        owner: None,
        plan: None,
    }
}

fn new_user(email: &str) -> NewUser {
    NewUser {
        id: UserId::generate(),
        email: email.to_owned(),
        password_hash: "$argon2id$hash".into(),
        is_superadmin: false,
    }
}

/// What a catalog value reported since its last position.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Keys(HashSet<Change>),
    All,
}

/// Reads a catalog value's changes: the writer's own and, as another process, the other's.
struct Feeds<'a> {
    writer: &'a dyn Catalog,
    reader: &'a dyn Catalog,
    positions: [u64; 2],
    marker: Tenant,
    version: i64,
}

impl Feeds<'_> {
    /// Asserts that the writes since the last call reported exactly `expected`, to the
    /// writer and to the other process. A marker write follows them, and each feed is read
    /// until the marker shows (changes arrive in commit order).
    async fn expect(&mut self, what: &str, expected: Seen) {
        if let Seen::Keys(_) = expected {
            self.version += 1;
            self.writer
                .set_schema_version(self.marker.id, self.version)
                .await
                .unwrap();
        }
        self.read(what, expected).await;
    }

    /// Reads each feed until it shows the marker tenant's change (or everything), and
    /// asserts that it showed `expected` besides.
    async fn read(&mut self, what: &str, expected: Seen) {
        let marker = Change::Tenant(self.marker.id);
        for (i, catalog) in [self.writer, self.reader].into_iter().enumerate() {
            let start = Instant::now();
            let mut keys = HashSet::new();
            let seen = loop {
                let since = catalog
                    .changes_since(Some(self.positions[i]))
                    .await
                    .unwrap();
                self.positions[i] = since.position;
                match since.changes {
                    Changes::All => break Seen::All,
                    Changes::Keys(k) => keys.extend(k),
                }
                if keys.remove(&marker) {
                    break Seen::Keys(keys);
                }
                assert!(start.elapsed() < BOUND, "{what}: nothing reported");
                tokio::time::sleep(Duration::from_millis(1)).await;
            };
            let who = ["the writer", "another process"][i];
            assert_eq!(seen, expected, "{what}, as {who} sees it");
        }
    }
}

fn keys<const N: usize>(changes: [Change; N]) -> Seen {
    Seen::Keys(changes.into_iter().collect())
}

async fn writes_report_what_they_change(kind: CatalogKind) {
    let Some((a, b, _db, _dir)) = two_catalogs(kind).await else {
        return;
    };
    let (a, b) = (a.as_ref(), b.as_ref());
    let positions = [
        a.changes_since(None).await.unwrap().position,
        b.changes_since(None).await.unwrap().position,
    ];
    let marker = a.insert_tenant(&new_tenant("marker")).await.unwrap();
    let mut feeds = Feeds {
        writer: a,
        reader: b,
        positions,
        marker: marker.clone(),
        version: 0,
    };
    feeds
        .read("the marker tenant", keys([Change::Slug(marker.slug)]))
        .await;
    feeds.expect("nothing yet", keys([])).await;

    let ada = a.insert_user(&new_user("ada@acme.gg"), None).await.unwrap();
    feeds.expect("a signup", keys([Change::User(ada.id)])).await;
    let mut new = new_tenant("acme");
    new.owner = Some(ada.id);
    let acme = a.insert_tenant(&new).await.unwrap();
    feeds
        .expect(
            "a new tenant",
            keys([
                Change::Tenant(acme.id),
                Change::Slug(acme.slug.clone()),
                Change::Member(acme.id, ada.id),
            ]),
        )
        .await;
    let batch = a
        .insert_tenants(&[new_tenant("b1"), new_tenant("b2")])
        .await
        .unwrap();
    let (b1, b2) = (
        batch[0].as_ref().unwrap().clone(),
        batch[1].as_ref().unwrap().clone(),
    );
    feeds
        .expect(
            "two new tenants",
            keys([
                Change::Tenant(b1.id),
                Change::Slug(b1.slug.clone()),
                Change::Tenant(b2.id),
                Change::Slug(b2.slug.clone()),
            ]),
        )
        .await;
    let many: Vec<NewTenant> = (0..=CHANGES_MAX)
        .map(|i| new_tenant(&format!("bulk-{i}")))
        .collect();
    a.insert_tenants(&many).await.unwrap();
    feeds.expect("a bulk creation", Seen::All).await;
    feeds.expect("nothing since", keys([])).await;

    a.transition(Transition {
        id: acme.id,
        from: &[TenantStatus::Provisioning],
        to: TenantStatus::Active,
        expect_owner: None,
        new_owner: None,
        error: None,
        schema_version: Some(1),
        event: "provision.done",
    })
    .await
    .unwrap();
    feeds
        .expect("a transition", keys([Change::Tenant(acme.id)]))
        .await;
    a.activate_provisioned(&[(b1.id, 1)]).await.unwrap();
    feeds
        .expect("a settled provisioning", keys([Change::Tenant(b1.id)]))
        .await;
    a.set_schema_version(acme.id, 1).await.unwrap();
    feeds.expect("a schema version unchanged", keys([])).await;
    a.set_schema_version(acme.id, 2).await.unwrap();
    feeds
        .expect("a schema version raised", keys([Change::Tenant(acme.id)]))
        .await;
    let run = a.start_migration_run(3).await.unwrap();
    let result = |t: &Tenant, ok: bool| TenantMigrationResult {
        run_id: run,
        tenant_id: t.id,
        slug: t.slug.to_string(),
        from_version: 2,
        to_version: 3,
        ok,
        error: None,
    };
    a.record_tenant_migrations(&[result(&acme, true), result(&b2, false)])
        .await
        .unwrap();
    a.finish_migration_run(run, 1, 1).await.unwrap();
    feeds
        .expect("a migration run", keys([Change::Tenant(acme.id)]))
        .await;

    let bob = a.insert_user(&new_user("bob@acme.gg"), None).await.unwrap();
    a.add_member(acme.id, bob.id, Role::Viewer).await.unwrap();
    feeds
        .expect(
            "a signup and a new member",
            keys([Change::User(bob.id), Change::Member(acme.id, bob.id)]),
        )
        .await;
    a.set_member_role(acme.id, bob.id, Role::Admin)
        .await
        .unwrap();
    feeds
        .expect("a changed role", keys([Change::Member(acme.id, bob.id)]))
        .await;
    a.remove_member(acme.id, bob.id).await.unwrap();
    feeds
        .expect("a removed member", keys([Change::Member(acme.id, bob.id)]))
        .await;
    assert!(!a.remove_member(acme.id, bob.id).await.unwrap());
    feeds.expect("a member removed twice", keys([])).await;
    a.insert_invitation(&NewInvitation {
        token_hash: "invitation".into(),
        tenant_id: acme.id,
        email_norm: "carol@acme.gg".into(),
        role: Role::Member,
        created_by: "test".into(),
        expires_at: chrono::Utc::now() + chrono::Duration::days(1),
        max_members: None,
    })
    .await
    .unwrap();
    feeds.expect("an invitation", keys([])).await;
    let carol = a
        .insert_user(&new_user("carol@acme.gg"), Some("invitation"))
        .await
        .unwrap();
    feeds
        .expect(
            "a signup by invitation",
            keys([Change::User(carol.id), Change::Member(acme.id, carol.id)]),
        )
        .await;

    let key = a
        .insert_api_key(&NewApiKey {
            id: "0123456789abcdef".into(),
            tenant_id: Some(acme.id),
            role: "member".into(),
            label: None,
            secret_hash: "hash".into(),
            created_by: "test".into(),
            expires_at: None,
            max: None,
        })
        .await
        .unwrap();
    feeds
        .expect("a new key", keys([Change::ApiKey(key.id.clone())]))
        .await;
    a.touch_api_keys(&[(key.id.clone(), chrono::Utc::now())])
        .await
        .unwrap();
    feeds.expect("a key's use", keys([])).await;
    assert!(a.revoke_api_key(Some(acme.id), &key.id).await.unwrap());
    feeds
        .expect("a revoked key", keys([Change::ApiKey(key.id.clone())]))
        .await;

    a.insert_domain(acme.id, "raid.acme.gg", "token")
        .await
        .unwrap();
    feeds
        .expect(
            "a new domain",
            keys([Change::Domain("raid.acme.gg".into())]),
        )
        .await;
    a.verify_domain(acme.id, "raid.acme.gg").await.unwrap();
    feeds
        .expect(
            "a verified domain",
            keys([Change::Domain("raid.acme.gg".into())]),
        )
        .await;
    assert!(a.remove_domain(acme.id, "raid.acme.gg").await.unwrap());
    feeds
        .expect(
            "a removed domain",
            keys([Change::Domain("raid.acme.gg".into())]),
        )
        .await;

    a.insert_refresh_token(&NewRefreshToken {
        token_hash: "r1".into(),
        family: "f1".into(),
        user_id: ada.id,
        tenant_id: Some(acme.id),
        expires_at: chrono::Utc::now() + chrono::Duration::days(1),
    })
    .await
    .unwrap();
    a.use_refresh_token("r1").await.unwrap();
    a.revoke_refresh_token("r1").await.unwrap();
    a.append_audit("test", Some(acme.id), "test.poke", None)
        .await
        .unwrap();
    a.set_setting("theme", "dark").await.unwrap();
    a.add_signing_key("kid-1", "00").await.unwrap();
    a.acquire_lock("migrate").await.unwrap();
    a.release_lock("migrate").await.unwrap();
    feeds
        .expect(
            "sessions, audit rows, settings, signing keys and locks",
            keys([]),
        )
        .await;
}
