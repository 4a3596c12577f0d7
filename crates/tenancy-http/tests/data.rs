//! The tenant data API (`/v1/data/{table}[/{id}]`) over real HTTP: the guild example end to
//! end, the query language, keyset pagination, writes, every column type, hostile input,
//! roles, resolvers and tenant isolation.
//!
//! One suite, four instantiations (DESIGN §10): every test is an `async fn(Backend)` that
//! [`four_modes!`] runs on SQLite and on PostgreSQL in `database`, `schema` and `shared`
//! mode. The assertions are the same everywhere; where PostgreSQL legitimately answers
//! differently, the test says why next to the assertion that tells the two apart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::cmp::Reverse;

use common::{Backend, Server, ADMIN_TOKEN};
use reqwest::Method;
use serde_json::{json, Value};
use tenancy::rusqlite::types::Value as SqlValue;
use tenancy::store::TenantSession;
use tenancy::{MigrationSource, Slug};
use tenancy_http::HttpConfig;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Filter parameters and the ids they select.
type FilterCase<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);

/// How a request names its tenant: label, path, bearer token, extra headers.
type Way<'a> = (&'a str, String, &'a str, Vec<(&'a str, &'a str)>);

/// Percent-encodes every byte but ASCII letters, digits and `-_.~`.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A query string from raw (unencoded) pairs.
fn qs(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

const B64_STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

fn unb64url(s: &str) -> Vec<u8> {
    let (mut bits, mut n, mut out) = (0u32, 0u32, Vec::new());
    for c in s.bytes() {
        let v = B64_URL.iter().position(|&a| a == c).expect("base64url") as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}

/// Asserts a problem+json answer and returns its `detail`.
#[track_caller]
fn problem(got: &(u16, Value), status: u16, code: &str, context: &str) -> String {
    assert_eq!(
        (got.0, got.1["code"].as_str()),
        (status, Some(code)),
        "{context}: {}",
        got.1
    );
    got.1["detail"].as_str().unwrap_or_default().to_owned()
}

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Data API calls for one tenant, through `/t/{slug}`, as the platform admin (owner).
struct Api<'a> {
    s: &'a Server,
    slug: String,
}

impl<'a> Api<'a> {
    fn new(s: &'a Server, slug: &str) -> Api<'a> {
        Api {
            s,
            slug: slug.to_owned(),
        }
    }

    /// `rest` is the part after `/v1/data/`.
    async fn call(&self, method: Method, rest: &str, body: Option<Value>) -> (u16, Value) {
        self.s
            .json(
                method,
                &format!("/t/{}/v1/data/{rest}", self.slug),
                Some(ADMIN_TOKEN),
                body,
            )
            .await
    }

    async fn get(&self, rest: &str) -> (u16, Value) {
        self.call(Method::GET, rest, None).await
    }

    /// The rows of a successful list.
    async fn rows(&self, table: &str, query: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("{table}?{query}")).await;
        assert_eq!(status, 200, "GET {table}?{query}: {body}");
        body["data"].as_array().expect("data").clone()
    }

    /// The created rows of a successful insert.
    async fn insert(&self, table: &str, body: Value) -> Vec<Value> {
        let (status, created) = self.call(Method::POST, table, Some(body)).await;
        assert_eq!(status, 201, "POST {table}: {created}");
        created["data"].as_array().expect("data").clone()
    }

    /// A raw request: any content type (or none), any bytes.
    async fn raw(
        &self,
        method: Method,
        rest: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> reqwest::Result<(u16, Value)> {
        let mut req = self
            .s
            .client
            .request(
                method,
                format!("{}/t/{}/v1/data/{rest}", self.s.base, self.slug),
            )
            .bearer_auth(ADMIN_TOKEN)
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }
}

/// A PostgreSQL tenant's own transaction, its context set: in `shared` mode it sees only
/// the tenant's rows, as the data API does.
async fn pg_session(s: &Server, slug: &str) -> TenantSession {
    let tenant = s
        .engine
        .tenant(&Slug::parse(slug).unwrap())
        .await
        .expect("tenant");
    s.engine.session(&tenant).await.expect("session")
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Every row of every table of a tenant (and its schema), read directly: on SQLite from
/// its database, on PostgreSQL from the tables its session sees (in `shared` mode, its
/// own rows of the shared tables).
async fn snapshot(s: &Server, slug: &str) -> Vec<String> {
    if s.backend != Backend::Sqlite {
        return pg_snapshot(s, slug).await;
    }
    s.engine
        .with_tenant_db(&Slug::parse(slug).unwrap(), |db| {
            let tables: Vec<String> = {
                let mut stmt = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
                let names = stmt
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<Vec<String>, _>>()?;
                names
            };
            let mut out = Vec::new();
            for table in std::iter::once("sqlite_master".to_owned()).chain(tables) {
                let mut stmt = db.prepare(&format!("SELECT * FROM \"{table}\""))?;
                let n = stmt.column_count();
                let mut rows = stmt.query([])?;
                while let Some(row) = rows.next()? {
                    let values = (0..n)
                        .map(|i| row.get::<_, SqlValue>(i).map(|v| format!("{v:?}")))
                        .collect::<Result<Vec<_>, _>>()?;
                    out.push(format!("{table}: {}", values.join(" | ")));
                }
            }
            out.sort();
            Ok(out)
        })
        .await
        .expect("snapshot")
}

/// [`snapshot`] on PostgreSQL: the columns of the session's schema, then each row of each
/// table it may read, in the row's text form.
async fn pg_snapshot(s: &Server, slug: &str) -> Vec<String> {
    let session = pg_session(s, slug).await;
    let c = session.client();
    let mut out: Vec<String> = c
        .query(
            "SELECT format('%s.%s %s %s %s', table_name, column_name, data_type, \
             is_nullable, column_default) FROM information_schema.columns \
             WHERE table_schema = current_schema()",
            &[],
        )
        .await
        .expect("columns")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let tables: Vec<String> = c
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() \
             AND has_table_privilege(format('%I.%I', schemaname, tablename), 'SELECT')",
            &[],
        )
        .await
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!tables.is_empty(), "the session sees the tenant's tables");
    for table in tables {
        let rows = c
            .query(
                // `x.*`, not `x`: a column may bear the alias's name.
                &format!("SELECT ROW(x.*)::text FROM {} AS x", quoted(&table)),
                &[],
            )
            .await
            .expect("rows");
        out.extend(
            rows.iter()
                .map(|r| format!("{table}: {}", r.get::<_, String>(0))),
        );
    }
    session.commit().await.expect("commit");
    out.sort();
    out
}

async fn count(s: &Server, slug: &str, table: &'static str) -> i64 {
    if s.backend != Backend::Sqlite {
        let session = pg_session(s, slug).await;
        let n = session
            .client()
            .query_one(&format!("SELECT count(*) FROM {}", quoted(table)), &[])
            .await
            .expect("count")
            .get(0);
        session.commit().await.expect("commit");
        return n;
    }
    s.engine
        .with_tenant_db(&Slug::parse(slug).unwrap(), move |db| {
            Ok(
                db.query_row(&format!("SELECT COUNT(*) FROM \"{table}\""), [], |r| {
                    r.get(0)
                })?,
            )
        })
        .await
        .expect("count")
}

/// POSTs a JSON array of `len` bytes over a bare TCP connection, writing as long as the
/// server reads, and answers the status and body of whatever the server replied.
async fn post_huge(s: &Server, path: &str, len: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.base.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    let writing = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        let open = br#"[{"name":""#;
        let close = br#""}]"#;
        writer.write_all(open).await?;
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = len - open.len() - close.len();
        while left > 0 {
            let n = left.min(chunk.len());
            writer.write_all(&chunk[..n]).await?;
            left -= n;
        }
        writer.write_all(close).await?;
        writer.flush().await
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let mut buf = [0u8; 8192];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    writing.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// A server of `backend` with the guild schema and one tenant, `g`; `None` (skip) where
/// the backend is PostgreSQL and PostgreSQL is unreachable.
async fn guild(backend: Backend) -> Option<Server> {
    let s = Server::start_on(backend).await?;
    s.create_tenant("g").await;
    Some(s)
}

/// Eight members with ties, nulls and awkward names; ids `m1`…`m8`.
fn roster() -> Value {
    json!([
        { "id": "m1", "name": "Aria", "class": "mage", "dkp": 10 },
        { "id": "m2", "name": "Borin", "class": "warrior", "dkp": 20 },
        { "id": "m3", "name": "Cyra", "class": null, "dkp": 30 },
        { "id": "m4", "name": "Dax", "class": "mage", "dkp": 40 },
        { "id": "m5", "name": "O'Neil", "class": "rogue", "dkp": 50 },
        { "id": "m6", "name": "a,b", "class": "priest", "dkp": 20 },
        { "id": "m7", "name": "Eve", "dkp": 0 },
        { "id": "m8", "name": "The \"Q\"", "class": "bard", "dkp": 60 },
    ])
}

/// A server of `backend` whose tenant schema has every column type
/// (`tests/fixtures/typed`, one file per dialect), with one tenant, `typed`.
async fn typed(backend: Backend) -> Option<Server> {
    let migrations = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/typed");
    let s = Server::start_on_with(backend, HttpConfig::default(), |config| {
        config.migrations = MigrationSource::Folder(migrations.into());
    })
    .await?;
    s.create_tenant("typed").await;
    Some(s)
}

fn is_uuid_v7(v: &Value) -> bool {
    v.as_str()
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
        .is_some_and(|u| {
            u.get_version_num() == 7 && u.hyphenated().to_string() == v.as_str().unwrap()
        })
}

fn is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

// ---------------------------------------------------------------------------------------
// 1. The guild walkthrough
// ---------------------------------------------------------------------------------------

async fn guild_walkthrough_over_http(backend: Backend) {
    let Some(s) = guild(backend).await else {
        return;
    };
    let api = Api::new(&s, "g");

    let members = api
        .insert(
            "members",
            json!([
                { "name": "Aria", "class": "mage" },
                { "name": "Borin", "class": "warrior" },
                { "name": "Cyra" },
            ]),
        )
        .await;
    assert_eq!(members.len(), 3);
    for m in &members {
        assert!(is_uuid_v7(&m["id"]), "{m}");
        assert_eq!(m["dkp"], 0, "default applied: {m}");
        assert!(is_rfc3339(&m["joined_at"]), "{m}");
    }
    assert_eq!(members[2]["class"], Value::Null);
    let (aria, borin, cyra) = (
        members[0]["id"].as_str().unwrap(),
        members[1]["id"].as_str().unwrap(),
        members[2]["id"].as_str().unwrap(),
    );

    let item = api
        .insert(
            "items",
            json!({ "name": "Thunderfury", "quality": "legendary" }),
        )
        .await
        .remove(0);
    let raid = api
        .insert("raids", json!({ "name": "Molten Core" }))
        .await
        .remove(0);
    let auction = api
        .insert(
            "auctions",
            json!({
                "item_id": item["id"],
                "raid_id": raid["id"],
                "closes_at": "2026-01-31T18:00:00Z",
            }),
        )
        .await
        .remove(0);
    assert_eq!(auction["status"], "open", "{auction}");
    assert_eq!(auction["min_bid"], 0);
    assert_eq!(auction["closes_at"], "2026-01-31T18:00:00Z");
    let auction_id = auction["id"].as_str().unwrap();

    let bids = api
        .insert(
            "bids",
            json!([
                { "auction_id": auction_id, "member_id": aria, "amount": 50 },
                { "auction_id": auction_id, "member_id": borin, "amount": 120 },
                { "auction_id": auction_id, "member_id": cyra, "amount": 80 },
            ]),
        )
        .await;
    assert_eq!(bids.len(), 3);

    // Constraints answer 409 and name themselves; nothing changes.
    let before = snapshot(&s, "g").await;
    let got = api
        .call(
            Method::POST,
            "bids",
            Some(json!({ "auction_id": auction_id, "member_id": aria, "amount": 0 })),
        )
        .await;
    let detail = problem(&got, 409, "constraint_violation", "zero bid");
    assert!(detail.contains("bids_amount_check"), "{detail}");
    let got = api
        .call(
            Method::POST,
            "bids",
            Some(json!({ "auction_id": auction_id, "member_id": "ghost", "amount": 5 })),
        )
        .await;
    let detail = problem(&got, 409, "constraint_violation", "unknown member");
    // PostgreSQL names the foreign key that refused; SQLite does not say which one did,
    // so the engine names the table's.
    let fkey = match backend {
        Backend::Sqlite => "(bids_fkey)",
        _ => "(bids_member_id_fkey)",
    };
    assert!(detail.ends_with(fkey), "{detail}");
    let got = api
        .call(Method::POST, "members", Some(json!({ "name": "Aria" })))
        .await;
    let detail = problem(&got, 409, "constraint_violation", "duplicate name");
    assert!(detail.ends_with("(members_name_key)"), "{detail}");
    let got = api
        .call(
            Method::POST,
            "items",
            Some(json!({ "name": "Stick", "quality": "shiny" })),
        )
        .await;
    let detail = problem(&got, 409, "constraint_violation", "bad quality");
    assert!(detail.contains("items_quality_check"), "{detail}");
    assert_eq!(snapshot(&s, "g").await, before);

    // The bids of the auction, highest first.
    let ranked = api
        .rows(
            "bids",
            &qs(&[
                ("auction_id", &format!("eq.{auction_id}")),
                ("order", "amount.desc"),
            ]),
        )
        .await;
    let amounts: Vec<i64> = ranked
        .iter()
        .map(|b| b["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, vec![120, 80, 50]);
    assert_eq!(ranked[0]["member_id"], borin);

    // Close it: the winner pays.
    let (status, closed) = api
        .call(
            Method::PATCH,
            &format!("auctions/{auction_id}"),
            Some(json!({ "status": "closed" })),
        )
        .await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["status"], "closed");
    assert_eq!(closed["id"], auction_id);
    assert_eq!(closed["item_id"], item["id"]);
    let (status, winner) = api
        .call(
            Method::PATCH,
            &format!("members/{borin}"),
            Some(json!({ "dkp": -120 })),
        )
        .await;
    assert_eq!((status, &winner["dkp"]), (200, &json!(-120)), "{winner}");
    let (status, shown) = api.get(&format!("auctions/{auction_id}")).await;
    assert_eq!((status, &shown["status"]), (200, &json!("closed")));
    let got = api
        .call(
            Method::PATCH,
            &format!("auctions/{auction_id}"),
            Some(json!({ "status": "sold" })),
        )
        .await;
    let detail = problem(&got, 409, "constraint_violation", "bad status");
    assert!(detail.contains("auctions_status_check"), "{detail}");
    assert!(api.rows("auctions", "status=eq.open").await.is_empty());
    assert_eq!(api.rows("auctions", "status=eq.closed").await.len(), 1);

    // Deleting the auction cascades to its bids.
    let (status, _) = api
        .call(Method::DELETE, &format!("auctions/{auction_id}"), None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(count(&s, "g", "bids").await, 0);
    assert_eq!(count(&s, "g", "members").await, 3);
}
four_modes!(guild_walkthrough_over_http);

// ---------------------------------------------------------------------------------------
// 2. The query language
// ---------------------------------------------------------------------------------------

async fn every_filter_operator_select_order_and_count(backend: Backend) {
    let Some(s) = guild(backend).await else {
        return;
    };
    let api = Api::new(&s, "g");
    api.insert("members", roster()).await;

    let cases: &[FilterCase] = &[
        (&[("dkp", "eq.20")], &["m2", "m6"]),
        (&[("dkp", "neq.20")], &["m1", "m3", "m4", "m5", "m7", "m8"]),
        (&[("dkp", "lt.20")], &["m1", "m7"]),
        (&[("dkp", "lte.20")], &["m1", "m2", "m6", "m7"]),
        (&[("dkp", "gt.30")], &["m4", "m5", "m8"]),
        (&[("dkp", "gte.30")], &["m3", "m4", "m5", "m8"]),
        (&[("dkp", "not.gte.30")], &["m1", "m2", "m6", "m7"]),
        (&[("dkp", "not.lt.50")], &["m5", "m8"]),
        (&[("class", "eq.mage")], &["m1", "m4"]),
        // NULL is neither equal nor unequal.
        (&[("class", "neq.mage")], &["m2", "m5", "m6", "m8"]),
        (&[("class", "not.eq.mage")], &["m2", "m5", "m6", "m8"]),
        (&[("class", "is.null")], &["m3", "m7"]),
        (
            &[("class", "not.is.null")],
            &["m1", "m2", "m4", "m5", "m6", "m8"],
        ),
        (&[("class", "in.(mage,rogue)")], &["m1", "m4", "m5"]),
        (&[("class", "not.in.(mage,rogue)")], &["m2", "m6", "m8"]),
        (&[("name", r#"in.("a,b","O'Neil")"#)], &["m5", "m6"]),
        (&[("name", r#"in.("The ""Q""",Dax)"#)], &["m4", "m8"]),
        (&[("name", "in.(a,b)")], &[]),
        (&[("dkp", r#"in.(10,"60")"#)], &["m1", "m8"]),
        (&[("name", "like.*y*")], &["m3"]),
        (&[("name", "like.%y%")], &["m3"]),
        (&[("name", "like.B*n")], &["m2"]),
        (
            &[("name", "not.like.*y*")],
            &["m1", "m2", "m4", "m5", "m6", "m7", "m8"],
        ),
        (&[("name", "eq.O'Neil")], &["m5"]),
        (&[("name", "eq.The \"Q\"")], &["m8"]),
        (&[("name", "eq.a,b")], &["m6"]),
        (&[("class", "eq.mage"), ("dkp", "gt.10")], &["m4"]),
        (
            &[("dkp", "gt.10"), ("dkp", "lt.50")],
            &["m2", "m3", "m4", "m6"],
        ),
        (&[("id", "eq.m3")], &["m3"]),
    ];
    for (pairs, expected) in cases {
        let query = qs(pairs);
        let rows = api.rows("members", &query).await;
        assert_eq!(ids(&rows), *expected, "{pairs:?}");
    }

    // select: only those columns, in the order asked.
    let rows = api.rows("members", "select=dkp,name&id=eq.m1").await;
    assert_eq!(rows.len(), 1);
    let keys: Vec<&String> = rows[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["dkp", "name"]);
    assert_eq!(rows[0], json!({ "dkp": 10, "name": "Aria" }));
    let rows = api.rows("members", "select=*&id=eq.m1").await;
    assert_eq!(rows[0].as_object().unwrap().len(), 5);

    // Several order keys; NULLs sort first ascending, last descending.
    let rows = api.rows("members", "order=dkp.desc,name.asc").await;
    assert_eq!(
        ids(&rows),
        ["m8", "m5", "m4", "m3", "m2", "m6", "m1", "m7"],
        "dkp desc, then name (Borin < a,b)"
    );
    let rows = api.rows("members", "order=class.desc,dkp").await;
    assert_eq!(ids(&rows), ["m2", "m5", "m6", "m1", "m4", "m8", "m7", "m3"]);
    let rows = api.rows("members", "order=class,dkp.desc").await;
    assert_eq!(ids(&rows), ["m3", "m7", "m8", "m4", "m1", "m6", "m5", "m2"]);
    let rows = api.rows("members", "order=dkp.asc,id.desc").await;
    assert_eq!(ids(&rows), ["m7", "m1", "m6", "m2", "m3", "m4", "m5", "m8"]);

    // count=exact counts every match, not the page.
    let (status, body) = api.get("members?class=eq.mage&limit=1&count=exact").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 2);
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    assert!(body["next"].is_string());
    let (_, body) = api.get("members?count=exact").await;
    assert_eq!(body["count"], 8);
    assert_eq!(body["next"], Value::Null);
    let (_, body) = api.get("members?dkp=gt.1000&count=exact").await;
    assert_eq!((&body["count"], &body["data"]), (&json!(0), &json!([])));
    let (_, body) = api.get("members").await;
    assert!(body.get("count").is_none(), "{body}");

    // Malformed filters.
    for (query, code) in [
        ("dkp=eq.abc", "invalid_filter"),
        ("dkp=eq.1.5", "invalid_filter"),
        ("dkp=eq", "invalid_filter"),
        ("dkp=between.1", "invalid_filter"),
        ("dkp=like.1*", "invalid_filter"),
        ("dkp=is.true", "invalid_filter"),
        ("class=is.nothing", "invalid_filter"),
        ("class=in.mage", "invalid_filter"),
        ("class=in.()", "invalid_filter"),
        ("class=in.(\"mage)", "invalid_filter"),
        ("count=maybe", "invalid_filter"),
        ("order=dkp.up", "invalid_filter"),
        ("order=dkp,dkp.desc", "invalid_filter"),
        ("order=nope", "column_not_found"),
        ("nope=eq.1", "column_not_found"),
        ("select=nope", "column_not_found"),
    ] {
        let got = api.get(&format!("members?{query}")).await;
        problem(&got, 400, code, query);
    }
}
four_modes!(every_filter_operator_select_order_and_count);

// ---------------------------------------------------------------------------------------
// 3. Keyset pagination
// ---------------------------------------------------------------------------------------

/// Follows `next` from the first page to the last; answers every row and the page count.
async fn walk(api: &Api<'_>, table: &str, query: &str) -> (Vec<Value>, usize) {
    let mut rows = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{table}?{query}&cursor={}", enc(c)),
            None => format!("{table}?{query}"),
        };
        let (status, body) = api.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        pages += 1;
        assert!(pages < 500, "pagination does not end");
        rows.extend(body["data"].as_array().unwrap().iter().cloned());
        match body["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                assert!(body["next"].is_null(), "{body}");
                return (rows, pages);
            }
        }
    }
}

/// 250 members `p000`…`p249` with tied dkp and some null classes.
fn crowd() -> Vec<(String, Option<&'static str>, i64)> {
    (0..250)
        .map(|i| {
            let class = if i % 4 == 0 {
                None
            } else {
                Some(["mage", "rogue", "priest"][i % 3])
            };
            (format!("p{i:03}"), class, ((i * 7) % 5) as i64)
        })
        .collect()
}

async fn insert_crowd(api: &Api<'_>) -> Vec<(String, Option<&'static str>, i64)> {
    let crowd = crowd();
    let body: Vec<Value> = crowd
        .iter()
        .map(|(id, class, dkp)| json!({ "id": id, "name": format!("name-{id}"), "class": class, "dkp": dkp }))
        .collect();
    assert_eq!(api.insert("members", Value::Array(body)).await.len(), 250);
    crowd
}

async fn keyset_pagination_sees_every_row_once_in_order(backend: Backend) {
    let Some(s) = guild(backend).await else {
        return;
    };
    let api = Api::new(&s, "g");
    let mut crowd = insert_crowd(&api).await;

    // Default order: the primary key.
    let (rows, pages) = walk(&api, "members", "limit=100").await;
    assert_eq!(pages, 3);
    let mut expected: Vec<String> = crowd.iter().map(|c| c.0.clone()).collect();
    expected.sort();
    assert_eq!(ids(&rows), expected);
    let (_, body) = api.get("members?limit=100").await;
    assert_eq!(body["data"].as_array().unwrap().len(), 100);
    let (_, body) = api.get("members?limit=250").await;
    assert_eq!(body["next"], Value::Null, "exactly one full page");
    let (_, body) = api.get("members?limit=249").await;
    assert!(body["next"].is_string());
    let (_, body) = api.get("members").await;
    assert_eq!(body["data"].as_array().unwrap().len(), 100, "default limit");

    // A nullable key ascending, a tied key descending, the primary key as tiebreaker.
    crowd.sort_by(|a, b| (a.1, Reverse(a.2), &a.0).cmp(&(b.1, Reverse(b.2), &b.0)));
    let expected: Vec<String> = crowd.iter().map(|c| c.0.clone()).collect();
    for limit in [100, 7, 1000] {
        let (rows, _) = walk(
            &api,
            "members",
            &format!("order=class,dkp.desc&limit={limit}"),
        )
        .await;
        assert_eq!(ids(&rows), expected, "limit {limit}");
    }
    // And the other way round: nulls last.
    crowd.sort_by(|a, b| (Reverse(a.1), a.2, &a.0).cmp(&(Reverse(b.1), b.2, &b.0)));
    let expected: Vec<String> = crowd.iter().map(|c| c.0.clone()).collect();
    let (rows, pages) = walk(&api, "members", "order=class.desc,dkp&limit=9").await;
    assert_eq!(ids(&rows), expected);
    assert_eq!(pages, 28);
    // With a filter and a selection that leaves the order keys out.
    let mages = crowd.iter().filter(|c| c.1 == Some("mage")).count();
    let (rows, _) = walk(
        &api,
        "members",
        "class=eq.mage&order=dkp,id.desc&select=name&limit=11",
    )
    .await;
    let mut seen: Vec<String> = rows
        .iter()
        .map(|r| {
            assert_eq!(r.as_object().unwrap().len(), 1, "{r}");
            r["name"]
                .as_str()
                .unwrap()
                .trim_start_matches("name-")
                .to_owned()
        })
        .collect();
    assert_eq!(seen.len(), mages);
    let mut by_order: Vec<&(String, Option<&str>, i64)> =
        crowd.iter().filter(|c| c.1 == Some("mage")).collect();
    by_order.sort_by(|a, b| (a.2, Reverse(&a.0)).cmp(&(b.2, Reverse(&b.0))));
    assert_eq!(
        seen,
        by_order.iter().map(|c| c.0.clone()).collect::<Vec<_>>()
    );
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), mages);
}
four_modes!(keyset_pagination_sees_every_row_once_in_order);

async fn keyset_pagination_survives_inserts_between_pages(backend: Backend) {
    let Some(s) = guild(backend).await else {
        return;
    };
    let api = Api::new(&s, "g");
    let crowd = insert_crowd(&api).await;

    // By primary key: rows inserted before the cursor stay unseen, after it appear.
    let (_, first) = api.get("members?limit=100").await;
    let mut seen = ids(first["data"].as_array().unwrap());
    assert_eq!(seen.last().unwrap(), "p099");
    let mut cursor = first["next"].as_str().unwrap().to_owned();
    api.insert(
        "members",
        json!([
            { "id": "p050x", "name": "before" },
            { "id": "p150x", "name": "after" },
            { "id": "p999", "name": "last" },
        ]),
    )
    .await;
    loop {
        let (status, page) = api
            .get(&format!("members?limit=100&cursor={}", enc(&cursor)))
            .await;
        assert_eq!(status, 200, "{page}");
        seen.extend(ids(page["data"].as_array().unwrap()));
        match page["next"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
        // More rows land behind the reader while it pages.
        api.insert(
            "members",
            json!({ "id": "p000x", "name": format!("behind-{}", seen.len()) }),
        )
        .await;
        let (status, _) = api.call(Method::DELETE, "members/p000x", None).await;
        assert_eq!(status, 204);
    }
    let mut expected: Vec<String> = crowd.iter().map(|c| c.0.clone()).collect();
    expected.extend(["p150x".to_owned(), "p999".to_owned()]);
    expected.sort();
    assert_eq!(seen, expected);

    // By a tied, descending key: a row sorting first is behind the reader, one sorting
    // last is ahead of it.
    let (_, first) = api.get("members?order=dkp.desc&limit=100").await;
    let mut seen = ids(first["data"].as_array().unwrap());
    let mut cursor = first["next"].as_str().unwrap().to_owned();
    api.insert(
        "members",
        json!([
            { "id": "top", "name": "top", "dkp": 1000 },
            { "id": "bottom", "name": "bottom", "dkp": -1 },
            { "id": "zz-tied", "name": "tied", "dkp": 0 },
        ]),
    )
    .await;
    loop {
        let (status, page) = api
            .get(&format!(
                "members?order=dkp.desc&limit=100&cursor={}",
                enc(&cursor)
            ))
            .await;
        assert_eq!(status, 200, "{page}");
        seen.extend(ids(page["data"].as_array().unwrap()));
        match page["next"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no row twice");
    for (id, _, _) in &crowd {
        assert!(seen.contains(id), "{id} skipped");
    }
    assert!(
        !seen.contains(&"top".to_owned()),
        "top sorts before the cursor"
    );
    assert!(seen.contains(&"bottom".to_owned()));
    assert!(
        seen.contains(&"zz-tied".to_owned()),
        "ties after the cursor appear"
    );
    assert_eq!(seen.last().unwrap(), "bottom");
}
four_modes!(keyset_pagination_survives_inserts_between_pages);

async fn cursors_are_bound_to_their_listing(backend: Backend) {
    let Some(s) = guild(backend).await else {
        return;
    };
    let api = Api::new(&s, "g");
    insert_crowd(&api).await;
    api.insert("raids", json!({ "name": "MC" })).await;

    let (_, page) = api.get("members?class=eq.mage&order=dkp&limit=10").await;
    let cursor = page["next"].as_str().unwrap().to_owned();
    let c = enc(&cursor);

    // The same listing takes it, whatever the limit, the selection or the parameter order.
    for query in [
        format!("class=eq.mage&order=dkp&limit=10&cursor={c}"),
        format!("cursor={c}&limit=3&order=dkp&class=eq.mage"),
        format!("class=eq.mage&order=dkp.asc&select=name&cursor={c}"),
    ] {
        let (status, body) = api.get(&format!("members?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert!(!body["data"].as_array().unwrap().is_empty());
    }
    // Other filters, another order, another table: refused.
    for path in [
        format!("members?class=eq.rogue&order=dkp&cursor={c}"),
        format!("members?order=dkp&cursor={c}"),
        format!("members?class=eq.mage&dkp=gt.0&order=dkp&cursor={c}"),
        format!("members?class=eq.mage&order=dkp.desc&cursor={c}"),
        format!("members?class=eq.mage&order=name&cursor={c}"),
        format!("members?class=eq.mage&cursor={c}"),
        format!("raids?cursor={c}"),
    ] {
        let got = api.get(&path).await;
        problem(&got, 400, "invalid_filter", &path);
    }

    // Garbage and forgeries.
    let decoded: Value = serde_json::from_slice(&unb64url(&cursor)).expect("cursor is JSON");
    let mut short = decoded.clone();
    short["v"].as_array_mut().unwrap().pop();
    let mut wrong_kind = decoded.clone();
    wrong_kind["v"][0] = json!({ "x": 1 });
    let forged = |v: &Value| b64(v.to_string().as_bytes(), B64_URL, false);
    for garbage in [
        "garbage".to_owned(),
        String::new(),
        "!!!!".to_owned(),
        "%%%".to_owned(),
        b64(b"{\"f\":\"0000\",\"v\":[]}", B64_URL, false),
        b64(b"[1,2,3]", B64_URL, false),
        forged(&short),
        forged(&wrong_kind),
        format!("{cursor}x"),
        "A".repeat(10_000),
    ] {
        let path = format!("members?class=eq.mage&order=dkp&cursor={}", enc(&garbage));
        let got = api.get(&path).await;
        problem(&got, 400, "invalid_filter", &garbage);
    }
    let got = api
        .get(&format!(
            "members?class=eq.mage&order=dkp&cursor={c}&cursor={c}"
        ))
        .await;
    problem(&got, 400, "invalid_filter", "two cursors");
}
four_modes!(cursors_are_bound_to_their_listing);

// ---------------------------------------------------------------------------------------
// 4. Writes
// ---------------------------------------------------------------------------------------

async fn array_inserts_are_atomic_and_bounded(backend: Backend) {
    let Some(s) = guild(backend).await else {
        return;
    };
    let api = Api::new(&s, "g");
    api.insert("members", roster()).await;
    let before = snapshot(&s, "g").await;

    // Each body, what it answers, and what the detail names (the column, the constraint).
    for (body, status, code, names) in [
        (
            json!([{ "name": "ok1" }, { "name": "ok2" }, { "name": 5 }]),
            400,
            "invalid_value",
            "for name:",
        ),
        (
            json!([{ "name": "ok1" }, { "name": "ok1" }]),
            409,
            "constraint_violation",
            "(members_name_key)",
        ),
        (
            json!([{ "name": "ok1" }, { "name": "Aria" }]),
            409,
            "constraint_violation",
            "(members_name_key)",
        ),
        (
            json!([{ "name": "ok1" }, { "name": "ok2", "bogus": 1 }]),
            400,
            "column_not_found",
            "\"bogus\"",
        ),
        (
            json!([{ "name": "ok1" }, { "name": null }]),
            400,
            "invalid_value",
            "for name:",
        ),
        (
            json!([{ "name": "ok1" }, { "class": "mage" }]),
            400,
            "invalid_value",
            "for name:",
        ),
        (json!([{ "name": "ok1" }, 5]), 400, "invalid_body", ""),
        (
            json!([{ "name": "ok1" }, [{ "name": "ok2" }]]),
            400,
            "invalid_body",
            "",
        ),
        (
            json!([{ "id": "n1", "name": "ok1" }, { "id": "n1", "name": "ok2" }]),
            409,
            "constraint_violation",
            "(members_pkey)",
        ),
        (
            json!([{ "id": "m1", "name": "ok1" }]),
            409,
            "constraint_violation",
            "(members_pkey)",
        ),
    ] {
        let got = api.call(Method::POST, "members", Some(body.clone())).await;
        let detail = problem(&got, status, code, &body.to_string());
        assert!(detail.contains(names), "{body}: {detail}");
        assert_eq!(snapshot(&s, "g").await, before, "{body}");
    }
    let got = api.call(Method::POST, "members", Some(json!([]))).await;
    assert_eq!(got.0, 400, "{}", got.1);

    // At most 1,000 rows at a time.
    let rows = |n: usize, tag: &str| {
        Value::Array(
            (0..n)
                .map(|i| json!({ "name": format!("{tag}-{i}") }))
                .collect(),
        )
    };
    let got = api
        .call(Method::POST, "members", Some(rows(1001, "big")))
        .await;
    assert_eq!(got.0, 400, "{}", got.1);
    assert_eq!(snapshot(&s, "g").await, before);
    let created = api.insert("members", rows(1000, "max")).await;
    assert_eq!(created.len(), 1000);
    assert_eq!(count(&s, "g", "members").await, 1008);
    // Generated keys are distinct UUIDv7s, in insertion order of the array.
    let mut keys: Vec<&str> = created.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert!(created.iter().all(|r| is_uuid_v7(&r["id"])));
    for (i, r) in created.iter().enumerate() {
        assert_eq!(r["name"], format!("max-{i}"));
    }
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 1000);
}
four_modes!(array_inserts_are_atomic_and_bounded);

async fn single_and_bulk_writes(backend: Backend) {
    let Some(s) = guild(backend).await else {
        return;
    };
    let api = Api::new(&s, "g");
    api.insert("members", roster()).await;

    // A single object: ids generated unless given, defaults applied.
    let made = api.insert("members", json!({ "name": "Fen" })).await;
    assert_eq!(made.len(), 1);
    let fen = &made[0];
    assert!(is_uuid_v7(&fen["id"]), "{fen}");
    assert_eq!((&fen["dkp"], &fen["class"]), (&json!(0), &Value::Null));
    let joined = chrono::DateTime::parse_from_rfc3339(fen["joined_at"].as_str().unwrap()).unwrap();
    assert!(
        (chrono::Utc::now() - joined.to_utc()).num_seconds().abs() < 120,
        "{joined}"
    );
    let given = api
        .insert(
            "members",
            json!({ "id": "custom-id", "name": "Gil", "dkp": 7 }),
        )
        .await;
    assert_eq!(given[0]["id"], "custom-id");
    let (status, shown) = api.get("members/custom-id").await;
    assert_eq!((status, &shown), (200, &given[0]));
    let item = api
        .insert("items", json!({ "name": "Cloth" }))
        .await
        .remove(0);
    assert_eq!(item["quality"], "common");
    let auction = api
        .insert("auctions", json!({ "item_id": item["id"] }))
        .await
        .remove(0);
    assert_eq!(
        (
            &auction["status"],
            &auction["min_bid"],
            &auction["closes_at"]
        ),
        (&json!("open"), &json!(0), &Value::Null)
    );
    assert!(is_rfc3339(&auction["created_at"]));

    // PATCH by key answers the whole updated row.
    let (status, row) = api
        .call(
            Method::PATCH,
            "members/m1",
            Some(json!({ "dkp": 11, "class": null })),
        )
        .await;
    assert_eq!(status, 200, "{row}");
    assert_eq!(
        row,
        json!({ "id": "m1", "name": "Aria", "class": null, "dkp": 11, "joined_at": row["joined_at"] })
    );
    assert_eq!(api.get("members/m1").await.1, row);
    // Naming the key with its own value is not a change.
    let (status, row) = api
        .call(
            Method::PATCH,
            "members/m1",
            Some(json!({ "id": "m1", "dkp": 12 })),
        )
        .await;
    assert_eq!((status, &row["dkp"]), (200, &json!(12)), "{row}");
    // The guild's `dkp INTEGER` is 64-bit on SQLite and 32-bit on PostgreSQL, which
    // refuses a wider value, naming the column. Filters compare as 64-bit on both.
    let wide = json!({ "dkp": 3_000_000_000_i64 });
    let got = api.call(Method::PATCH, "members/m1", Some(wide)).await;
    if backend == Backend::Sqlite {
        assert_eq!((got.0, &got.1["dkp"]), (200, &json!(3_000_000_000_i64)));
        let undo = Some(json!({ "dkp": 12 }));
        assert_eq!(api.call(Method::PATCH, "members/m1", undo).await.0, 200);
    } else {
        let detail = problem(&got, 400, "invalid_value", "dkp beyond 32 bits");
        assert!(detail.contains("for dkp:"), "{detail}");
    }
    assert_eq!(api.get("members/m1").await.1["dkp"], 12);
    assert_eq!(api.rows("members", "dkp=lt.3000000000").await.len(), 10);
    assert!(api.rows("members", "dkp=gt.3000000000").await.is_empty());
    for (method, path, body) in [
        (Method::PATCH, "members/nobody", Some(json!({ "dkp": 1 }))),
        (Method::DELETE, "members/nobody", None),
        (Method::GET, "members/nobody", None),
    ] {
        let got = api.call(method.clone(), path, body).await;
        problem(&got, 404, "row_not_found", &format!("{method} {path}"));
    }
    let got = api.call(Method::PATCH, "members/m1", Some(json!({}))).await;
    assert_eq!(got.0, 400, "empty patch: {}", got.1);

    // DELETE by key.
    let (status, _) = api.call(Method::DELETE, "members/m7", None).await;
    assert_eq!(status, 204);
    problem(
        &api.get("members/m7").await,
        404,
        "row_not_found",
        "deleted",
    );
    problem(
        &api.call(Method::DELETE, "members/m7", None).await,
        404,
        "row_not_found",
        "deleted twice",
    );

    // Bulk PATCH: every match, answered; nothing else touched.
    let before = api.rows("members", "class=neq.mage").await;
    let (status, body) = api
        .call(
            Method::PATCH,
            "members?class=eq.mage",
            Some(json!({ "dkp": 99 })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let changed = body["data"].as_array().unwrap();
    assert_eq!(ids(changed), ["m4"]);
    assert!(changed
        .iter()
        .all(|r| r["dkp"] == 99 && r["class"] == "mage"));
    assert_eq!(api.rows("members", "class=neq.mage").await, before);
    let (status, body) = api
        .call(
            Method::PATCH,
            "members?dkp=gte.20&dkp=lte.50",
            Some(json!({ "class": "tank" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut changed = ids(body["data"].as_array().unwrap());
    changed.sort();
    assert_eq!(changed, ["m2", "m3", "m5", "m6"]);
    assert_eq!(api.rows("members", "class=eq.tank").await.len(), 4);
    let (status, body) = api
        .call(
            Method::PATCH,
            "members?dkp=gt.5000",
            Some(json!({ "class": "x" })),
        )
        .await;
    assert_eq!((status, &body), (200, &json!({ "data": [] })));
    // A bulk change that breaks a constraint on the second row changes none.
    let snap = snapshot(&s, "g").await;
    let got = api
        .call(
            Method::PATCH,
            "members?class=eq.tank",
            Some(json!({ "name": "Same" })),
        )
        .await;
    let detail = problem(&got, 409, "constraint_violation", "bulk rename");
    assert!(detail.contains("members_name_key"), "{detail}");
    assert_eq!(snapshot(&s, "g").await, snap);

    // Bulk DELETE answers how many.
    let (status, body) = api
        .call(Method::DELETE, "members?class=eq.tank&dkp=lt.30", None)
        .await;
    assert_eq!((status, &body), (200, &json!({ "deleted": 2 })));
    let (status, body) = api.call(Method::DELETE, "members?dkp=gt.5000", None).await;
    assert_eq!((status, &body), (200, &json!({ "deleted": 0 })));

    // Without a filter: refused, even with only reserved parameters, and nothing changes.
    let snap = snapshot(&s, "g").await;
    for query in [
        "",
        "?",
        "?limit=1",
        "?order=name",
        "?select=id",
        "?count=exact",
    ] {
        let got = api
            .call(
                Method::PATCH,
                &format!("members{query}"),
                Some(json!({ "dkp": 0 })),
            )
            .await;
        problem(&got, 400, "invalid_filter", &format!("PATCH {query}"));
        let got = api
            .call(Method::DELETE, &format!("members{query}"), None)
            .await;
        problem(&got, 400, "invalid_filter", &format!("DELETE {query}"));
    }
    assert_eq!(snapshot(&s, "g").await, snap);
    assert!(count(&s, "g", "members").await > 0);
}
four_modes!(single_and_bulk_writes);

// ---------------------------------------------------------------------------------------
// 5. Types
// ---------------------------------------------------------------------------------------

async fn every_type_round_trips(backend: Backend) {
    let Some(s) = typed(backend).await else {
        return;
    };
    let api = Api::new(&s, "typed");
    let all_bytes: Vec<u8> = (0..=255).collect();
    let hostile_text = "héllo ✓ 'single' \"double\" \\ ; -- \u{0} end";
    // PostgreSQL's text cannot hold NUL: refused there, naming the column, before any
    // statement runs; the rest of the text round-trips as on SQLite.
    let text = if backend == Backend::Sqlite {
        hostile_text.to_owned()
    } else {
        let got = api
            .call(Method::POST, "things", Some(json!({ "t": hostile_text })))
            .await;
        let detail = problem(&got, 400, "invalid_value", "NUL in text on PostgreSQL");
        assert!(detail.contains("for t:"), "{detail}");
        assert_eq!(count(&s, "typed", "things").await, 0);
        hostile_text.replace('\0', "")
    };
    let row = json!({
        "id": "0190a5e4-7c2b-7d4e-8f00-000000000001",
        "n": 9007199254740993_i64,
        "r": -2.5,
        "t": text,
        "flag": true,
        "at": "2026-01-31T18:00:00Z",
        "at_plain": "1999-12-31T23:59:59Z",
        "doc": { "a": [1, 2.5, { "b": null }], "s": "x", "t": true },
        "ref": "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        "data": b64(&all_bytes, B64_STD, true),
    });
    let created = api.insert("things", row.clone()).await;
    assert_eq!(created, vec![row.clone()]);
    let (status, shown) = api.get("things/0190a5e4-7c2b-7d4e-8f00-000000000001").await;
    assert_eq!((status, &shown), (200, &row));

    // Edges of each type, and nulls everywhere.
    let edges = [
        json!({ "n": i64::MAX, "r": 1e300, "t": "", "flag": false, "doc": [], "data": "" }),
        json!({ "n": i64::MIN, "r": 0.1, "t": "0042", "doc": "42", "data": "aGk=" }),
        json!({ "n": 0, "r": 3, "t": "null", "doc": 42 }),
        json!({ "n": -1, "r": -0.0, "doc": "a \"quoted\" string" }),
        json!({ "doc": { "nested": { "deeper": [[[["x"]]]] } } }),
        json!({ "doc": true }),
        json!({ "n": null, "r": null, "t": null, "flag": null, "at": null, "at_plain": null, "doc": null, "ref": null, "data": null }),
    ];
    for edge in edges {
        let made = api.insert("things", edge.clone()).await.remove(0);
        assert!(is_uuid_v7(&made["id"]), "generated UUID key: {made}");
        let (status, shown) = api
            .get(&format!("things/{}", made["id"].as_str().unwrap()))
            .await;
        assert_eq!(status, 200);
        assert_eq!(shown, made);
        for (k, v) in edge.as_object().unwrap() {
            if k == "r" && v == &json!(3) {
                assert_eq!(made[k].as_f64(), Some(3.0));
            } else {
                assert_eq!(&made[k], v, "{k} of {edge}");
            }
        }
        if edge["r"]
            .as_f64()
            .is_some_and(|r| r == 0.0 && r.is_sign_negative())
        {
            // -0.0 equals 0.0 as a JSON value, so compare signs. PostgreSQL keeps the
            // sign; SQLite stores an integral REAL as an integer and answers 0.0.
            let negative = backend != Backend::Sqlite;
            for answer in [&made, &shown] {
                let r = answer["r"].as_f64().unwrap();
                assert_eq!(r.is_sign_negative(), negative, "-0.0 came back as {r:?}");
            }
        }
    }

    // Inputs that normalise: offsets to UTC, fractions kept, UUIDs lowercased.
    let made = api
        .insert(
            "things",
            json!({
                "at": "2026-01-31T19:00:00+01:00",
                "at_plain": "2026-01-31T18:00:00.25Z",
                "ref": "3F2504E0-4F89-11D3-9A0C-0305E82C3301",
            }),
        )
        .await
        .remove(0);
    assert_eq!(made["at"], "2026-01-31T18:00:00Z");
    let frac = chrono::DateTime::parse_from_rfc3339(made["at_plain"].as_str().unwrap()).unwrap();
    assert_eq!(
        frac,
        chrono::DateTime::parse_from_rfc3339("2026-01-31T18:00:00.25Z").unwrap()
    );
    assert_eq!(made["ref"], "3f2504e0-4f89-11d3-9a0c-0305e82c3301");

    // The INTEGER-keyed table numbers its rows.
    let strict_row = json!({
        "n": 1, "r": 1.5, "t": "x", "flag": false, "at": "2026-01-31T18:00:00Z",
        "doc": {}, "ref": "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "data": "AA==",
    });
    let made = api.insert("strict", strict_row.clone()).await.remove(0);
    assert_eq!(made["id"], 1);
    let mut expected = strict_row.clone();
    expected["id"] = json!(1);
    assert_eq!(api.get("strict/1").await.1, expected);
    problem(&api.get("strict/2").await, 404, "row_not_found", "strict/2");
    problem(
        &api.get("strict/abc").await,
        404,
        "row_not_found",
        "strict/abc",
    );

    // Filters by every type, values typed by their column.
    let key = "0190a5e4-7c2b-7d4e-8f00-000000000001";
    let hi = "aGk=";
    for (pairs, expect_key) in [
        (vec![("n", "eq.9007199254740993")], true),
        (
            vec![("n", "gt.9007199254740992"), ("n", "lt.9007199254740994")],
            true,
        ),
        (vec![("r", "lt.-2.4"), ("r", "gte.-2.5")], true),
        (vec![("r", "eq.-2.5")], true),
        (vec![("t", "like.héllo*")], true),
        (vec![("flag", "is.true")], true),
        (vec![("flag", "eq.true")], true),
        (vec![("at", "eq.2026-01-31T19:00:00+01:00")], true),
        (
            vec![
                ("at", "gt.2026-01-31T17:59:59.999Z"),
                ("at", "lt.2026-01-31T18:00:00.001Z"),
            ],
            true,
        ),
        (vec![("at_plain", "lt.2000-01-01T00:00:00Z")], true),
        (
            vec![
                ("ref", "eq.3F2504E0-4F89-11D3-9A0C-0305E82C3301"),
                ("id", &format!("eq.{key}")),
            ],
            true,
        ),
        (
            vec![(
                "id",
                &format!(
                    "in.({},00000000-0000-0000-0000-000000000000)",
                    key.to_uppercase()
                ),
            )],
            true,
        ),
        (
            vec![("data", &format!("eq.{}", b64(&all_bytes, B64_STD, true)))],
            true,
        ),
        (vec![("data", "eq.aGk=")], false),
        (vec![("flag", "is.false")], false),
        (vec![("doc", "is.null")], false),
    ] {
        let rows = api.rows("things", &qs(&pairs)).await;
        let keys = ids(&rows);
        assert_eq!(
            keys.iter().any(|k| k == key),
            expect_key,
            "{pairs:?}: {keys:?}"
        );
        assert!(!rows.is_empty() || !expect_key);
    }
    let rows = api
        .rows("things", &qs(&[("t", &format!("eq.{text}"))]))
        .await;
    assert_eq!(
        ids(&rows),
        [key],
        "text with quotes (and NUL) matches itself"
    );
    if backend != Backend::Sqlite {
        // No PostgreSQL text holds NUL, so no filter value may: refused, not unmatched.
        let got = api
            .get(&format!(
                "things?{}",
                qs(&[("t", &format!("eq.{hostile_text}"))])
            ))
            .await;
        problem(&got, 400, "invalid_filter", "NUL in a filter on PostgreSQL");
    }
    let rows = api
        .rows("things", &qs(&[("data", &format!("eq.{hi}"))]))
        .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["data"], hi);
    let rows = api.rows("things", "flag=is.false").await;
    assert_eq!(rows.len(), 1);
}
four_modes!(every_type_round_trips);

async fn real_values_round_trip_exactly(backend: Backend) {
    let Some(s) = typed(backend).await else {
        return;
    };
    let api = Api::new(&s, "typed");
    for r in [
        0.011000000000000001_f64,
        0.020900000000000002,
        1.0715660391465826e-75,
    ] {
        let resp = s
            .call(
                Method::POST,
                "/t/typed/v1/data/things",
                Some(ADMIN_TOKEN),
                &[],
                Some(json!({ "r": r })),
            )
            .await;
        assert_eq!(resp.status(), 201);
        // Read the answer as text: the client's own JSON parser is the lossy one too.
        let text = resp.text().await.unwrap();
        assert!(
            text.contains(&format!("\"r\":{r:?}")),
            "sent {r:?}, got {text}"
        );
        let rows = api
            .rows("things", &qs(&[("r", &format!("eq.{r:?}"))]))
            .await;
        assert_eq!(rows.len(), 1, "stored value equals what was sent: {r:?}");
    }
}
four_modes!(real_values_round_trip_exactly);

async fn keyset_pagination_by_real_values(backend: Backend) {
    let Some(s) = typed(backend).await else {
        return;
    };
    // Stored exactly, straight through SQL, so only the cursor's round trip is tested.
    let down = 1.0715660391465826e-75_f64;
    let up = 1.7802719962921167e-19_f64;
    let values = [0.0, down, down, down, up, up, up, 1.0];
    let id = |i: usize| format!("00000000-0000-7000-8000-00000000000{i}");
    if backend == Backend::Sqlite {
        s.engine
            .with_tenant_db(&Slug::parse("typed").unwrap(), move |db| {
                let mut stmt = db.prepare("INSERT INTO things (id, r) VALUES (?, ?)")?;
                for (i, r) in values.iter().enumerate() {
                    stmt.execute((id(i), r))?;
                }
                Ok(())
            })
            .await
            .unwrap();
    } else {
        let session = pg_session(&s, "typed").await;
        for (i, r) in values.iter().enumerate() {
            session
                .client()
                .execute(
                    "INSERT INTO things (id, r) VALUES ($1::text::uuid, $2)",
                    &[&id(i), r],
                )
                .await
                .unwrap();
        }
        session.commit().await.unwrap();
    }
    let api = Api::new(&s, "typed");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let path = match &cursor {
            Some(c) => format!("things?order=r&limit=1&select=id,r&cursor={}", enc(c)),
            None => "things?order=r&limit=1&select=id,r".to_owned(),
        };
        let (status, page) = api.get(&path).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(ids(page["data"].as_array().unwrap()));
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..8).map(id).collect();
    assert_eq!(seen, expected);
}
four_modes!(keyset_pagination_by_real_values);

async fn keyset_pagination_by_every_type(backend: Backend) {
    let Some(s) = typed(backend).await else {
        return;
    };
    let api = Api::new(&s, "typed");
    // Ties, nulls and extremes in every column; row `i` has the id `…00000000000i`.
    let tied = json!({
        "n": 5, "r": 1.5, "t": "b", "flag": true,
        "at": "2026-01-31T18:00:00Z", "at_plain": "2026-01-31T18:00:00.5Z",
        "doc": { "a": 1 }, "ref": "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "data": "aGk=",
    });
    let rows = [
        tied.clone(),
        json!({
            "n": -3, "r": -1e-300, "t": "B", "flag": false,
            "at": "2026-01-31T18:00:00.000001Z", "at_plain": "1970-01-01T00:00:00Z",
            "doc": [1, 2], "ref": "00000000-0000-0000-0000-000000000000", "data": "",
        }),
        json!({}),
        tied,
        json!({
            "n": i64::MAX, "r": 1e300, "t": "ä", "flag": null,
            "at": "1999-12-31T23:59:59.999999Z",
            "doc": "s", "ref": "ffffffff-ffff-ffff-ffff-ffffffffffff", "data": "/w==",
        }),
        json!({ "n": i64::MIN, "r": 0.0, "t": "", "doc": 3, "data": "AA==" }),
        json!({
            "n": 0, "r": -2.5, "t": "a,b", "flag": false,
            "at": "2026-01-31T17:59:59Z", "at_plain": "2026-01-31T18:00:00Z",
            "doc": true, "data": "AAA=",
        }),
        json!({ "t": "b", "doc": null, "r": 1.5 }),
    ];
    let id = |i: char| format!("00000000-0000-7000-8000-00000000000{i}");
    let body: Vec<Value> = rows
        .into_iter()
        .zip('0'..='7')
        .map(|(mut row, i)| {
            row["id"] = json!(id(i));
            row
        })
        .collect();
    api.insert("things", Value::Array(body)).await;
    // Each order, ascending then descending, as positions of the rows above. The same on
    // every backend but for JSON: PostgreSQL orders `jsonb` by type first (string <
    // number < boolean < array < object), SQLite orders JSON by its text.
    let json_order = match backend {
        Backend::Sqlite => ["27451603", "03615427"],
        _ => ["27456103", "03165427"],
    };
    for (column, [asc, desc]) in [
        ("n", ["27516034", "40361527"]),
        ("r", ["26150374", "40375162"]),
        ("t", ["25160374", "40376152"]),
        ("flag", ["24571603", "03162457"]),
        ("at", ["25746031", "10364257"]),
        ("at_plain", ["24571603", "03612457"]),
        ("doc", json_order),
        ("ref", ["25671034", "40312567"]),
        ("data", ["27156034", "40365127"]),
        ("id", ["01234567", "76543210"]),
    ] {
        for (order, expected) in [(column.to_owned(), asc), (format!("{column}.desc"), desc)] {
            let expected: Vec<String> = expected.chars().map(id).collect();
            let one_page = api.rows("things", &format!("order={order}")).await;
            assert_eq!(ids(&one_page), expected, "order={order}");
            for limit in [1, 2, 3] {
                let query = format!("order={order}&limit={limit}");
                let (paged, _) = walk(&api, "things", &query).await;
                assert_eq!(ids(&paged), expected, "{query}");
            }
        }
    }
}
four_modes!(keyset_pagination_by_every_type);

async fn json_numbers_round_trip(backend: Backend) {
    let Some(s) = typed(backend).await else {
        return;
    };
    let api = Api::new(&s, "typed");
    for number in ["12345678901234567890", "18446744073709551615"] {
        let body = format!(r#"{{"doc":{number}}}"#);
        let (status, _) = api
            .raw(
                Method::POST,
                "things",
                Some("application/json"),
                body.into_bytes(),
            )
            .await
            .unwrap();
        assert_eq!(status, 201);
        // Compare text: the client's parser would round a float to the same value.
        let text = s
            .client
            .get(format!("{}/t/typed/v1/data/things?doc=not.is.null", s.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains(&format!(r#""doc":{number}"#)),
            "{number}: {text}"
        );
        let (status, _) = api
            .call(Method::DELETE, "things?doc=not.is.null", None)
            .await;
        assert_eq!(status, 200);
    }
}
four_modes!(json_numbers_round_trip);

async fn negated_is_true_and_false_keep_nulls(backend: Backend) {
    let Some(s) = typed(backend).await else {
        return;
    };
    let api = Api::new(&s, "typed");
    let rows = api
        .insert(
            "things",
            json!([
                { "id": "00000000-0000-7000-8000-000000000001", "flag": true },
                { "id": "00000000-0000-7000-8000-000000000002", "flag": false },
                { "id": "00000000-0000-7000-8000-000000000003", "flag": null },
            ]),
        )
        .await;
    let [t, f, n] = [0, 1, 2].map(|i| rows[i]["id"].as_str().unwrap().to_owned());
    assert_eq!(ids(&api.rows("things", "flag=is.true").await), [t.as_str()]);
    assert_eq!(
        ids(&api.rows("things", "flag=is.false").await),
        [f.as_str()]
    );
    assert_eq!(ids(&api.rows("things", "flag=is.null").await), [n.as_str()]);
    assert_eq!(
        ids(&api.rows("things", "flag=not.is.true").await),
        [f.clone(), n.clone()]
    );
    assert_eq!(ids(&api.rows("things", "flag=not.is.false").await), [t, n]);
}
four_modes!(negated_is_true_and_false_keep_nulls);

async fn tables_without_a_primary_key_list_but_have_no_addresses(backend: Backend) {
    let Some(s) = typed(backend).await else {
        return;
    };
    let api = Api::new(&s, "typed");
    let lines: Vec<String> = (0..5).map(|i| format!("line {i}")).collect();
    let body: Vec<Value> = lines.iter().map(|l| json!({ "line": l })).collect();
    let made = api.insert("log", Value::Array(body)).await;
    assert_eq!(made.len(), 5);
    assert_eq!(made[0], json!({ "at": null, "line": "line 0" }));
    let line_of = |rows: &[Value]| -> Vec<String> {
        rows.iter()
            .map(|r| r["line"].as_str().unwrap().to_owned())
            .collect()
    };

    // A listing that fits one page: the same everywhere, in insertion order.
    let (status, page) = api.get("log?limit=5").await;
    assert_eq!((status, &page["next"]), (200, &Value::Null), "{page}");
    assert_eq!(line_of(page["data"].as_array().unwrap()), lines);
    let rows = api.rows("log", "line=neq.line 0&order=line.desc").await;
    assert_eq!(line_of(&rows), ["line 4", "line 3", "line 2", "line 1"]);

    // More than one page.
    for query in ["limit=2", "order=line&limit=2"] {
        if backend == Backend::Sqlite {
            let (rows, pages) = walk(&api, "log", query).await;
            assert_eq!((line_of(&rows), pages), (lines.clone(), 3), "{query}");
        } else {
            // PostgreSQL has no stable row identity to resume after (`ctid` moves on
            // update), so a listing that needs a second page is refused, saying what to
            // do instead; SQLite resumes after its rowid.
            let got = api.get(&format!("log?{query}")).await;
            let detail = problem(&got, 400, "invalid_input", query);
            assert!(detail.contains("no primary key"), "{detail}");
        }
    }

    // No row has an address; bulk changes by filter work as on any table.
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({ "line": "x" }))),
        (Method::DELETE, None),
    ] {
        let got = api.call(method.clone(), "log/1", body).await;
        let detail = problem(&got, 400, "invalid_input", &format!("{method} log/1"));
        assert!(detail.contains("primary key"), "{detail}");
    }
    let (status, body) = api
        .call(
            Method::PATCH,
            "log?line=eq.line 1",
            Some(json!({ "line": "changed" })),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({ "data": [{ "at": null, "line": "changed" }] }))
    );
    let got = api.call(Method::DELETE, "log?line=like.line*", None).await;
    assert_eq!(got, (200, json!({ "deleted": 4 })));
    assert_eq!(count(&s, "typed", "log").await, 1);
}
four_modes!(tables_without_a_primary_key_list_but_have_no_addresses);

async fn identifiers_that_are_not_utf8_are_problems(backend: Backend) {
    let Some(s) = guild(backend).await else {
        return;
    };
    let api = Api::new(&s, "g");
    api.insert("members", roster()).await;
    let before = snapshot(&s, "g").await;
    for (method, path, body, code) in [
        (Method::GET, "%FF", None, "table_not_found"),
        (Method::GET, "members%FF%FE", None, "table_not_found"),
        (
            Method::POST,
            "%FF",
            Some(json!({ "name": "x" })),
            "table_not_found",
        ),
        (
            Method::PATCH,
            "%FF?name=eq.x",
            Some(json!({ "name": "x" })),
            "table_not_found",
        ),
        (Method::DELETE, "%FF?name=eq.x", None, "table_not_found"),
        (Method::GET, "%FF/m1", None, "table_not_found"),
        (Method::GET, "members/%FF", None, "row_not_found"),
        (
            Method::PATCH,
            "members/%FF",
            Some(json!({ "dkp": 1 })),
            "row_not_found",
        ),
        (Method::DELETE, "members/m1%C0", None, "row_not_found"),
    ] {
        let resp = s
            .call(
                method.clone(),
                &format!("/t/g/v1/data/{path}"),
                Some(ADMIN_TOKEN),
                &[],
                body,
            )
            .await;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = resp.text().await.unwrap();
        assert_eq!(
            content_type, "application/problem+json",
            "{method} {path}: {text}"
        );
        let got = (status, serde_json::from_str(&text).unwrap_or(Value::Null));
        problem(&got, 404, code, &format!("{method} {path}"));
    }
    assert_eq!(snapshot(&s, "g").await, before);
}
four_modes!(identifiers_that_are_not_utf8_are_problems);

async fn invalid_values_name_their_column_and_change_nothing(backend: Backend) {
    let Some(s) = typed(backend).await else {
        return;
    };
    let api = Api::new(&s, "typed");
    api.insert(
        "things",
        json!({ "id": "0190a5e4-7c2b-7d4e-8f00-000000000001", "n": 1 }),
    )
    .await;
    let before = snapshot(&s, "typed").await;

    for (column, value) in [
        ("n", json!("1")),
        ("n", json!(1.5)),
        ("n", json!(1e3)),
        ("n", json!(9223372036854775808_u64)),
        ("n", json!(true)),
        ("n", json!([1])),
        ("r", json!("2.5")),
        ("r", json!("NaN")),
        ("r", json!("inf")),
        ("t", json!(5)),
        ("t", json!({ "a": 1 })),
        ("flag", json!(1)),
        ("flag", json!("true")),
        ("at", json!("yesterday")),
        ("at", json!("2026-01-31")),
        ("at", json!("2026-13-01T00:00:00Z")),
        ("at", json!("2026-01-31T18:00:00")),
        ("at", json!(1769882400)),
        ("ref", json!("not-a-uuid")),
        ("ref", json!("3f2504e0-4f89-11d3-9a0c-0305e82c330")),
        ("ref", json!(5)),
        ("id", json!("x")),
        ("data", json!("***")),
        ("data", json!("aGk")),
        ("data", json!([104, 105])),
    ] {
        let body = json!({ column: value });
        let got = api.call(Method::POST, "things", Some(body.clone())).await;
        let detail = problem(&got, 400, "invalid_value", &body.to_string());
        assert!(
            detail.contains(&format!("for {column}:")),
            "{body}: detail names the column: {detail}"
        );
        if column != "id" {
            let got = api
                .call(
                    Method::PATCH,
                    "things/0190a5e4-7c2b-7d4e-8f00-000000000001",
                    Some(body.clone()),
                )
                .await;
            let detail = problem(&got, 400, "invalid_value", &format!("PATCH {body}"));
            assert!(detail.contains(&format!("for {column}:")), "{detail}");
            let got = api
                .call(Method::PATCH, "things?n=eq.1", Some(body.clone()))
                .await;
            problem(&got, 400, "invalid_value", &format!("bulk PATCH {body}"));
        }
        assert_eq!(snapshot(&s, "typed").await, before, "{body}");
    }

    // NaN and infinities are not JSON numbers at all.
    for raw in [
        r#"{"r": NaN}"#,
        r#"{"r": Infinity}"#,
        r#"{"r": 1e400}"#,
        r#"{"n": 0x10}"#,
    ] {
        let got = api
            .raw(Method::POST, "things", Some("application/json"), raw.into())
            .await
            .unwrap();
        assert_eq!(got.0, 400, "{raw}: {}", got.1);
        assert_eq!(snapshot(&s, "typed").await, before, "{raw}");
    }

    // Filters: the same refusals as invalid_filter.
    for query in [
        "r=gt.NaN",
        "r=gt.nan",
        "r=gt.inf",
        "r=lt.-infinity",
        "r=gt.1e999",
        "r=eq.abc",
        "n=gt.1.5",
        "n=eq.99999999999999999999",
        "n=is.true",
        "flag=eq.yes",
        "flag=eq.1",
        "flag=is.maybe",
        "at=gt.yesterday",
        "at=gt.2026-01-31",
        "ref=eq.nope",
        "id=in.(0190a5e4-7c2b-7d4e-8f00-000000000001,nope)",
        "data=eq.***",
        "doc=like.x*",
    ] {
        let got = api.get(&format!("things?{query}")).await;
        problem(&got, 400, "invalid_filter", query);
        let got = api
            .call(Method::DELETE, &format!("things?{query}"), None)
            .await;
        problem(&got, 400, "invalid_filter", &format!("DELETE {query}"));
    }
    assert_eq!(snapshot(&s, "typed").await, before);

    // Null into NOT NULL, given or left out, names the column.
    let full = json!({
        "n": 1, "r": 1.5, "t": "x", "flag": false, "at": "2026-01-31T18:00:00Z",
        "doc": {}, "ref": "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "data": "AA==",
    });
    for column in ["n", "r", "t", "flag", "at", "doc", "ref", "data"] {
        let mut with_null = full.clone();
        with_null[column] = Value::Null;
        let got = api.call(Method::POST, "strict", Some(with_null)).await;
        let detail = problem(&got, 400, "invalid_value", &format!("{column}: null"));
        assert!(detail.contains(&format!("for {column}:")), "{detail}");
        let mut without = full.clone();
        without.as_object_mut().unwrap().remove(column);
        let got = api.call(Method::POST, "strict", Some(without)).await;
        let detail = problem(&got, 400, "invalid_value", &format!("{column}: missing"));
        assert!(detail.contains(&format!("for {column}:")), "{detail}");
    }
    assert_eq!(count(&s, "typed", "strict").await, 0);
    let made = api.insert("strict", full).await.remove(0);
    let got = api
        .call(
            Method::PATCH,
            &format!("strict/{}", made["id"]),
            Some(json!({ "t": null })),
        )
        .await;
    problem(&got, 400, "invalid_value", "PATCH null");
    // Primary keys are never null.
    let got = api
        .call(Method::POST, "things", Some(json!({ "id": null })))
        .await;
    problem(&got, 400, "invalid_value", "null key");
}
four_modes!(invalid_values_name_their_column_and_change_nothing);

async fn constraints_without_a_name_are_named_after_their_columns(backend: Backend) {
    let Some(s) = typed(backend).await else {
        return;
    };
    let api = Api::new(&s, "typed");
    api.insert("tags", json!({ "id": "a", "label": "x" })).await;
    let before = snapshot(&s, "typed").await;
    // PostgreSQL names the foreign key that refused; SQLite does not say which one did,
    // so the engine names the table's. Every other name is PostgreSQL's on both, and the
    // same in every mode: shared mode's `tenant_id` is no part of any name.
    let fkey = match backend {
        Backend::Sqlite => "(tags_fkey)",
        _ => "(tags_thing_fkey)",
    };
    for (body, names) in [
        (json!({ "id": "b", "label": "x" }), "(tags_label_key)"),
        (json!({ "id": "a" }), "(tags_pkey)"),
        (
            json!({ "id": "c", "thing": "3f2504e0-4f89-11d3-9a0c-0305e82c3301" }),
            fkey,
        ),
    ] {
        let got = api.call(Method::POST, "tags", Some(body.clone())).await;
        let detail = problem(&got, 409, "constraint_violation", &body.to_string());
        assert!(detail.ends_with(names), "{body}: {detail}");
    }
    assert_eq!(snapshot(&s, "typed").await, before);
}
four_modes!(constraints_without_a_name_are_named_after_their_columns);

// ---------------------------------------------------------------------------------------
// 6. Hostile input
// ---------------------------------------------------------------------------------------

async fn hostile_input_is_refused_and_changes_nothing(backend: Backend) {
    let Some(s) = guild(backend).await else {
        return;
    };
    let api = Api::new(&s, "g");
    api.insert("members", roster()).await;
    let before = snapshot(&s, "g").await;
    let unchanged = |context: String| {
        let s = &s;
        let before = &before;
        async move { assert_eq!(&snapshot(s, "g").await, before, "{context}") }
    };

    // SQL in filter values is data.
    for value in [
        "eq.x' OR '1'='1",
        "eq.x;DROP TABLE members",
        "eq.x\"; DROP TABLE members; --",
        "in.(x') OR 1=1 --,y)",
        "like.%' OR 1=1 --",
        "lt.' OR 1=1 --",
    ] {
        let query = qs(&[("name", value)]);
        let (status, body) = api.get(&format!("members?{query}")).await;
        assert_eq!(
            (status, &body["data"]),
            (200, &json!([])),
            "{value}: {body}"
        );
        let (status, body) = api
            .call(
                Method::PATCH,
                &format!("members?{query}"),
                Some(json!({ "dkp": 1 })),
            )
            .await;
        assert_eq!((status, &body), (200, &json!({ "data": [] })), "{value}");
        let (status, body) = api
            .call(Method::DELETE, &format!("members?{query}"), None)
            .await;
        assert_eq!((status, &body), (200, &json!({ "deleted": 0 })), "{value}");
        unchanged(format!("filter {value}")).await;
    }
    let exact_members = || async { api.rows("members", "select=id,name,class,dkp").await };
    let members_before = exact_members().await;

    // Unknown operators and malformed filters.
    for value in [
        "regex.x",
        "ilike.x",
        "EQ.Aria",
        "eq",
        "not.x",
        "not.not.eq.Aria",
        "= 'Aria'",
        "eq.Aria) OR (1=1",
        "in.(Aria",
        "is.Aria",
        "is.true",
        "like",
    ] {
        let query = qs(&[("name", value)]);
        let expected = if value.starts_with("eq.") { 200 } else { 400 };
        let got = api.get(&format!("members?{query}")).await;
        if expected == 200 {
            assert_eq!(got.1["data"], json!([]), "{value}");
        } else {
            problem(&got, 400, "invalid_filter", value);
            let got = api
                .call(Method::DELETE, &format!("members?{query}"), None)
                .await;
            problem(&got, 400, "invalid_filter", value);
        }
    }

    // Identifiers that are not the schema's: columns and tables, encoded.
    let weird = [
        "na\"me",
        "name\"",
        "\"name\"",
        "name;--",
        "name; DROP TABLE members",
        "name\0",
        "\0",
        "näme",
        "名前",
        "NAME",
        "name ",
        "rowid",
        "oid",
        // PostgreSQL's system columns, and shared mode's hidden tenant column.
        "ctid",
        "xmin",
        "tableoid",
        "tenant_id",
        "*",
        "members.name",
        "",
    ];
    for column in weird {
        let query = format!("{}=eq.x", enc(column));
        let got = api.get(&format!("members?{query}")).await;
        let detail = problem(&got, 400, "column_not_found", &format!("filter {column:?}"));
        assert!(
            detail.chars().all(|c| c.is_ascii_graphic() || c == ' '),
            "echoed names are printable: {detail:?}"
        );
        let got = api
            .call(Method::DELETE, &format!("members?{query}"), None)
            .await;
        problem(
            &got,
            400,
            "column_not_found",
            &format!("delete filter {column:?}"),
        );
        let got = api
            .call(
                Method::POST,
                "members",
                Some(json!({ "name": "Zed", column: "x" })),
            )
            .await;
        problem(&got, 400, "column_not_found", &format!("insert {column:?}"));
        let got = api
            .call(Method::PATCH, "members/m1", Some(json!({ column: "x" })))
            .await;
        problem(&got, 400, "column_not_found", &format!("patch {column:?}"));
        // (`select` trims spaces around names; `*` is every column.)
        if !["", "*", "name "].contains(&column) {
            let got = api.get(&format!("members?select={}", enc(column))).await;
            problem(&got, 400, "column_not_found", &format!("select {column:?}"));
        }
        if !column.is_empty() {
            // `a.b` reads as column `a`, direction `b`.
            let code = if column.contains('.') {
                "invalid_filter"
            } else {
                "column_not_found"
            };
            let got = api.get(&format!("members?order={}", enc(column))).await;
            problem(&got, 400, code, &format!("order {column:?}"));
        }
    }
    unchanged("columns".into()).await;
    for table in [
        "mem\"bers",
        "members\"",
        "\"members\"",
        "members;",
        "members; DROP TABLE members",
        "members\0",
        "\0",
        "mémbers",
        "メンバー",
        "MEMBERS",
        "members ",
        "members--",
        "_tenancy_migrations",
        "_anything",
        "sqlite_master",
        "sqlite_schema",
        "sqlite_sequence",
        "pragma_table_info",
        "main.members",
        // PostgreSQL's catalogs, and the schemas a tenant's tables live in.
        "pg_class",
        "pg_catalog.pg_class",
        "pg_tables",
        "pg_stat_activity",
        "information_schema.tables",
        "public.members",
        "tenancy_shared.members",
        "members/../items",
    ] {
        let t = enc(table);
        for (method, path, body) in [
            (Method::GET, t.clone(), None),
            (Method::GET, format!("{t}?name=eq.x"), None),
            (Method::GET, format!("{t}/m1"), None),
            (
                Method::POST,
                t.clone(),
                Some(json!({ "name": "x", "version": 99 })),
            ),
            (
                Method::PATCH,
                format!("{t}/m1"),
                Some(json!({ "name": "x" })),
            ),
            (Method::DELETE, format!("{t}/m1"), None),
            (
                Method::PATCH,
                format!("{t}?name=eq.x"),
                Some(json!({ "name": "x" })),
            ),
            (Method::DELETE, format!("{t}?name=eq.x"), None),
            (Method::DELETE, format!("{t}?version=gt.0"), None),
        ] {
            let got = api.call(method.clone(), &path, body).await;
            let detail = problem(&got, 404, "table_not_found", &format!("{method} {table:?}"));
            assert!(
                detail.chars().all(|c| c.is_ascii_graphic() || c == ' '),
                "{detail:?}"
            );
        }
    }
    unchanged("tables".into()).await;

    // Selection and order tricks.
    for (query, code) in [
        ("select=name,(SELECT 1)", "column_not_found"),
        ("select=*,rowid", "column_not_found"),
        ("select=rowid", "column_not_found"),
        ("select=name;DROP TABLE members", "column_not_found"),
        ("select=count(*)", "column_not_found"),
        ("select=name as x", "column_not_found"),
        ("select=name,", "column_not_found"),
        ("select=sqlite_version()", "column_not_found"),
        ("select=name&select=id", "invalid_filter"),
        ("order=name;DROP TABLE members", "column_not_found"),
        ("order=(SELECT 1)", "column_not_found"),
        ("order=random()", "column_not_found"),
        ("order=1", "column_not_found"),
        ("order=name.desc;--", "invalid_filter"),
        ("order=name.desc nulls first", "invalid_filter"),
        ("order=name&order=id", "invalid_filter"),
        (
            "order=id,name,class,dkp,joined_at,id.desc",
            "invalid_filter",
        ),
    ] {
        let encoded: String = query
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                format!("{k}={}", enc(v))
            })
            .collect::<Vec<_>>()
            .join("&");
        let got = api.get(&format!("members?{encoded}")).await;
        problem(&got, 400, code, query);
    }

    // Limits.
    for limit in [
        "99999999999999999999999",
        "18446744073709551616",
        "1001",
        "0",
        "-1",
        "-0",
        "abc",
        "1.5",
        "1e3",
        "",
        " 10",
        "10;",
        "0x10",
    ] {
        let got = api.get(&format!("members?limit={}", enc(limit))).await;
        problem(&got, 400, "invalid_filter", &format!("limit {limit:?}"));
    }
    for limit in ["1", "1000"] {
        let (status, _) = api.get(&format!("members?limit={limit}")).await;
        assert_eq!(status, 200, "limit {limit}");
    }
    let got = api.get("members?limit=1&limit=2").await;
    problem(&got, 400, "invalid_filter", "two limits");

    // Bodies.
    let deep_array = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let deep_object = format!("{}\"x\"{}", "{\"name\":".repeat(200), "}".repeat(200));
    let deep_value = format!(r#"{{"name":"Zed","class":{}}}"#, deep_array);
    for (body, status, code) in [
        (deep_array.clone(), 400, "malformed_json"),
        (deep_object, 400, "malformed_json"),
        (deep_value, 400, "malformed_json"),
        (r#"{"name":"#.to_owned(), 400, "malformed_json"),
        (r#"{"name":"Zed"} x"#.to_owned(), 400, "malformed_json"),
        (r#"{'name':'Zed'}"#.to_owned(), 400, "malformed_json"),
        ("".to_owned(), 400, "malformed_json"),
        (
            r#"{"name":"Zed","name":"Yan"}"#.to_owned(),
            400,
            "invalid_body",
        ),
        (
            r#"[{"name":"Zed"},{"name":"Yan","name":"Yan"}]"#.to_owned(),
            400,
            "invalid_body",
        ),
        (
            r#"{"name":"Zed","dkp":1,"dkp":1}"#.to_owned(),
            400,
            "invalid_body",
        ),
        (r#""Zed""#.to_owned(), 400, "invalid_body"),
        ("5".to_owned(), 400, "invalid_body"),
        ("null".to_owned(), 400, "invalid_body"),
        ("[1]".to_owned(), 400, "invalid_body"),
    ] {
        let got = api
            .raw(
                Method::POST,
                "members",
                Some("application/json"),
                body.clone().into_bytes(),
            )
            .await
            .unwrap();
        problem(
            &got,
            status,
            code,
            &body.chars().take(60).collect::<String>(),
        );
        if code == "invalid_body" && body.starts_with('{') {
            let got = api
                .raw(
                    Method::PATCH,
                    "members/m1",
                    Some("application/json"),
                    body.clone().into_bytes(),
                )
                .await
                .unwrap();
            problem(&got, status, code, &format!("PATCH {body}"));
        }
    }
    let got = api
        .raw(
            Method::PATCH,
            "members?dkp=gt.0",
            Some("application/json"),
            deep_array.into_bytes(),
        )
        .await
        .unwrap();
    problem(&got, 400, "malformed_json", "deep bulk patch");
    unchanged("bodies".into()).await;

    // Wrong or missing content types.
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/xml"),
        None,
    ] {
        for (method, path) in [
            (Method::POST, "members"),
            (Method::PATCH, "members/m1"),
            (Method::PATCH, "members?dkp=gt.0"),
        ] {
            let got = api
                .raw(
                    method.clone(),
                    path,
                    content_type,
                    br#"{"name":"Zed"}"#.to_vec(),
                )
                .await
                .unwrap();
            problem(
                &got,
                415,
                "unsupported_media_type",
                &format!("{method} {path} {content_type:?}"),
            );
        }
    }
    unchanged("content types".into()).await;

    // Over the size limit: 10 MB, and one byte over 2 MiB.
    let limit = 2 * 1024 * 1024;
    let frame = r#"{"name":""}"#.len();
    let just_over = format!(r#"{{"name":"{}"}}"#, "x".repeat(limit + 1 - frame));
    assert_eq!(just_over.len(), limit + 1);
    let got = api
        .raw(
            Method::POST,
            "members",
            Some("application/json"),
            just_over.into_bytes(),
        )
        .await
        .unwrap();
    problem(&got, 413, "body_too_large", "2 MiB + 1");
    // 10 MB over a bare socket: the server answers once it has read past the limit and
    // closes without reading the rest, which a full HTTP client reports as a broken pipe.
    let (status, body) = post_huge(&s, "/t/g/v1/data/members", 10 * 1024 * 1024).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("body_too_large"), "{body}");
    let (status, _) = api.get("members?limit=1").await;
    assert_eq!(status, 200, "the server is still up");
    unchanged("large bodies".into()).await;

    // Primary keys do not change, alone or in bulk.
    for (path, body) in [
        ("members/m1", json!({ "id": "m9" })),
        ("members/m1", json!({ "id": "m2" })),
        ("members/m1", json!({ "dkp": 1, "id": "M1" })),
        ("members/m1", json!({ "id": null })),
        ("members?id=eq.m1", json!({ "id": "m9" })),
        ("members?id=eq.m1", json!({ "id": "m1" })),
        ("members?dkp=gte.0", json!({ "id": "same" })),
    ] {
        let got = api.call(Method::PATCH, path, Some(body.clone())).await;
        let detail = problem(&got, 400, "invalid_value", &format!("{path} {body}"));
        assert!(detail.contains("id"), "{detail}");
    }
    unchanged("primary keys".into()).await;
    assert_eq!(exact_members().await, members_before);
}
four_modes!(hostile_input_is_refused_and_changes_nothing);

// ---------------------------------------------------------------------------------------
// 7. Roles and resolvers
// ---------------------------------------------------------------------------------------

async fn api_key(s: &Server, slug: &str, role: &str) -> String {
    let (status, key) = s
        .json(
            Method::POST,
            &format!("/v1/tenants/{slug}/api-keys"),
            Some(ADMIN_TOKEN),
            Some(json!({ "role": role, "label": format!("data:{role}") })),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    key["key"].as_str().unwrap().to_owned()
}

async fn add_member(s: &Server, slug: &str, email: &str, role: &str) {
    s.join_by_invitation(slug, email, role).await;
}

async fn viewers_read_members_write(backend: Backend) {
    let Some(s) = guild(backend).await else {
        return;
    };
    let api = Api::new(&s, "g");
    api.insert("members", roster()).await;
    s.signup("viewer@g.gg").await;
    s.signup("member@g.gg").await;
    add_member(&s, "g", "viewer@g.gg", "viewer").await;
    add_member(&s, "g", "member@g.gg", "member").await;
    let viewer_key = api_key(&s, "g", "viewer").await;
    let member_key = api_key(&s, "g", "member").await;
    let viewer_user = s.login("viewer@g.gg", None).await;
    let member_user = s.login("member@g.gg", Some("g")).await;

    let before = snapshot(&s, "g").await;
    for token in [&viewer_key, &viewer_user] {
        let (status, body) = s
            .json(
                Method::GET,
                "/t/g/v1/data/members?order=id",
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"].as_array().unwrap().len(), 8);
        let (status, body) = s
            .json(Method::GET, "/t/g/v1/data/members/m1", Some(token), None)
            .await;
        assert_eq!((status, &body["name"]), (200, &json!("Aria")));
        for (method, path, body) in [
            (
                Method::POST,
                "/t/g/v1/data/members",
                Some(json!({ "name": "Zed" })),
            ),
            (
                Method::POST,
                "/t/g/v1/data/members",
                Some(json!([{ "name": "Zed" }])),
            ),
            (
                Method::PATCH,
                "/t/g/v1/data/members/m1",
                Some(json!({ "dkp": 1 })),
            ),
            (Method::DELETE, "/t/g/v1/data/members/m1", None),
            (
                Method::PATCH,
                "/t/g/v1/data/members?dkp=gte.0",
                Some(json!({ "dkp": 1 })),
            ),
            (Method::DELETE, "/t/g/v1/data/members?dkp=gte.0", None),
        ] {
            let got = s.json(method.clone(), path, Some(token), body).await;
            problem(&got, 403, "forbidden", &format!("viewer {method} {path}"));
        }
    }
    assert_eq!(snapshot(&s, "g").await, before, "viewers changed nothing");

    for token in [&member_key, &member_user] {
        let (status, body) = s
            .json(
                Method::POST,
                "/t/g/v1/data/members",
                Some(token),
                Some(json!({ "id": "new", "name": "Zed" })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = s
            .json(
                Method::PATCH,
                "/t/g/v1/data/members/new",
                Some(token),
                Some(json!({ "dkp": 5 })),
            )
            .await;
        assert_eq!((status, &body["dkp"]), (200, &json!(5)));
        let (status, body) = s
            .json(
                Method::PATCH,
                "/t/g/v1/data/members?id=eq.new",
                Some(token),
                Some(json!({ "dkp": 6 })),
            )
            .await;
        assert_eq!((status, &body["data"][0]["dkp"]), (200, &json!(6)));
        let (status, _) = s
            .json(
                Method::DELETE,
                "/t/g/v1/data/members/new",
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, 204);
        let (status, body) = s
            .json(
                Method::DELETE,
                "/t/g/v1/data/members?id=eq.new",
                Some(token),
                None,
            )
            .await;
        assert_eq!((status, &body), (200, &json!({ "deleted": 0 })));
    }
    assert_eq!(snapshot(&s, "g").await, before);

    // Nobody anonymous.
    let got = s
        .json(Method::GET, "/t/g/v1/data/members", None, None)
        .await;
    assert_eq!(got.0, 401);
    let got = s
        .json(
            Method::GET,
            "/t/g/v1/data/members",
            Some("not-a-token"),
            None,
        )
        .await;
    assert_eq!(got.0, 401);
}
four_modes!(viewers_read_members_write);

async fn every_resolver_reaches_the_data(backend: Backend) {
    let Some(s) = Server::start_on(backend).await else {
        return;
    };
    s.create_tenant("a").await;
    s.create_tenant("b").await;
    Api::new(&s, "a")
        .insert("members", json!({ "id": "a1", "name": "Aria of A" }))
        .await;
    Api::new(&s, "b")
        .insert("members", json!({ "id": "b1", "name": "Borin of B" }))
        .await;
    s.signup("m@a.gg").await;
    add_member(&s, "a", "m@a.gg", "member").await;
    let unscoped = s.login("m@a.gg", None).await;
    let scoped = s.login("m@a.gg", Some("a")).await;
    let key = api_key(&s, "a", "member").await;

    let ways: Vec<Way> = vec![
        (
            "path",
            "/t/a/v1/data/members".into(),
            unscoped.as_str(),
            vec![],
        ),
        (
            "subdomain",
            "/v1/data/members".into(),
            unscoped.as_str(),
            vec![("host", "a.localhost")],
        ),
        (
            "header",
            "/v1/data/members".into(),
            unscoped.as_str(),
            vec![("x-tenant", "a")],
        ),
        ("token", "/v1/data/members".into(), scoped.as_str(), vec![]),
        ("api key", "/v1/data/members".into(), key.as_str(), vec![]),
        (
            "admin by path",
            "/t/a/v1/data/members".into(),
            ADMIN_TOKEN,
            vec![],
        ),
        (
            "admin by header",
            "/v1/data/members".into(),
            ADMIN_TOKEN,
            vec![("x-tenant", "a")],
        ),
    ];
    for (how, path, token, headers) in &ways {
        let resp = s.call(Method::GET, path, Some(token), headers, None).await;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "{how}: {body}");
        assert_eq!(ids(body["data"].as_array().unwrap()), ["a1"], "{how}");
        let resp = s
            .call(
                Method::GET,
                &format!("{path}/a1"),
                Some(token),
                headers,
                None,
            )
            .await;
        assert_eq!(resp.status(), 200, "{how} by id");
        let resp = s
            .call(
                Method::GET,
                &format!("{path}/b1"),
                Some(token),
                headers,
                None,
            )
            .await;
        assert_eq!(resp.status(), 404, "{how}: b's row is not in a");
        let resp = s
            .call(
                Method::PATCH,
                &format!("{path}/a1"),
                Some(token),
                headers,
                Some(json!({ "dkp": 3 })),
            )
            .await;
        assert_eq!(resp.status(), 200, "{how} writes");
    }
    // An unscoped user must name a tenant; bound principals cannot name another.
    let got = s
        .json(Method::GET, "/v1/data/members", Some(&unscoped), None)
        .await;
    problem(&got, 400, "tenant_required", "unscoped");
    for token in [&scoped, &key] {
        let got = s
            .json(Method::GET, "/t/b/v1/data/members", Some(token), None)
            .await;
        problem(&got, 403, "tenant_conflict", "bound principal naming b");
    }
    let got = s
        .json(Method::GET, "/t/b/v1/data/members", Some(&unscoped), None)
        .await;
    problem(&got, 404, "tenant_not_found", "not a member of b");
    let (_, b) = Api::new(&s, "b").get("members/b1").await;
    assert_eq!(b["dkp"], 0);
}
four_modes!(every_resolver_reaches_the_data);

// ---------------------------------------------------------------------------------------
// 8. Isolation
// ---------------------------------------------------------------------------------------

async fn tenants_never_see_each_others_rows(backend: Backend) {
    let Some(s) = Server::start_on(backend).await else {
        return;
    };
    s.create_tenant("a").await;
    s.create_tenant("b").await;
    let a = Api::new(&s, "a");
    let b = Api::new(&s, "b");
    let a_rows = a.insert("members", roster()).await;
    let item = a
        .insert("items", json!({ "name": "Sword of A" }))
        .await
        .remove(0);
    let generated = a
        .insert("members", json!({ "name": "Generated" }))
        .await
        .remove(0);
    // The same name is fine in another tenant: constraints are per tenant.
    let b_row = b
        .insert("members", json!({ "id": "b1", "name": "Aria" }))
        .await
        .remove(0);
    let a_before = snapshot(&s, "a").await;
    let b_key = api_key(&s, "b", "owner").await;
    let item_id = item["id"].as_str().unwrap().to_owned();
    let generated_id = generated["id"].as_str().unwrap().to_owned();

    let mut a_ids: Vec<String> = ids(&a_rows);
    a_ids.push(generated_id.clone());
    for (how, prefix, token, headers) in [
        ("path", "/t/b/v1/data", ADMIN_TOKEN, vec![]),
        ("header", "/v1/data", ADMIN_TOKEN, vec![("x-tenant", "b")]),
        (
            "subdomain",
            "/v1/data",
            ADMIN_TOKEN,
            vec![("host", "b.localhost")],
        ),
        ("api key", "/v1/data", b_key.as_str(), vec![]),
    ] {
        let call = |method: Method, rest: String, body: Option<Value>| {
            let headers = headers.clone();
            let s = &s;
            async move {
                let resp = s
                    .call(
                        method,
                        &format!("{prefix}/{rest}"),
                        Some(token),
                        &headers,
                        body,
                    )
                    .await;
                let status = resp.status().as_u16();
                (status, resp.json::<Value>().await.unwrap_or(Value::Null))
            }
        };
        let (status, body) = call(Method::GET, "members?limit=1000&count=exact".into(), None).await;
        assert_eq!(status, 200, "{how}: {body}");
        assert_eq!(ids(body["data"].as_array().unwrap()), ["b1"], "{how}");
        assert_eq!(body["count"], 1);
        let (_, body) = call(Method::GET, "items".into(), None).await;
        assert_eq!(body["data"], json!([]), "{how}");
        for id in a_ids.iter().chain([&item_id]) {
            let table = if id == &item_id { "items" } else { "members" };
            let got = call(Method::GET, format!("{table}/{id}"), None).await;
            problem(&got, 404, "row_not_found", &format!("{how} GET {id}"));
            let got = call(
                Method::PATCH,
                format!("{table}/{id}"),
                Some(json!({ "name": "hijacked" })),
            )
            .await;
            problem(&got, 404, "row_not_found", &format!("{how} PATCH {id}"));
            let got = call(Method::DELETE, format!("{table}/{id}"), None).await;
            problem(&got, 404, "row_not_found", &format!("{how} DELETE {id}"));
            let (status, body) = call(Method::GET, format!("{table}?id=eq.{id}"), None).await;
            assert_eq!((status, &body["data"]), (200, &json!([])), "{how}");
            let (status, body) = call(
                Method::PATCH,
                format!("{table}?id=eq.{id}"),
                Some(json!({ "name": "hijacked" })),
            )
            .await;
            assert_eq!((status, &body), (200, &json!({ "data": [] })), "{how}");
            let (status, body) = call(Method::DELETE, format!("{table}?id=eq.{id}"), None).await;
            assert_eq!((status, &body), (200, &json!({ "deleted": 0 })), "{how}");
        }
        // Every row b can match, by any filter, is b's.
        let (_, body) = call(Method::GET, "members?name=like.*".into(), None).await;
        assert_eq!(ids(body["data"].as_array().unwrap()), ["b1"]);
    }
    assert_eq!(snapshot(&s, "a").await, a_before, "a is intact");
    let (status, shown) = b.get("members/b1").await;
    assert_eq!((status, &shown), (200, &b_row));
    // And the other way: a does not see b's row.
    problem(&a.get("members/b1").await, 404, "row_not_found", "a GET b1");
    let rows = a.rows("members", "name=eq.Aria").await;
    assert_eq!(ids(&rows), ["m1"]);
    // b's key cannot be pointed at a.
    let got = s
        .json(Method::GET, "/t/a/v1/data/members", Some(&b_key), None)
        .await;
    problem(&got, 403, "tenant_conflict", "b's key naming a");
}
four_modes!(tenants_never_see_each_others_rows);

/// Ids of the rows of a successful answer, sorted.
fn sorted_ids(body: &Value) -> Vec<String> {
    let mut ids = ids(body["data"].as_array().expect("data"));
    ids.sort();
    ids
}

/// An item, an auction of it and a bid by `bidder` on it: their ids.
async fn auction_with_bid(api: &Api<'_>, bidder: &str) -> (String, String, String) {
    let id = |rows: Vec<Value>| rows[0]["id"].as_str().unwrap().to_owned();
    let item = id(api.insert("items", json!({ "name": "Sword" })).await);
    let auction = id(api.insert("auctions", json!({ "item_id": item })).await);
    let bid = json!({ "auction_id": auction, "member_id": bidder, "amount": 5 });
    let bid = id(api.insert("bids", bid).await);
    (item, auction, bid)
}

/// Every route of the data API, called by tenant `a` where tenant `b` has rows that the
/// call would match, address or collide with, touches `a`'s rows only. In `shared` mode
/// both tenants' rows are in the same tables, so this is row-level security at work.
async fn every_route_touches_only_the_callers_rows(backend: Backend) {
    let Some(s) = Server::start_on(backend).await else {
        return;
    };
    s.create_tenant("a").await;
    s.create_tenant("b").await;
    let a = Api::new(&s, "a");
    let b = Api::new(&s, "b");
    a.insert("members", roster()).await;
    // b's rows: one with a's id `m1` and a's name `Aria` (keys are per tenant), and rows
    // that a's filters below would match.
    b.insert(
        "members",
        json!([
            { "id": "b1", "name": "Bex", "class": "mage", "dkp": 500 },
            { "id": "m1", "name": "Aria", "class": "warrior", "dkp": 1 },
            { "id": "b3", "name": "Brin", "class": "rogue", "dkp": 20 },
        ]),
    )
    .await;
    let (a_item, _, a_bid) = auction_with_bid(&a, "m1").await;
    let (b_item, b_auction, b_bid) = auction_with_bid(&b, "b1").await;
    let b_before = snapshot(&s, "b").await;
    assert!(
        b_before.iter().any(|row| row.contains("Bex")),
        "{b_before:?}"
    );
    assert!(
        !b_before.iter().any(|row| row.contains("Dax")),
        "b's snapshot holds b's rows only: {b_before:?}"
    );
    let b_members = b.rows("members", "order=id").await;

    // Lists and filters: a's rows only, whatever matches in b.
    let a_ids = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8"];
    let (status, body) = a.get("members?limit=1000&count=exact").await;
    assert_eq!((status, &body["count"]), (200, &json!(8)), "{body}");
    assert_eq!(sorted_ids(&body), a_ids);
    for (query, expected) in [
        ("class=eq.mage", &["m1", "m4"][..]),
        ("name=eq.Bex", &[]),
        ("name=eq.Aria", &["m1"]),
        ("id=in.(b1,b3,m1)", &["m1"]),
        ("dkp=gte.100", &[]),
        ("name=like.B*", &["m2"]),
    ] {
        assert_eq!(ids(&a.rows("members", query).await), expected, "{query}");
    }
    let (_, m1) = a.get("members/m1").await;
    assert_eq!(
        (&m1["name"], &m1["class"]),
        (&json!("Aria"), &json!("mage"))
    );
    for (table, own) in [("items", &a_item), ("bids", &a_bid)] {
        assert_eq!(ids(&a.rows(table, "").await), [own.as_str()], "{table}");
    }

    // b's rows by id: no such row, for reading, changing and deleting.
    for (path, patch) in [
        ("members/b1".to_owned(), json!({ "name": "hijacked" })),
        ("members/b3".to_owned(), json!({ "dkp": 0 })),
        (format!("items/{b_item}"), json!({ "name": "hijacked" })),
        (
            format!("auctions/{b_auction}"),
            json!({ "status": "closed" }),
        ),
        (format!("bids/{b_bid}"), json!({ "amount": 1000 })),
    ] {
        problem(&a.get(&path).await, 404, "row_not_found", &path);
        let got = a.call(Method::PATCH, &path, Some(patch)).await;
        problem(&got, 404, "row_not_found", &format!("PATCH {path}"));
        let got = a.call(Method::DELETE, &path, None).await;
        problem(&got, 404, "row_not_found", &format!("DELETE {path}"));
    }

    // b's tables by their place in the store: a schema-qualified name is no table.
    let b_tenant = s.engine.tenant(&Slug::parse("b").unwrap()).await.unwrap();
    for table in [
        format!("{}.members", b_tenant.placement.location),
        format!("{}.public.members", b_tenant.placement.location),
    ] {
        let got = a.get(&enc(&table)).await;
        problem(&got, 404, "table_not_found", &table);
    }

    // A shared id: a's row changes, b's does not.
    let (status, row) = a
        .call(Method::PATCH, "members/m1", Some(json!({ "dkp": 11 })))
        .await;
    assert_eq!(
        (status, &row["dkp"], &row["class"]),
        (200, &json!(11), &json!("mage"))
    );

    // Bulk changes whose filters match b's rows too: a's rows only.
    let (status, body) = a
        .call(
            Method::PATCH,
            "members?class=in.(mage,warrior,rogue)",
            Some(json!({ "dkp": 77 })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sorted_ids(&body), ["m1", "m2", "m4", "m5"]);
    for (query, patch) in [
        ("dkp=gte.100", json!({ "class": "hijacked" })),
        ("id=in.(b1,b3)", json!({ "class": "hijacked" })),
        ("name=eq.Bex", json!({ "dkp": 0 })),
    ] {
        let got = a
            .call(Method::PATCH, &format!("members?{query}"), Some(patch))
            .await;
        assert_eq!(got, (200, json!({ "data": [] })), "PATCH {query}");
        let got = a
            .call(Method::DELETE, &format!("members?{query}"), None)
            .await;
        assert_eq!(got, (200, json!({ "deleted": 0 })), "DELETE {query}");
    }
    let got = a.call(Method::DELETE, "members?class=eq.rogue", None).await;
    assert_eq!(got, (200, json!({ "deleted": 1 })), "a's rogue, not b's");
    // A cascade stays in its tenant.
    let got = a
        .call(Method::DELETE, "auctions?status=eq.open", None)
        .await;
    assert_eq!(got, (200, json!({ "deleted": 1 })), "a's auction");
    assert_eq!(count(&s, "a", "bids").await, 0);

    // Inserts: b's ids and names are free in a, and b's rows cannot be referenced.
    let made = a
        .insert(
            "members",
            json!([{ "id": "b1", "name": "Bex" }, { "id": "b3", "name": "Brin" }]),
        )
        .await;
    assert_eq!(ids(&made), ["b1", "b3"]);
    a.insert("items", json!({ "id": b_item, "name": "a's copy" }))
        .await;
    let got = a
        .call(
            Method::POST,
            "bids",
            Some(json!({ "auction_id": b_auction, "member_id": "b1", "amount": 9 })),
        )
        .await;
    problem(&got, 409, "constraint_violation", "a bid on b's auction");
    let got = a
        .call(
            Method::POST,
            "auctions",
            Some(json!({ "id": b_auction, "item_id": "nope" })),
        )
        .await;
    problem(
        &got,
        409,
        "constraint_violation",
        "an auction of no item of a",
    );

    // b: exactly as it was.
    assert_eq!(snapshot(&s, "b").await, b_before, "b is intact");
    assert_eq!(b.rows("members", "order=id").await, b_members);
    let (_, bex) = b.get("members/b1").await;
    assert_eq!((&bex["name"], &bex["dkp"]), (&json!("Bex"), &json!(500)));
    assert_eq!(ids(&b.rows("bids", "").await), [b_bid.as_str()]);
    assert_eq!(ids(&b.rows("members", "name=eq.Aria").await), ["m1"]);
    let (_, m1) = b.get("members/m1").await;
    assert_eq!((&m1["class"], &m1["dkp"]), (&json!("warrior"), &json!(1)));
}
four_modes!(every_route_touches_only_the_callers_rows);

// ---------------------------------------------------------------------------------------
// Limits every mode shares
// ---------------------------------------------------------------------------------------

/// `len` letters that do not compress (PostgreSQL compresses long index entries, so a
/// repetitive value would slip under its limit where a varied one does not).
fn varied_text(len: usize, seed: u64) -> String {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (b'a' + ((x >> 33) % 26) as u8) as char
        })
        .collect()
}

/// A text value too long for an index answers the same 400 naming the column in every
/// mode (PostgreSQL's B-tree entries hold about 2.7 kB; SQLite has no such limit, so the
/// engine enforces one bound everywhere), before anything is written; a value within the
/// bound is stored, and long values in unindexed columns are not limited.
async fn long_values_in_indexed_columns_are_refused_alike(backend: Backend) {
    let Some(s) = guild(backend).await else {
        return;
    };
    let api = Api::new(&s, "g");
    let long = varied_text(3_000, 1);

    // members.name: a unique constraint.
    let got = api
        .call(
            Method::POST,
            "members",
            Some(json!({ "id": "m1", "name": long })),
        )
        .await;
    let detail = problem(&got, 400, "value_too_long", "a 3,000-byte member name");
    assert!(
        detail.contains("name"),
        "the detail names the column: {detail}"
    );
    assert_eq!(count(&s, "g", "members").await, 0, "nothing was written");

    // items.name: a plain index; an array insert is refused whole.
    let got = api
        .call(
            Method::POST,
            "items",
            Some(json!([{ "id": "i1", "name": "Sword" }, { "id": "i2", "name": long }])),
        )
        .await;
    problem(&got, 400, "value_too_long", "a 3,000-byte item name");
    assert_eq!(count(&s, "g", "items").await, 0, "nothing was written");

    // The primary key too.
    let got = api
        .call(
            Method::POST,
            "raids",
            Some(json!({ "id": varied_text(3_000, 2), "name": "MC" })),
        )
        .await;
    problem(&got, 400, "value_too_long", "a 3,000-byte id");

    // Within the bound: stored, and read back whole.
    let fits = varied_text(2_000, 3);
    api.insert("items", json!({ "id": "i1", "name": fits }))
        .await;
    let (status, item) = api.get("items/i1").await;
    assert_eq!((status, &item["name"]), (200, &json!(fits)));

    // An update is checked the same way, by id and by filter.
    let got = api
        .call(Method::PATCH, "items/i1", Some(json!({ "name": long })))
        .await;
    problem(&got, 400, "value_too_long", "PATCH by id");
    let got = api
        .call(
            Method::PATCH,
            "items?id=eq.i1",
            Some(json!({ "name": long })),
        )
        .await;
    problem(&got, 400, "value_too_long", "PATCH by filter");
    let (_, item) = api.get("items/i1").await;
    assert_eq!(item["name"], json!(fits), "unchanged");

    // An unindexed column takes long values in every mode.
    let made = api
        .insert(
            "raids",
            json!({ "id": "r1", "name": varied_text(20_000, 4) }),
        )
        .await;
    assert_eq!(ids(&made), ["r1"]);
}
four_modes!(long_values_in_indexed_columns_are_refused_alike);

/// Requests already in flight when their tenant is deleted answer `404 tenant_not_found`
/// (as every request after the deletion does), never `500`: reads and writes run in a
/// loop while the tenant is deleted, over several tenants to catch every step of it.
async fn requests_during_a_tenants_deletion_answer_not_found(backend: Backend) {
    let Some(s) = Server::start_on(backend).await else {
        return;
    };
    let s = std::sync::Arc::new(s);
    for round in 0..4 {
        let slug = format!("doomed{round}");
        s.create_tenant(&slug).await;
        Api::new(&s, &slug)
            .insert("members", json!({ "id": "m1", "name": "Aria" }))
            .await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut workers = Vec::new();
        for worker in 0..4 {
            let (s, slug, stop) = (s.clone(), slug.clone(), stop.clone());
            workers.push(tokio::spawn(async move {
                let api = Api::new(&s, &slug);
                let mut answers = Vec::new();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let got = match (worker + n) % 4 {
                        0 => api.get("members/m1").await,
                        1 => api.get("members?order=id").await,
                        2 => {
                            api.call(
                                Method::POST,
                                "raids",
                                Some(json!({ "name": format!("raid {worker}-{n}") })),
                            )
                            .await
                        }
                        _ => {
                            api.call(Method::PATCH, "members/m1", Some(json!({ "dkp": n })))
                                .await
                        }
                    };
                    answers.push(got);
                }
                answers
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let (status, body) = s
            .json(
                Method::DELETE,
                &format!("/v1/tenants/{slug}"),
                Some(ADMIN_TOKEN),
                None,
            )
            .await;
        assert!(status < 300, "delete {slug}: {status} {body}");
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut not_found = 0;
        for worker in workers {
            for (status, body) in worker.await.unwrap() {
                match status {
                    200 | 201 => {}
                    404 => {
                        assert_eq!(body["code"], json!("tenant_not_found"), "{body}");
                        not_found += 1;
                    }
                    _ => panic!("{slug}: a request during deletion answered {status} {body}"),
                }
            }
        }
        assert!(not_found > 0, "{slug}: the requests after deletion saw it");
    }
}
four_modes!(requests_during_a_tenants_deletion_answer_not_found);
