//! The shared-mode transform on a real PostgreSQL: the guild migrations, transformed and
//! applied as the superuser, isolate tenants from the data role's point of view, and the
//! start-up audit tells a transformed schema from one that is not. Each test has its own
//! database and data role (tests/common/pg.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common {
    pub mod pg;
}

use common::pg::TestDb;
use tenancy::migrations::GUILD_MIGRATIONS;
use tenancy::transform::{audit_failures, AuditRow, SharedTransform, AUDIT_SQL};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Transaction};
use uuid::Uuid;

async fn connect(config: tokio_postgres::Config) -> Client {
    let (client, conn) = config.connect(NoTls).await.expect("connecting");
    tokio::spawn(conn);
    client
}

/// A database with the guild schema transformed for shared mode, and the data role.
struct Shared {
    db: TestDb,
    admin: Client,
    role: String,
    /// Has seen every script so far, so that later ones resolve their references.
    transform: SharedTransform,
}

impl Shared {
    async fn create() -> Option<Shared> {
        let db = TestDb::create().await?;
        let admin = connect(db.url.parse().unwrap()).await;
        let role = format!("{}_data", db.prefix);
        admin
            .batch_execute(&format!(
                "CREATE ROLE \"{role}\" LOGIN NOSUPERUSER NOBYPASSRLS"
            ))
            .await
            .unwrap();
        let transform = SharedTransform::new(&role);
        let mut shared = Shared {
            db,
            admin,
            role,
            transform,
        };
        shared.migrate(GUILD_MIGRATIONS).await;
        Some(shared)
    }

    /// Transforms and applies scripts as the superuser, one transaction per script.
    async fn migrate(&mut self, scripts: &[(&str, &str)]) {
        for (file, sql) in scripts {
            let statements = self
                .transform
                .script(file, sql)
                .unwrap_or_else(|e| panic!("{e}"));
            self.admin.batch_execute("BEGIN").await.unwrap();
            for statement in statements {
                self.admin
                    .batch_execute(&statement)
                    .await
                    .unwrap_or_else(|e| panic!("{statement}: {e}"));
            }
            self.admin.batch_execute("COMMIT").await.unwrap();
        }
    }

    /// A connection as the data role.
    async fn data(&self) -> Client {
        let mut config: tokio_postgres::Config = self.db.url.parse().unwrap();
        config.user(&self.role);
        connect(config).await
    }

    async fn audit(&self, role: &str) -> Vec<String> {
        let rows = self
            .admin
            .query(AUDIT_SQL, &[&"public", &role])
            .await
            .unwrap();
        let rows: Vec<AuditRow> = rows
            .iter()
            .map(|r| AuditRow::try_from(r).unwrap())
            .collect();
        audit_failures(role, &rows)
    }
}

/// A transaction with the tenant set the way the engine sets it.
async fn as_tenant<'a>(client: &'a mut Client, tenant: Option<Uuid>) -> Transaction<'a> {
    let tx = client.transaction().await.unwrap();
    if let Some(tenant) = tenant {
        tx.execute(
            "SELECT set_config('tenancy.tenant_id', $1, true)",
            &[&tenant.to_string()],
        )
        .await
        .unwrap();
    }
    tx
}

async fn add_member(
    tx: &Transaction<'_>,
    id: &str,
    name: &str,
) -> Result<u64, tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO members (id, name) VALUES ($1, $2)",
        &[&id, &name],
    )
    .await
}

async fn names(tx: &Transaction<'_>) -> Vec<String> {
    tx.query("SELECT name FROM members ORDER BY name", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn code(e: &tokio_postgres::Error) -> Option<&SqlState> {
    e.code()
}

/// Tenants A and B with two members each, the same ids in both.
async fn two_tenants(data: &mut Client) -> (Uuid, Uuid) {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    for (tenant, prefix) in [(a, "a"), (b, "b")] {
        let tx = as_tenant(data, Some(tenant)).await;
        add_member(&tx, "m1", &format!("{prefix}-one"))
            .await
            .unwrap();
        add_member(&tx, "m2", &format!("{prefix}-two"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    (a, b)
}

#[tokio::test]
async fn each_tenant_sees_and_changes_only_its_own_rows() {
    let Some(shared) = Shared::create().await else {
        return;
    };
    let mut data = shared.data().await;
    let (a, b) = two_tenants(&mut data).await;

    let tx = as_tenant(&mut data, Some(a)).await;
    assert_eq!(names(&tx).await, ["a-one", "a-two"]);
    let tenants: Vec<Uuid> = tx
        .query("SELECT DISTINCT tenant_id FROM members", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tenants, [a]);
    assert_eq!(
        tx.execute("UPDATE members SET dkp = 10", &[])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        tx.execute("DELETE FROM members WHERE id = 'm1'", &[])
            .await
            .unwrap(),
        1
    );
    tx.commit().await.unwrap();

    let tx = as_tenant(&mut data, Some(b)).await;
    let rows = tx
        .query("SELECT id, dkp FROM members ORDER BY id", &[])
        .await
        .unwrap();
    let rows: Vec<(String, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(rows, [("m1".to_owned(), 0), ("m2".to_owned(), 0)]);
    assert_eq!(tx.execute("DELETE FROM members", &[]).await.unwrap(), 2);
    tx.commit().await.unwrap();

    let tx = as_tenant(&mut data, Some(a)).await;
    assert_eq!(names(&tx).await, ["a-two"]);
    tx.commit().await.unwrap();
    // The superuser sees through the policy: A's row is really there, B's really gone.
    let total: i64 = shared
        .admin
        .query_one("SELECT COUNT(*) FROM members", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 1);
}

#[tokio::test]
async fn rows_for_another_tenant_are_refused_by_with_check() {
    let Some(shared) = Shared::create().await else {
        return;
    };
    let mut data = shared.data().await;
    let (a, b) = two_tenants(&mut data).await;

    let tx = as_tenant(&mut data, Some(a)).await;
    let e = tx
        .execute(
            "INSERT INTO members (tenant_id, id, name) VALUES ($1, 'm9', 'intruder')",
            &[&b],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e}");
    drop(tx);

    let tx = as_tenant(&mut data, Some(a)).await;
    let e = tx
        .execute("UPDATE members SET tenant_id = $1", &[&b])
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e}");
    drop(tx);

    let tx = as_tenant(&mut data, Some(b)).await;
    assert_eq!(names(&tx).await, ["b-one", "b-two"]);
}

#[tokio::test]
async fn without_a_tenant_nothing_is_seen_and_nothing_written() {
    let Some(shared) = Shared::create().await else {
        return;
    };
    let mut data = shared.data().await;
    two_tenants(&mut data).await;

    // Unset in this session (the tenants were set local to their own transactions, so
    // the setting now exists and is ''), then explicitly empty, as the engine sends it.
    for tenant in [None, Some("")] {
        let tx = data.transaction().await.unwrap();
        if let Some(t) = tenant {
            tx.execute("SELECT set_config('tenancy.tenant_id', $1, true)", &[&t])
                .await
                .unwrap();
        }
        assert!(names(&tx).await.is_empty(), "{tenant:?}");
        assert_eq!(
            tx.execute("UPDATE members SET dkp = 1", &[]).await.unwrap(),
            0
        );
        assert_eq!(tx.execute("DELETE FROM members", &[]).await.unwrap(), 0);
        // WITH CHECK refuses it first; tenant_id's NOT NULL would too.
        let e = add_member(&tx, "m3", "nobody").await.unwrap_err();
        assert_eq!(code(&e), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e}");
    }

    // A connection that never set it at all.
    let mut fresh = shared.data().await;
    let tx = fresh.transaction().await.unwrap();
    assert!(names(&tx).await.is_empty());
    assert!(add_member(&tx, "m3", "nobody").await.is_err());
}

#[tokio::test]
async fn unique_constraints_hold_per_tenant() {
    let Some(shared) = Shared::create().await else {
        return;
    };
    let mut data = shared.data().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    for tenant in [a, b] {
        let tx = as_tenant(&mut data, Some(tenant)).await;
        add_member(&tx, "m1", "same-name").await.unwrap();
        tx.commit().await.unwrap();
    }
    let tx = as_tenant(&mut data, Some(a)).await;
    let e = add_member(&tx, "m2", "same-name").await.unwrap_err();
    assert_eq!(code(&e), Some(&SqlState::UNIQUE_VIOLATION), "{e}");
    drop(tx);
    let tx = as_tenant(&mut data, Some(a)).await;
    let e = add_member(&tx, "m1", "other-name").await.unwrap_err();
    assert_eq!(code(&e), Some(&SqlState::UNIQUE_VIOLATION), "{e}");
}

#[tokio::test]
async fn foreign_keys_stay_inside_a_tenant() {
    let Some(shared) = Shared::create().await else {
        return;
    };
    let mut data = shared.data().await;
    let (a, b) = two_tenants(&mut data).await;

    let tx = as_tenant(&mut data, Some(a)).await;
    tx.execute("INSERT INTO items (id, name) VALUES ('i1', 'sword')", &[])
        .await
        .unwrap();
    tx.execute(
        "INSERT INTO auctions (id, item_id) VALUES ('x1', 'i1')",
        &[],
    )
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO bids (id, auction_id, member_id, amount) VALUES ('b1', 'x1', 'm1', 5)",
        &[],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // B has a member m1 but no item i1 and no auction x1: A's rows are out of reach.
    let tx = as_tenant(&mut data, Some(b)).await;
    let e = tx
        .execute(
            "INSERT INTO auctions (id, item_id) VALUES ('x1', 'i1')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(&SqlState::FOREIGN_KEY_VIOLATION), "{e}");
    drop(tx);
    let tx = as_tenant(&mut data, Some(b)).await;
    let e = tx
        .execute(
            "INSERT INTO bids (id, auction_id, member_id, amount) VALUES ('b1', 'x1', 'm1', 5)",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(&SqlState::FOREIGN_KEY_VIOLATION), "{e}");
    drop(tx);

    // ON DELETE CASCADE follows the tenant's own rows.
    let tx = as_tenant(&mut data, Some(a)).await;
    assert_eq!(tx.execute("DELETE FROM auctions", &[]).await.unwrap(), 1);
    let bids: i64 = tx
        .query_one("SELECT COUNT(*) FROM bids", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(bids, 0);
}

#[tokio::test]
async fn identity_columns_and_set_null_work_for_the_data_role() {
    let Some(mut shared) = Shared::create().await else {
        return;
    };
    shared
        .migrate(&[(
            "0003_notes.sql",
            "CREATE TABLE notes (
                 id BIGSERIAL PRIMARY KEY,
                 member_id TEXT REFERENCES members ON DELETE SET NULL,
                 body TEXT NOT NULL
             );
             ALTER TABLE notes ADD COLUMN slug TEXT UNIQUE;",
        )])
        .await;
    let mut data = shared.data().await;
    let (a, b) = two_tenants(&mut data).await;
    for tenant in [a, b] {
        let tx = as_tenant(&mut data, Some(tenant)).await;
        let id: i64 = tx
            .query_one(
                "INSERT INTO notes (member_id, body, slug) VALUES ('m1', 'hi', 'hello') RETURNING id",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(id > 0);
        tx.commit().await.unwrap();
    }
    let tx = as_tenant(&mut data, Some(a)).await;
    tx.execute("DELETE FROM members WHERE id = 'm1'", &[])
        .await
        .unwrap();
    let member: Option<String> = tx
        .query_one("SELECT member_id FROM notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(member, None);
    tx.commit().await.unwrap();
    // B's note still points at B's m1.
    let tx = as_tenant(&mut data, Some(b)).await;
    let member: Option<String> = tx
        .query_one("SELECT member_id FROM notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(member.as_deref(), Some("m1"));
}

#[tokio::test]
async fn the_audit_passes_the_transformed_schema_and_names_a_table_without_rls() {
    let Some(shared) = Shared::create().await else {
        return;
    };
    // The ledger is the store's own table: no tenant_id, no policy, and that is fine.
    shared
        .admin
        .batch_execute("CREATE TABLE _tenancy_migrations (version BIGINT PRIMARY KEY)")
        .await
        .unwrap();
    assert_eq!(shared.audit(&shared.role).await, Vec::<String>::new());

    shared
        .admin
        .batch_execute("CREATE TABLE notes (id TEXT PRIMARY KEY)")
        .await
        .unwrap();
    let failures = shared.audit(&shared.role).await;
    assert_eq!(
        failures,
        [
            "table notes has no tenant_id column",
            "table notes does not enable row-level security",
            "table notes does not force row-level security",
            "table notes has no tenant_isolation policy",
        ]
    );

    shared
        .admin
        .batch_execute(
            "ALTER TABLE members NO FORCE ROW LEVEL SECURITY; \
             CREATE POLICY everyone ON raids USING (true); DROP TABLE notes",
        )
        .await
        .unwrap();
    assert_eq!(
        shared.audit(&shared.role).await,
        [
            "table members does not force row-level security",
            "table raids has other permissive policies, which widen what a tenant sees",
        ]
    );

    let superuser = shared.audit("postgres").await;
    assert!(
        superuser.contains(&"the data role postgres is a superuser".to_owned()),
        "{superuser:?}"
    );
    let missing = format!("{}_missing", shared.db.prefix);
    assert_eq!(
        shared.audit(&missing).await[0],
        format!("the data role {missing} does not exist")
    );
}

#[tokio::test]
async fn the_audit_checks_the_role_of_an_empty_schema() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let admin = connect(db.url.parse().unwrap()).await;
    let role = format!("{}_data", db.prefix);
    admin
        .batch_execute(&format!("CREATE ROLE \"{role}\" LOGIN BYPASSRLS"))
        .await
        .unwrap();
    let rows: Vec<AuditRow> = admin
        .query(AUDIT_SQL, &[&"no_such_schema", &role])
        .await
        .unwrap()
        .iter()
        .map(|r| AuditRow::try_from(r).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].table_name, None);
    assert_eq!(
        audit_failures(&role, &rows),
        [format!("the data role {role} has BYPASSRLS")]
    );
}
