//! The control plane over real HTTP: provisioning and lifecycle of tenants (create, list,
//! show, delete, suspend, resume) and bad input. The server runs in-process on
//! 127.0.0.1:0 with a fresh data folder per test (`common::Server`), and every request
//! goes through reqwest.
//!
//! Every test that provisions, finds or places a tenant runs once per backend
//! (`four_modes!`): `database` on SQLite, and `database`, `schema` and `shared` on
//! PostgreSQL, whose catalog is on PostgreSQL too. Tests of request parsing and
//! authentication alone, which reach no tenant, run once, on SQLite.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::path::{Path, PathBuf};

use common::{Backend, Server, ADMIN_TOKEN};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use tenancy::{Mode, Slug, Tenant};

/// A mixed-case admin token, for the test that varies its case.
const MIXED_CASE_TOKEN: &str = "s3cret-Admin-Token";

/// The calls of this suite, as the platform administrator ([`ADMIN_TOKEN`]).
trait AdminCalls {
    fn url(&self, path: &str) -> String;
    async fn get(&self, path: &str) -> Response;
    async fn delete(&self, path: &str) -> Response;
    async fn post_json(&self, path: &str, body: &Value) -> Response;
    /// A POST with a raw body and content type, for bodies `json()` cannot produce.
    async fn post_raw(&self, path: &str, content_type: &str, body: &str) -> Response;
    async fn create(&self, slug: &str, name: Option<&str>) -> Response;
    /// Creates a tenant that must succeed and returns its body.
    async fn create_ok(&self, slug: &str, name: Option<&str>) -> Value;
    /// The `data` of `GET /v1/tenants`.
    async fn list(&self) -> Vec<Value>;
    /// Nothing was created, seen through the API (with `token`), the engine and the stores.
    async fn assert_no_tenants_as(&self, token: &str);
    async fn assert_no_tenants(&self);
    /// Asserts a problem+json response with `status` and `code`, and that it leaks nothing
    /// internal; returns the body.
    async fn problem(&self, resp: Response, status: StatusCode, code: &str) -> Value;
    fn assert_no_leak(&self, text: &str);
    /// Writes a row through the data API: in `shared` mode a tenant owns nothing in its
    /// store until it does.
    async fn add_member(&self, slug: &str, name: &str);
    /// The names in the tenant's `members` table, through the data API.
    async fn member_names(&self, slug: &str) -> Vec<String>;
}

impl AdminCalls for Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> Response {
        self.call(Method::GET, path, Some(ADMIN_TOKEN), &[], None)
            .await
    }

    async fn delete(&self, path: &str) -> Response {
        self.call(Method::DELETE, path, Some(ADMIN_TOKEN), &[], None)
            .await
    }

    async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.call(
            Method::POST,
            path,
            Some(ADMIN_TOKEN),
            &[],
            Some(body.clone()),
        )
        .await
    }

    async fn post_raw(&self, path: &str, content_type: &str, body: &str) -> Response {
        self.client
            .post(self.url(path))
            .header(AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
            .header(CONTENT_TYPE, content_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("request sent")
    }

    async fn create(&self, slug: &str, name: Option<&str>) -> Response {
        let body = match name {
            Some(name) => json!({ "slug": slug, "name": name }),
            None => json!({ "slug": slug }),
        };
        self.post_json("/v1/tenants", &body).await
    }

    async fn create_ok(&self, slug: &str, name: Option<&str>) -> Value {
        let resp = self.create(slug, name).await;
        let status = resp.status();
        let text = resp.text().await.expect("body");
        assert_eq!(status, StatusCode::CREATED, "creating {slug:?}: {text}");
        serde_json::from_str(&text).expect("json body")
    }

    async fn list(&self) -> Vec<Value> {
        let resp = self.get("/v1/tenants").await;
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.expect("json body");
        body["data"].as_array().expect("data is an array").clone()
    }

    async fn assert_no_tenants_as(&self, token: &str) {
        let (status, body) = self
            .json(Method::GET, "/v1/tenants", Some(token), None)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"], json!([]));
        assert!(self.engine.list_tenants().await.unwrap().is_empty());
        assert_eq!(
            holders(self).await,
            Vec::<String>::new(),
            "no tenant data may exist in any store"
        );
    }

    async fn assert_no_tenants(&self) {
        self.assert_no_tenants_as(ADMIN_TOKEN).await;
    }

    async fn problem(&self, resp: Response, status: StatusCode, code: &str) -> Value {
        assert_eq!(resp.status(), status, "status of a `{code}` problem");
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "content type of a `{code}` problem"
        );
        let text = resp.text().await.expect("body");
        self.assert_no_leak(&text);
        let body: Value = serde_json::from_str(&text).expect("problem body is JSON");
        assert_eq!(body["code"], code, "problem body: {body}");
        assert_eq!(body["status"], status.as_u16(), "problem body: {body}");
        assert!(body["type"].is_string(), "problem body: {body}");
        assert!(body["title"].is_string(), "problem body: {body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "problem body: {body}"
        );
        body
    }

    fn assert_no_leak(&self, text: &str) {
        let lower = text.to_lowercase();
        for word in [
            "sqlite",
            "postgres",
            "tokio",
            "relation",
            "sqlstate",
            "search_path",
            "tenancy_shared",
        ] {
            assert!(!lower.contains(word), "problem mentions {word:?}: {text}");
        }
        // SQL the server ran. (Only in capitals: the tests send hostile names with SQL
        // words in them, which problems may quote back.)
        for sql in ["SELECT", "INSERT INTO", "CREATE DATABASE", "CREATE SCHEMA"] {
            assert!(!text.contains(sql), "problem contains SQL {sql:?}: {text}");
        }
        let dir = self.dir.path().to_string_lossy().into_owned();
        assert!(!text.contains(&dir), "problem names the data dir: {text}");
        for needle in ["/tmp/", "/var/", "/home/", ".db", ".rs:", "tenants/"] {
            assert!(
                !text.contains(needle),
                "problem contains {needle:?} (a file path?): {text}"
            );
        }
        for store in &self.engine.config().stores {
            assert!(
                !text.contains(&store.url),
                "problem names a store URL: {text}"
            );
            assert!(
                !text.contains(&store.database_prefix),
                "problem names the store's databases: {text}"
            );
        }
    }

    async fn add_member(&self, slug: &str, name: &str) {
        let (status, body) = self
            .json(
                Method::POST,
                &format!("/t/{slug}/v1/data/members"),
                Some(ADMIN_TOKEN),
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(status, 201, "adding {name:?} to {slug}: {body}");
    }

    async fn member_names(&self, slug: &str) -> Vec<String> {
        let (status, body) = self
            .json(
                Method::GET,
                &format!("/t/{slug}/v1/data/members?order=name"),
                Some(ADMIN_TOKEN),
                None,
            )
            .await;
        assert_eq!(status, 200, "members of {slug}: {body}");
        body["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|m| m["name"].as_str().expect("name").to_owned())
            .collect()
    }
}

// ---------------------------------------------------------------- the stores, read directly

/// The `.db` files of a store folder (missing folder: none).
fn db_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".db"))
        .collect();
    files.sort();
    files
}

/// `name` with the tenant id it carries (`<prefix><uuid hex><suffix>`) as a hyphenated
/// id; anything else verbatim, so that a stray file, database or schema shows up.
fn id_in(name: &str, prefix: &str, suffix: &str) -> String {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(suffix))
        .and_then(|id| uuid::Uuid::parse_str(id).ok())
        .map_or_else(|| name.to_owned(), |id| id.hyphenated().to_string())
}

/// An admin connection to the test's PostgreSQL database (the store's own URL).
async fn pg_admin(s: &Server) -> tokio_postgres::Client {
    let url = &s.engine.config().stores[0].url;
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connecting to the test database");
    tokio::spawn(conn);
    client
}

/// The ids of the tenants holding data in the stores, read from the stores themselves
/// and sorted: SQLite files, PostgreSQL databases and schemas by the id in their name,
/// and the tenant ids of rows in the shared tables (a `shared` tenant holds nothing until
/// it writes). Every store is read, whatever the backend: nothing may land elsewhere.
async fn holders(s: &Server) -> Vec<String> {
    let mut ids: Vec<String> = db_files(&s.dir.path().join("tenants"))
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            // A tenant that was written to has its WAL files next to its database.
            let name = name
                .strip_suffix("-wal")
                .or_else(|| name.strip_suffix("-shm"))
                .unwrap_or(&name);
            id_in(name, "", ".db")
        })
        .collect();
    if s.backend != Backend::Sqlite {
        let pg = pg_admin(s).await;
        let prefix = format!("{}_", s.engine.config().stores[0].database_prefix);
        for row in pg
            .query("SELECT datname FROM pg_database", &[])
            .await
            .unwrap()
        {
            let name: String = row.get(0);
            // The test's own database and the store's template hold no tenant.
            let store_owned =
                name == format!("{prefix}main") || name.starts_with(&format!("{prefix}tpl_"));
            if name.starts_with(&prefix) && !store_owned {
                ids.push(id_in(&name, &prefix, ""));
            }
        }
        for row in pg
            .query(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_%'",
                &[],
            )
            .await
            .unwrap()
        {
            ids.push(id_in(&row.get::<_, String>(0), "t_", ""));
        }
        for row in pg
            .query(
                "SELECT table_name FROM information_schema.columns \
                 WHERE table_schema = 'tenancy_shared' AND column_name = 'tenant_id'",
                &[],
            )
            .await
            .unwrap()
        {
            let table: String = row.get(0);
            // The test runs as a superuser: row-level security does not hide rows from it.
            let sql = format!("SELECT DISTINCT tenant_id::text FROM tenancy_shared.\"{table}\"");
            for row in pg.query(&sql, &[]).await.unwrap() {
                ids.push(row.get(0));
            }
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

/// The ids of `tenants` (bodies of the API), sorted, as [`holders`] reports them.
fn ids_of(tenants: &[&Value]) -> Vec<String> {
    let mut ids: Vec<String> = tenants
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

/// The tenant as the engine sees it (its placement included).
async fn engine_tenant(s: &Server, slug: &str) -> Tenant {
    s.engine
        .tenant(&Slug::parse(slug).unwrap())
        .await
        .expect("tenant")
}

fn assert_active_tenant(backend: Backend, body: &Value, slug: &str, name: &str) {
    assert!(
        body["id"].as_str().is_some_and(|id| id.len() == 36),
        "id: {body}"
    );
    assert_eq!(body["slug"], slug, "{body}");
    assert_eq!(body["name"], name, "{body}");
    assert_eq!(body["status"], "active", "{body}");
    assert_eq!(body["mode"], backend.mode().as_str(), "{body}");
    let store = if backend == Backend::Sqlite {
        "default"
    } else {
        "pg"
    };
    assert_eq!(body["store"], store, "{body}");
    assert_eq!(body["schema_version"], 2, "{body}");
    assert!(
        body.get("location").is_none(),
        "location is internal: {body}"
    );
    assert!(
        body.get("op_owner").is_none(),
        "op_owner is internal: {body}"
    );
}

four_modes!(
    health_and_readiness_answer_without_a_token,
    creates_lists_and_shows_a_tenant,
    name_defaults_to_the_slug,
    list_is_in_slug_order,
    name_with_sql_and_html_is_stored_verbatim,
    delete_removes_the_tenant_and_its_data_and_frees_the_slug,
    suspend_and_resume_keep_the_tenant_and_its_data,
    refuses_bad_slugs_and_creates_nothing,
    a_63_character_slug_is_fine,
    duplicate_slug_is_a_conflict,
    unknown_or_invalid_tenant_is_not_found,
    json_content_type_with_parameters_is_accepted,
    unknown_modes_and_stores_are_refused,
    mode_and_store_choose_the_placement,
    bad_names_are_refused,
    unauthorized_delete_leaves_the_tenant,
    concurrent_creates_of_one_slug_make_one_tenant,
    concurrent_creates_of_different_slugs_all_succeed,
);

// ---------------------------------------------------------------- service endpoints

async fn health_and_readiness_answer_without_a_token(backend: Backend) {
    let Some(server) = Server::start_on(backend).await else {
        return;
    };
    let resp = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ok");

    // Ready means the catalog answers: on PostgreSQL backends, the PostgreSQL catalog.
    let resp = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

// ---------------------------------------------------------------- create, list, show

async fn creates_lists_and_shows_a_tenant(backend: Backend) {
    let Some(server) = Server::start_on(backend).await else {
        return;
    };
    let resp = server.create("acme", Some("Acme Inc.")).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        resp.headers()
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .as_deref(),
        Some("/v1/tenants/acme")
    );
    assert!(resp.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let created: Value = resp.json().await.unwrap();
    assert_active_tenant(backend, &created, "acme", "Acme Inc.");
    let placed = engine_tenant(&server, "acme").await;
    assert_eq!(placed.placement.mode, backend.mode());
    assert_eq!(placed.id.to_string(), created["id"].as_str().unwrap());

    // Its data lives in its own place of the store (file, database, schema or rows).
    server.add_member("acme", "Aria").await;
    assert_eq!(holders(&server).await, ids_of(&[&created]));
    if backend == Backend::Sqlite {
        let file = server
            .dir
            .path()
            .join("tenants")
            .join(format!("{}.db", created["id"].as_str().unwrap()));
        assert!(file.is_file(), "the tenant's file exists");
    }

    let listed = server.list().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], created["id"]);
    assert_active_tenant(backend, &listed[0], "acme", "Acme Inc.");

    let resp = server.get("/v1/tenants/acme").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let shown: Value = resp.json().await.unwrap();
    assert_eq!(shown["id"], created["id"]);
    assert_active_tenant(backend, &shown, "acme", "Acme Inc.");
}

async fn name_defaults_to_the_slug(backend: Backend) {
    let Some(server) = Server::start_on(backend).await else {
        return;
    };
    let created = server.create_ok("globex", None).await;
    assert_active_tenant(backend, &created, "globex", "globex");

    let created = server
        .post_json("/v1/tenants", &json!({ "slug": "initech", "name": null }))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    assert_active_tenant(backend, &created, "initech", "initech");

    let resp = server.get("/v1/tenants/globex").await;
    let shown: Value = resp.json().await.unwrap();
    assert_eq!(shown["name"], "globex");
}

async fn list_is_in_slug_order(backend: Backend) {
    let Some(server) = Server::start_on(backend).await else {
        return;
    };
    for slug in ["zeta", "alpha", "mid-1"] {
        server.create_ok(slug, None).await;
    }
    let slugs: Vec<Value> = server
        .list()
        .await
        .into_iter()
        .map(|t| t["slug"].clone())
        .collect();
    assert_eq!(slugs, vec![json!("alpha"), json!("mid-1"), json!("zeta")]);
}

async fn name_with_sql_and_html_is_stored_verbatim(backend: Backend) {
    let Some(server) = Server::start_on(backend).await else {
        return;
    };
    let name = "<script>x</script>'); DROP TABLE tenants;--";
    let created = server.create_ok("bobby", Some(name)).await;
    assert_eq!(created["name"], name);

    let shown: Value = server.get("/v1/tenants/bobby").await.json().await.unwrap();
    assert_eq!(shown["name"], name);

    let listed = server.list().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], name);

    // Unicode names are fine too.
    let created = server.create_ok("cafe", Some("Café \u{1F600} 東京")).await;
    assert_eq!(created["name"], "Café \u{1F600} 東京");
    let shown: Value = server.get("/v1/tenants/cafe").await.json().await.unwrap();
    assert_eq!(shown["name"], "Café \u{1F600} 東京");
}

// ---------------------------------------------------------------- delete

async fn delete_removes_the_tenant_and_its_data_and_frees_the_slug(backend: Backend) {
    let Some(server) = Server::start_on(backend).await else {
        return;
    };
    let created = server.create_ok("acme", None).await;
    let id = created["id"].as_str().unwrap().to_owned();
    server.add_member("acme", "Aria").await;
    // A neighbour, whose data must survive.
    let other = server.create_ok("other", None).await;
    server.add_member("other", "Borin").await;
    assert_eq!(holders(&server).await, ids_of(&[&created, &other]));

    let resp = server.delete("/v1/tenants/acme").await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(resp.text().await.unwrap().is_empty(), "204 has no body");

    let resp = server.get("/v1/tenants/acme").await;
    server
        .problem(resp, StatusCode::NOT_FOUND, "tenant_not_found")
        .await;
    // Its data is gone (file, database, schema or rows); the neighbour's is not.
    assert_eq!(
        holders(&server).await,
        ids_of(&[&other]),
        "no data of the deleted tenant remains"
    );
    assert!(
        db_files(&server.dir.path().join("tenants"))
            .iter()
            .all(|p| !p.to_string_lossy().contains(&id)),
        "no file of the deleted tenant remains"
    );
    assert_eq!(server.member_names("other").await, ["Borin"]);
    let listed = server.list().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], other["id"]);
    // Its data API is gone with it.
    let resp = server
        .call(
            Method::GET,
            "/t/acme/v1/data/members",
            Some(ADMIN_TOKEN),
            &[],
            None,
        )
        .await;
    server
        .problem(resp, StatusCode::NOT_FOUND, "tenant_not_found")
        .await;

    // Deleting again: gone.
    let resp = server.delete("/v1/tenants/acme").await;
    server
        .problem(resp, StatusCode::NOT_FOUND, "tenant_not_found")
        .await;

    // The slug is free again, under a new id, with nothing of the old tenant's data.
    let again = server.create_ok("acme", None).await;
    assert_active_tenant(backend, &again, "acme", "acme");
    assert_ne!(again["id"], created["id"]);
    assert_eq!(server.member_names("acme").await, Vec::<String>::new());
    server.add_member("acme", "Aria").await;
    assert_eq!(holders(&server).await, ids_of(&[&again, &other]));
    let listed = server.list().await;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], again["id"]);
}

// ---------------------------------------------------------------- suspend, resume

async fn suspend_and_resume_keep_the_tenant_and_its_data(backend: Backend) {
    let Some(server) = Server::start_on(backend).await else {
        return;
    };
    let created = server.create_ok("acme", None).await;
    server.add_member("acme", "Aria").await;

    let resp = server
        .post_json("/v1/tenants/acme/suspend", &json!({}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let suspended: Value = resp.json().await.unwrap();
    assert_eq!(suspended["status"], "suspended", "{suspended}");
    assert_eq!(suspended["id"], created["id"]);
    let shown: Value = server.get("/v1/tenants/acme").await.json().await.unwrap();
    assert_eq!(shown["status"], "suspended");
    assert_eq!(server.list().await[0]["status"], "suspended");

    // A suspended tenant answers 403 `tenant_suspended`, to its data API too.
    for path in ["/t/acme/v1/tenant", "/t/acme/v1/data/members"] {
        let resp = server
            .call(Method::GET, path, Some(ADMIN_TOKEN), &[], None)
            .await;
        server
            .problem(resp, StatusCode::FORBIDDEN, "tenant_suspended")
            .await;
    }
    let resp = server
        .call(
            Method::POST,
            "/t/acme/v1/data/members",
            Some(ADMIN_TOKEN),
            &[],
            Some(json!({ "name": "Borin" })),
        )
        .await;
    server
        .problem(resp, StatusCode::FORBIDDEN, "tenant_suspended")
        .await;
    // Suspended twice: refused, nothing changes.
    let resp = server
        .post_json("/v1/tenants/acme/suspend", &json!({}))
        .await;
    server
        .problem(resp, StatusCode::CONFLICT, "invalid_state")
        .await;
    assert_eq!(
        holders(&server).await,
        ids_of(&[&created]),
        "suspension keeps the data"
    );

    let resp = server
        .post_json("/v1/tenants/acme/resume", &json!({}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resumed: Value = resp.json().await.unwrap();
    assert_active_tenant(backend, &resumed, "acme", "acme");
    let resp = server
        .post_json("/v1/tenants/acme/resume", &json!({}))
        .await;
    server
        .problem(resp, StatusCode::CONFLICT, "invalid_state")
        .await;
    assert_eq!(server.member_names("acme").await, ["Aria"]);
    server.add_member("acme", "Borin").await;
    assert_eq!(server.member_names("acme").await, ["Aria", "Borin"]);

    // Unknown tenants: the one 404.
    for action in ["suspend", "resume"] {
        let resp = server
            .post_json(&format!("/v1/tenants/nobody/{action}"), &json!({}))
            .await;
        server
            .problem(resp, StatusCode::NOT_FOUND, "tenant_not_found")
            .await;
    }

    // A suspended tenant can be deleted, data and all.
    let resp = server
        .post_json("/v1/tenants/acme/suspend", &json!({}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = server.delete("/v1/tenants/acme").await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    server.assert_no_tenants().await;
}

// ---------------------------------------------------------------- refusals

async fn refuses_bad_slugs_and_creates_nothing(backend: Backend) {
    let Some(server) = Server::start_on(backend).await else {
        return;
    };
    let long = "a".repeat(64);
    for bad in [
        "Acme",
        "ac_me",
        "-acme",
        "acme-",
        long.as_str(),
        "",
        "acmé",
        "www",
        "api",
        "admin",
        "t",
        "a b",
        "x;drop table tenants",
        "acme\n",
        "ac.me",
        "ac/me",
        "\u{0}",
    ] {
        let resp = server.create(bad, Some("Fine Name")).await;
        let body = server
            .problem(resp, StatusCode::BAD_REQUEST, "invalid_slug")
            .await;
        assert!(body["detail"].is_string(), "{bad:?}: {body}");
    }
    server.assert_no_tenants().await;
}

async fn a_63_character_slug_is_fine(backend: Backend) {
    let Some(server) = Server::start_on(backend).await else {
        return;
    };
    let slug = "a".repeat(63);
    let created = server.create_ok(&slug, None).await;
    assert_active_tenant(backend, &created, &slug, &slug);
    let resp = server.get(&format!("/v1/tenants/{slug}")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    // Its data API works: no store name is built from the slug.
    server.add_member(&slug, "Aria").await;
    assert_eq!(server.member_names(&slug).await, ["Aria"]);
}

async fn duplicate_slug_is_a_conflict(backend: Backend) {
    let Some(server) = Server::start_on(backend).await else {
        return;
    };
    let first = server.create_ok("acme", Some("First")).await;
    server.add_member("acme", "Aria").await;
    let resp = server.create("acme", Some("Second")).await;
    server
        .problem(resp, StatusCode::CONFLICT, "tenant_exists")
        .await;
    let listed = server.list().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], first["id"]);
    assert_eq!(listed[0]["name"], "First");
    assert_eq!(holders(&server).await, ids_of(&[&first]));
    assert_eq!(server.member_names("acme").await, ["Aria"]);
}

async fn unknown_or_invalid_tenant_is_not_found(backend: Backend) {
    let Some(server) = Server::start_on(backend).await else {
        return;
    };
    for path in [
        "/v1/tenants/nobody",
        "/v1/tenants/Acme",
        "/v1/tenants/ac_me",
        "/v1/tenants/www",
        "/v1/tenants/-acme",
        &format!("/v1/tenants/{}", "a".repeat(200)),
        "/v1/tenants/x%3Bdrop%20table%20tenants",
        "/v1/tenants/acm%C3%A9",
    ] {
        let resp = server.get(path).await;
        server
            .problem(resp, StatusCode::NOT_FOUND, "tenant_not_found")
            .await;
        let resp = server.delete(path).await;
        server
            .problem(resp, StatusCode::NOT_FOUND, "tenant_not_found")
            .await;
    }
    server.assert_no_tenants().await;
}

/// Request parsing alone: no tenant is reached (SQLite only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_refused() {
    let server = Server::start().await;
    for body in [
        "{",
        "{\"slug\": \"acme\"",
        "not json",
        "{'slug': 'acme'}",
        "",
    ] {
        let resp = server
            .post_raw("/v1/tenants", "application/json", body)
            .await;
        server
            .problem(resp, StatusCode::BAD_REQUEST, "malformed_json")
            .await;
    }
    server.assert_no_tenants().await;
}

/// Request parsing alone: no tenant is reached (SQLite only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_type_is_refused() {
    let server = Server::start().await;
    let body = r#"{"slug":"acme"}"#;
    let resp = server.post_raw("/v1/tenants", "text/plain", body).await;
    server
        .problem(
            resp,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
    // No content type at all.
    let resp = server
        .client
        .post(server.url("/v1/tenants"))
        .header(AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
        .body(body)
        .send()
        .await
        .unwrap();
    server
        .problem(
            resp,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
    server.assert_no_tenants().await;
}

async fn json_content_type_with_parameters_is_accepted(backend: Backend) {
    let Some(server) = Server::start_on(backend).await else {
        return;
    };
    let resp = server
        .post_raw(
            "/v1/tenants",
            "application/json; charset=utf-8",
            r#"{"slug":"acme"}"#,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
}

/// Request parsing alone: no tenant is reached (SQLite only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_refused() {
    let server = Server::start().await;
    // One byte over axum's default 2 MiB limit: the server reads the whole body before it
    // refuses, so the client never writes into a closed connection.
    let limit = 2 * 1024 * 1024;
    let frame = r#"{"slug":"acme","name":""}"#.len();
    let body = format!(
        r#"{{"slug":"acme","name":"{}"}}"#,
        "x".repeat(limit + 1 - frame)
    );
    assert_eq!(body.len(), limit + 1);
    let resp = server
        .post_raw("/v1/tenants", "application/json", &body)
        .await;
    server
        .problem(resp, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
        .await;
    server.assert_no_tenants().await;
}

/// Request parsing alone: no tenant is reached (SQLite only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_and_wrong_types_are_invalid_bodies() {
    let server = Server::start().await;
    for body in [
        json!({ "slug": 5 }),
        json!({ "slug": "acme", "name": 7 }),
        json!({ "slug": "acme", "nmae": "Acme" }),
        json!({ "slug": "acme", "mode": 3 }),
        json!({ "slug": "acme", "store": ["pg"] }),
        json!({ "name": "Acme" }),
        json!({}),
        json!(["acme"]),
        json!("acme"),
        json!(null),
    ] {
        let resp = server.post_json("/v1/tenants", &body).await;
        server
            .problem(resp, StatusCode::BAD_REQUEST, "invalid_body")
            .await;
    }
    server.assert_no_tenants().await;
}

async fn unknown_modes_and_stores_are_refused(backend: Backend) {
    let Some(server) = Server::start_on(backend).await else {
        return;
    };
    let mut cases = vec![
        // The SQLite store (`default`, present in every deployment) holds only
        // `database` tenants.
        (
            json!({ "slug": "acme", "store": "default", "mode": "shared" }),
            "mode_not_supported",
        ),
        (
            json!({ "slug": "acme", "store": "default", "mode": "schema" }),
            "mode_not_supported",
        ),
        (
            json!({ "slug": "acme", "mode": "Database" }),
            "invalid_mode",
        ),
        (json!({ "slug": "acme", "mode": "db'; --" }), "invalid_mode"),
        (
            json!({ "slug": "acme", "store": "nowhere" }),
            "unknown_store",
        ),
        (
            json!({ "slug": "acme", "store": "x\"; DROP DATABASE y; --" }),
            "unknown_store",
        ),
        (
            json!({ "slug": "acme", "store": "PG", "mode": "shared" }),
            "unknown_store",
        ),
    ];
    if backend == Backend::Sqlite {
        // The default store is the SQLite one.
        cases.extend([
            (
                json!({ "slug": "acme", "mode": "shared" }),
                "mode_not_supported",
            ),
            (
                json!({ "slug": "acme", "mode": "schema" }),
                "mode_not_supported",
            ),
        ]);
    }
    for (body, code) in cases {
        let resp = server.post_json("/v1/tenants", &body).await;
        server.problem(resp, StatusCode::BAD_REQUEST, code).await;
    }
    server.assert_no_tenants().await;
}

async fn mode_and_store_choose_the_placement(backend: Backend) {
    let Some(server) = Server::start_on(backend).await else {
        return;
    };
    // (slug, body, store, mode): what each backend's deployment can hold.
    let mut cases = vec![(
        "local".to_owned(),
        json!({ "slug": "local", "store": "default", "mode": "database" }),
        "default",
        Mode::Database,
    )];
    if backend != Backend::Sqlite {
        for mode in [Mode::Database, Mode::Schema, Mode::Shared] {
            let slug = format!("pg-{}", mode.as_str());
            let body = json!({ "slug": slug, "store": "pg", "mode": mode.as_str() });
            cases.push((slug, body, "pg", mode));
        }
        cases.push((
            "by-default".to_owned(),
            json!({ "slug": "by-default", "store": "pg" }),
            "pg",
            backend.mode(),
        ));
    }
    let mut created = Vec::new();
    for (slug, body, store, mode) in &cases {
        let resp = server.post_json("/v1/tenants", body).await;
        let status = resp.status();
        let tenant: Value = resp.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}: {tenant}");
        assert_eq!(
            (tenant["store"].as_str(), tenant["mode"].as_str()),
            (Some(*store), Some(mode.as_str())),
            "{body}"
        );
        let placed = engine_tenant(&server, slug).await;
        assert_eq!(placed.placement.store, *store);
        assert_eq!(placed.placement.mode, *mode);
        // Each serves its data, alone.
        server.add_member(slug, &format!("member of {slug}")).await;
        created.push(tenant);
    }
    for (slug, ..) in &cases {
        assert_eq!(
            server.member_names(slug).await,
            [format!("member of {slug}")]
        );
    }
    let created: Vec<&Value> = created.iter().collect();
    assert_eq!(holders(&server).await, ids_of(&created));
}

async fn bad_names_are_refused(backend: Backend) {
    let Some(server) = Server::start_on(backend).await else {
        return;
    };
    let long = "n".repeat(201);
    for name in [
        "",
        "   ",
        "Acme\u{0}",
        "Ac\nme",
        "Ac\u{7}me",
        "\tAcme",
        "Acme\u{1b}[31m",
        "Acme\u{7f}",
        long.as_str(),
    ] {
        let resp = server.create("acme", Some(name)).await;
        server
            .problem(resp, StatusCode::BAD_REQUEST, "invalid_name")
            .await;
    }
    server.assert_no_tenants().await;
    // 200 characters (not bytes) is the limit.
    let name = "é".repeat(200);
    let created = server.create_ok("acme", Some(&name)).await;
    assert_eq!(created["name"], name.as_str());
}

// ---------------------------------------------------------------- auth

/// Authentication alone: no tenant is reached (SQLite only). Its own admin token, in
/// mixed case, so that changing the case makes a wrong token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_admin_token_are_unauthorized() {
    let server = Server::start_with_admin_token(MIXED_CASE_TOKEN).await;
    let token = MIXED_CASE_TOKEN;
    let wrong_case = token.to_uppercase();
    assert_ne!(wrong_case, token);
    assert_ne!(token.to_lowercase(), token);
    let variants: Vec<Option<String>> = vec![
        None,
        Some("Bearer wrong-token".into()),
        Some(format!("Basic {token}")),
        Some("Basic xxx".into()),
        Some(format!("Bearer {wrong_case}")),
        Some(format!("Bearer {}", token.to_lowercase())),
        Some(format!("Bearer {token}x")),
        Some(format!("Bearer {}", &token[..token.len() - 1])),
        Some(token.to_owned()),
        Some("Bearer".into()),
        Some("Bearer ".into()),
        Some(format!("Token {token}")),
        // Shapes of the other credentials, forged.
        Some("Bearer tny_admin_0000000000000000".into()),
        Some("Bearer tny_key_abc.def".into()),
        Some("Bearer tny_".into()),
        Some("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln".into()),
        Some("Bearer a.b.c".into()),
        Some(format!("Bearer {}", "x".repeat(5000))),
    ];
    for auth in &variants {
        let with_auth = |rb: reqwest::RequestBuilder| match auth {
            Some(value) => rb.header(AUTHORIZATION, value),
            None => rb,
        };
        let requests = [
            with_auth(server.client.post(server.url("/v1/tenants")))
                .json(&json!({ "slug": "acme", "name": "Acme" })),
            with_auth(server.client.get(server.url("/v1/tenants"))),
            with_auth(server.client.get(server.url("/v1/tenants/acme"))),
            with_auth(server.client.delete(server.url("/v1/tenants/acme"))),
        ];
        for request in requests {
            let resp = request.send().await.unwrap();
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .map(|v| v.to_str().unwrap().to_owned());
            assert!(
                challenge
                    .as_deref()
                    .is_some_and(|c| c.starts_with("Bearer")),
                "{auth:?}: www-authenticate is {challenge:?}"
            );
            server
                .problem(resp, StatusCode::UNAUTHORIZED, "unauthorized")
                .await;
        }
    }
    server.assert_no_tenants_as(token).await;
}

async fn unauthorized_delete_leaves_the_tenant(backend: Backend) {
    let Some(server) = Server::start_on(backend).await else {
        return;
    };
    let created = server.create_ok("acme", None).await;
    server.add_member("acme", "Aria").await;
    let resp = server
        .client
        .delete(server.url("/v1/tenants/acme"))
        .header(AUTHORIZATION, "Bearer nope")
        .send()
        .await
        .unwrap();
    server
        .problem(resp, StatusCode::UNAUTHORIZED, "unauthorized")
        .await;
    let shown: Value = server.get("/v1/tenants/acme").await.json().await.unwrap();
    assert_eq!(shown["id"], created["id"]);
    assert_eq!(holders(&server).await, ids_of(&[&created]));
    assert_eq!(server.member_names("acme").await, ["Aria"]);
}

/// Authentication alone: no tenant is reached (SQLite only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_checked_before_the_body() {
    let server = Server::start().await;
    let resp = server
        .client
        .post(server.url("/v1/tenants"))
        .header(CONTENT_TYPE, "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    server
        .problem(resp, StatusCode::UNAUTHORIZED, "unauthorized")
        .await;
}

/// Authentication alone: no tenant is reached (SQLite only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_scheme_is_case_insensitive() {
    let server = Server::start().await;
    let resp = server
        .client
        .get(server.url("/v1/tenants"))
        .header(AUTHORIZATION, format!("bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

// ---------------------------------------------------------------- routing

/// Routing alone: no tenant is reached (SQLite only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_not_found_problems() {
    let server = Server::start().await;
    for path in [
        "/",
        "/nope",
        "/v1",
        "/v1/tenant-list",
        "/v1/tenants/acme/extra",
    ] {
        let resp = server.get(path).await;
        server
            .problem(resp, StatusCode::NOT_FOUND, "not_found")
            .await;
    }
    // Without a token too: an unknown route says nothing about auth.
    let resp = server.client.get(server.url("/nope")).send().await.unwrap();
    server
        .problem(resp, StatusCode::NOT_FOUND, "not_found")
        .await;
}

/// Routing alone: no tenant is reached (SQLite only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_are_not_allowed() {
    let server = Server::start().await;
    let put = server
        .call(
            Method::PUT,
            "/v1/tenants",
            Some(ADMIN_TOKEN),
            &[],
            Some(json!({ "slug": "acme" })),
        )
        .await;
    let allow = put
        .headers()
        .get(reqwest::header::ALLOW)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        allow.contains("GET") && allow.contains("POST"),
        "405 lists the allowed methods: {allow:?}"
    );
    server
        .problem(put, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        .await;
    let delete = server.delete("/v1/tenants").await;
    server
        .problem(delete, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        .await;
    let post = server.post_json("/v1/tenants/acme", &json!({})).await;
    server
        .problem(post, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        .await;
    let post = server.post_json("/healthz", &json!({})).await;
    server
        .problem(post, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        .await;
    server.assert_no_tenants().await;
}

// ---------------------------------------------------------------- concurrency

async fn concurrent_creates_of_one_slug_make_one_tenant(backend: Backend) {
    let Some(server) = Server::start_on(backend).await else {
        return;
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let client = server.client.clone();
        let url = server.url("/v1/tenants");
        tasks.spawn(async move {
            client
                .post(url)
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({ "slug": "acme", "name": format!("Acme {i}") }))
                .send()
                .await
                .unwrap()
        });
    }
    let mut created = Vec::new();
    let mut conflicts = 0;
    while let Some(resp) = tasks.join_next().await {
        let resp = resp.unwrap();
        match resp.status() {
            StatusCode::CREATED => created.push(resp.json::<Value>().await.unwrap()),
            StatusCode::CONFLICT => {
                server
                    .problem(resp, StatusCode::CONFLICT, "tenant_exists")
                    .await;
                conflicts += 1;
            }
            other => panic!(
                "unexpected status {other}: {}",
                resp.text().await.unwrap_or_default()
            ),
        }
    }
    assert_eq!(created.len(), 1, "exactly one create wins");
    assert_eq!(conflicts, 19);
    let listed = server.list().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], created[0]["id"]);
    if backend == Backend::Sqlite {
        let id = created[0]["id"].as_str().unwrap();
        let tenants = server.dir.path().join("tenants");
        assert_eq!(db_files(&tenants), vec![tenants.join(format!("{id}.db"))]);
    }
    // The winner's data, and no trace of the losers.
    server.add_member("acme", "Aria").await;
    assert_eq!(holders(&server).await, ids_of(&[&created[0]]));
}

async fn concurrent_creates_of_different_slugs_all_succeed(backend: Backend) {
    let Some(server) = Server::start_on(backend).await else {
        return;
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let client = server.client.clone();
        let base = server.base.clone();
        tasks.spawn(async move {
            let slug = format!("tenant-{i:02}");
            let resp = client
                .post(format!("{base}/v1/tenants"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({ "slug": slug }))
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let text = resp.text().await.unwrap();
            // Each writes at once, while the others are still being provisioned.
            let written = client
                .post(format!("{base}/t/{slug}/v1/data/members"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({ "name": slug }))
                .send()
                .await
                .unwrap()
                .status();
            (i, status, text, written)
        });
    }
    let mut created = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (i, status, text, written) = done.unwrap();
        assert_eq!(status, StatusCode::CREATED, "tenant-{i:02}: {text}");
        assert_eq!(written, StatusCode::CREATED, "tenant-{i:02} writes");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_active_tenant(
            backend,
            &body,
            &format!("tenant-{i:02}"),
            &format!("tenant-{i:02}"),
        );
        created.push(body);
    }
    let listed = server.list().await;
    assert_eq!(listed.len(), 20);
    let slugs: Vec<String> = listed
        .iter()
        .map(|t| t["slug"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..20).map(|i| format!("tenant-{i:02}")).collect();
    assert_eq!(slugs, expected);
    let created: Vec<&Value> = created.iter().collect();
    assert_eq!(holders(&server).await, ids_of(&created));
    if backend == Backend::Sqlite {
        let databases = db_files(&server.dir.path().join("tenants"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "db"))
            .count();
        assert_eq!(databases, 20);
    }
    // Each sees its own row only.
    for slug in &expected {
        assert_eq!(&server.member_names(slug).await, std::slice::from_ref(slug));
    }
}
