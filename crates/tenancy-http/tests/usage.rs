//! Usage metering, storage sampling, cost and budget alerts through the real server: counts
//! made under concurrent load all reach the catalog at a clean shutdown, in far fewer
//! catalog writes than requests; the usage API's dates, CSV and access; the cost of a
//! metered plan and its alerts, raised once each however often and by however many
//! engines they are checked; storage that grows with the rows, in every mode.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::time::Duration;

use common::{Backend, Server, ADMIN_TOKEN};
use reqwest::Method;
use serde_json::{json, Value};
use tenancy::plans::Metric;
use tenancy::{Engine, EngineConfig, Plan, Plans, Slug};

/// No periodic flush during a test: only the ones it asks for.
fn no_periodic_flush(config: &mut EngineConfig) {
    config.usage.flush_every = Duration::from_secs(3600);
}

async fn key(s: &Server, slug: &str, role: &str, label: Option<&str>) -> (String, String) {
    let (status, body) = s
        .json(
            Method::POST,
            &format!("/v1/tenants/{slug}/api-keys"),
            Some(ADMIN_TOKEN),
            Some(json!({ "role": role, "label": label })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    (
        body["key"].as_str().unwrap().to_owned(),
        body["id"].as_str().unwrap().to_owned(),
    )
}

/// `requests` of every day of the current month, summed from the catalog itself (not
/// through the engine, which would flush first).
async fn stored_requests(engine: &Engine, slug: &str) -> u64 {
    let tenant = engine.tenant(&Slug::parse(slug).unwrap()).await.unwrap();
    let today = chrono::Utc::now().date_naive();
    let rows = engine
        .catalog()
        .usage(tenant.id, today - chrono::Days::new(1), today)
        .await
        .unwrap();
    rows.counts
        .iter()
        .filter(|c| c.metric == Metric::Requests && c.label.is_empty())
        .map(|c| c.value)
        .sum()
}

async fn metering_loses_nothing_and_batches_its_writes(backend: Backend) {
    let Some(s) = Server::start_on_with(backend, Default::default(), no_periodic_flush).await
    else {
        return;
    };
    s.create_tenant("g").await;
    let (store_key, _) = key(&s, "g", "member", Some("store:T01")).await;
    let (bare_key, bare_id) = key(&s, "g", "member", None).await;
    s.signup("ann@example.com").await;
    s.join_by_invitation("g", "ann@example.com", "member").await;
    let ann = s.login("ann@example.com", Some("g")).await;
    // One request of each kind first: the catalog lookups of keys, users and roles are
    // cached from then on.
    for token in [&store_key, &bare_key, &ann] {
        let resp = s
            .call(Method::GET, "/v1/tenant", Some(token), &[], None)
            .await;
        assert_eq!(resp.status().as_u16(), 200);
    }
    let warmup = 3u64;

    let before = s.engine.catalog().query_count();
    const READS: usize = 120;
    const WRITES: usize = 50;
    const USER: usize = 30;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..READS + WRITES + USER {
        let (client, base) = (s.client.clone(), s.base.clone());
        let (store_key, bare_key, ann) = (store_key.clone(), bare_key.clone(), ann.clone());
        tasks.spawn(async move {
            let resp = if i < READS {
                client
                    .get(format!("{base}/t/g/v1/data/members?limit=5"))
                    .bearer_auth(&store_key)
                    .send()
                    .await
            } else if i < READS + WRITES {
                client
                    .post(format!("{base}/t/g/v1/data/members"))
                    .bearer_auth(&bare_key)
                    .json(&json!({ "name": format!("member {i}") }))
                    .send()
                    .await
            } else {
                client
                    .get(format!("{base}/v1/tenant"))
                    .bearer_auth(&ann)
                    .send()
                    .await
            };
            let status = resp.expect("request").status().as_u16();
            assert!(status == 200 || status == 201, "{status}");
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let n = (READS + WRITES + USER) as u64;
    let during = s.engine.catalog().query_count() - before;
    assert!(
        during < n / 10,
        "{n} requests went to the catalog {during} times: counting must not"
    );
    assert_eq!(
        stored_requests(&s.engine, "g").await,
        0,
        "nothing is written before a flush"
    );

    // A clean shutdown flushes: everything counted is in the catalog, in one flush.
    let before = s.engine.catalog().query_count();
    s.engine.flush().await.unwrap();
    let flush = s.engine.catalog().query_count() - before;
    assert!(
        flush <= 2,
        "a flush is one usage transaction (and key times): {flush}"
    );
    assert_eq!(stored_requests(&s.engine, "g").await, n + warmup);

    let (status, body) = s
        .json(Method::GET, "/v1/tenants/g/usage", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let totals = &body["totals"];
    assert_eq!(totals["requests"], n + warmup, "{body}");
    assert_eq!(totals["reads"], READS as u64, "{body}");
    assert_eq!(totals["writes"], WRITES as u64, "{body}");
    assert_eq!(totals["rows_inserted"], WRITES as u64, "{body}");
    assert_eq!(totals["active_users"], 1, "{body}");
    let mut by_label = serde_json::Map::new();
    by_label.insert("store:T01".into(), json!(READS + 1));
    by_label.insert(bare_id.clone(), json!(WRITES + 1));
    assert_eq!(
        body["requests_by_label"],
        Value::Object(by_label),
        "a key without a label counts under its id"
    );
    let today = chrono::Utc::now().date_naive().to_string();
    assert_eq!(body["to"], today);
    assert_eq!(body["days"].as_array().unwrap().len(), 1, "{body}");

    // A flush with nothing new writes nothing.
    let before = s.engine.catalog().query_count();
    s.engine.flush_usage().await.unwrap();
    assert_eq!(s.engine.catalog().query_count(), before);
}

four_modes!(metering_loses_nothing_and_batches_its_writes);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_dates_are_checked_and_csv_has_one_line_per_day_metric_and_label() {
    let s = Server::start_on_with(Backend::Sqlite, Default::default(), no_periodic_flush)
        .await
        .unwrap();
    s.create_tenant("g").await;
    s.create_tenant("h").await;
    let (store_key, _) = key(&s, "g", "member", Some("store,7")).await;
    for _ in 0..3 {
        let resp = s
            .call(Method::GET, "/v1/data/members", Some(&store_key), &[], None)
            .await;
        assert_eq!(resp.status().as_u16(), 200);
    }

    for (query, why) in [
        ("from=2026-13-01", "not a month"),
        ("from=2026-02-30", "not a day"),
        ("to=tomorrow", "not a date"),
        ("from=2026-03-02&to=2026-03-01", "from after to"),
        ("from=2025-01-01&to=2026-01-02", "367 days"),
        ("from=2026-01-01&from=2026-01-02", "twice"),
        ("since=2026-01-01", "unknown parameter"),
    ] {
        let (status, body) = s
            .json(
                Method::GET,
                &format!("/v1/tenants/g/usage?{query}"),
                Some(ADMIN_TOKEN),
                None,
            )
            .await;
        assert_eq!(status, 400, "{why}: {body}");
        assert_eq!(body["code"], "invalid_date_range", "{why}: {body}");
    }
    let (status, body) = s
        .json(
            Method::GET,
            "/v1/tenants/g/usage?from=2025-01-01&to=2026-01-01",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "366 days are allowed: {body}");
    assert_eq!(body["days"], json!([]));

    // Admins of the tenant and the platform only; another tenant's key never sees it.
    let (member_key, _) = key(&s, "g", "member", None).await;
    let (status, body) = s
        .json(Method::GET, "/v1/tenants/g/usage", Some(&member_key), None)
        .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    let (h_admin, _) = key(&s, "h", "admin", None).await;
    let (status, _) = s
        .json(Method::GET, "/v1/tenants/g/usage", Some(&h_admin), None)
        .await;
    assert_eq!(status, 404);
    let (g_admin, _) = key(&s, "g", "admin", None).await;
    let (status, _) = s
        .json(Method::GET, "/v1/tenants/g/usage", Some(&g_admin), None)
        .await;
    assert_eq!(status, 200);

    let resp = s
        .call(
            Method::GET,
            "/v1/tenants/g/usage",
            Some(ADMIN_TOKEN),
            &[("accept", "text/csv")],
            None,
        )
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = resp.text().await.unwrap();
    let today = chrono::Utc::now().date_naive();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("day,metric,label,value"));
    let lines: Vec<&str> = lines.collect();
    assert_eq!(
        lines,
        vec![
            format!("{today},requests,,3"),
            format!("{today},requests,\"store,7\",3"),
            format!("{today},reads,,3"),
        ],
        "{csv}"
    );
}

fn metered_plan(config: &mut EngineConfig) {
    no_periodic_flush(config);
    let plan: Plan = serde_json::from_value(json!({
        "name": "metered",
        "price": { "currency": "EUR", "base": "0", "per_unit": { "requests": "1.00" } },
        "budget": "10.00",
    }))
    .unwrap();
    config.plans = Plans::new(vec![plan], Some("metered".into()), Default::default()).unwrap();
}

async fn requests(s: &Server, token: &str, n: usize) {
    for _ in 0..n {
        let resp = s
            .call(Method::GET, "/v1/tenant", Some(token), &[], None)
            .await;
        assert_eq!(resp.status().as_u16(), 200);
    }
}

async fn budget_alerts_are_raised_once_per_threshold(backend: Backend) {
    let Some(s) = Server::start_on_with(backend, Default::default(), metered_plan).await else {
        return;
    };
    s.create_tenant("g").await;
    let (token, _) = key(&s, "g", "viewer", None).await;
    let tenant = s.engine.tenant(&Slug::parse("g").unwrap()).await.unwrap();
    // Another engine on the same catalog: a second replica checking at the same time.
    let mut replica_config = s.engine.config().clone();
    replica_config.sweep_store_files = false;
    let replica = Engine::open(replica_config).await.unwrap();

    requests(&s, &token, 6).await;
    s.engine.flush_usage().await.unwrap();
    let raised = s.engine.budget_alerts(&tenant).await.unwrap();
    assert_eq!(
        raised.iter().map(|a| a.threshold).collect::<Vec<_>>(),
        vec![50],
        "6.00 of 10.00: the flush raised the 50 % alert"
    );

    // Checked again and again, at once, by both engines: nothing more.
    let mut checks = tokio::task::JoinSet::new();
    for i in 0..12 {
        let engine = if i % 2 == 0 {
            s.engine.clone()
        } else {
            replica.clone()
        };
        let tenant = tenant.clone();
        checks.spawn(async move { engine.check_budget(&tenant).await.unwrap().len() });
    }
    let mut more = 0;
    while let Some(n) = checks.join_next().await {
        more += n.unwrap();
    }
    assert_eq!(more, 0);

    // Past 100 %: 80 and 100 are raised together, by exactly one of the racing checks.
    requests(&s, &token, 5).await;
    s.engine.flush_usage().await.unwrap();
    let mut checks = tokio::task::JoinSet::new();
    for i in 0..12 {
        let engine = if i % 2 == 0 {
            s.engine.clone()
        } else {
            replica.clone()
        };
        let tenant = tenant.clone();
        checks.spawn(async move { engine.check_budget(&tenant).await.unwrap().len() });
    }
    while let Some(n) = checks.join_next().await {
        n.unwrap();
    }
    let alerts = s.engine.budget_alerts(&tenant).await.unwrap();
    assert_eq!(
        alerts.iter().map(|a| a.threshold).collect::<Vec<_>>(),
        vec![50, 80, 100],
        "{alerts:?}"
    );
    assert_eq!(alerts[0].budget, "10".parse().unwrap());

    let (status, cost) = s
        .json(Method::GET, "/v1/tenants/g/cost", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200, "{cost}");
    assert_eq!(cost["currency"], "EUR");
    assert_eq!(cost["plan"], "metered");
    assert_eq!(cost["mtd"], "11.00", "{cost}");
    assert_eq!(cost["budget"], "10.00");
    assert_eq!(cost["percent_of_budget"], 110.0);
    assert_eq!(cost["alerts"].as_array().unwrap().len(), 3);
    let days = cost["days_in_month"].as_u64().unwrap();
    let elapsed = cost["elapsed_days"].as_u64().unwrap();
    let projected: tenancy::Money = cost["projection"].as_str().unwrap().parse().unwrap();
    assert_eq!(projected.micros() as u64, 11_000_000 * days / elapsed);

    let (status, body) = s
        .json(Method::GET, "/v1/tenants/g/alerts", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"].as_array().unwrap().len(), 3, "{body}");
    assert_eq!(body["data"][0]["cost"], "6.00");

    // A tenant's own budget wins over its plan's.
    let (status, body) = s
        .json(
            Method::PATCH,
            "/v1/tenants/g",
            Some(ADMIN_TOKEN),
            Some(json!({ "budget": "100" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, cost) = s
        .json(Method::GET, "/v1/tenants/g/cost", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(cost["budget"], "100.00");
    assert_eq!(cost["percent_of_budget"], 11.0);
    drop(replica);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_alerts_sqlite() {
    budget_alerts_are_raised_once_per_threshold(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_alerts_pg() {
    budget_alerts_are_raised_once_per_threshold(Backend::PgSchema).await
}

async fn storage_grows_with_the_rows(backend: Backend) {
    let Some(s) = Server::start_on_with(backend, Default::default(), no_periodic_flush).await
    else {
        return;
    };
    s.create_tenant("g").await;
    s.create_tenant("h").await;
    let (token, _) = key(&s, "g", "member", None).await;
    let tenant = s.engine.tenant(&Slug::parse("g").unwrap()).await.unwrap();
    let other = s.engine.tenant(&Slug::parse("h").unwrap()).await.unwrap();
    assert_eq!(s.engine.storage_sample(tenant.id), None);

    let before = s.engine.sample_storage(&tenant).await.unwrap();
    let other_before = s.engine.sample_storage(&other).await.unwrap();
    // A shared tenant without rows holds no bytes of the shared tables; files, databases
    // and schemas take room empty.
    assert_eq!(
        before > 0,
        backend != Backend::PgShared,
        "{backend:?}: {before}"
    );
    let rows: Vec<Value> = (0..300)
        .map(|i| json!({ "name": format!("member {i} {}", "x".repeat(400)) }))
        .collect();
    let (status, body) = s
        .json(
            Method::POST,
            "/t/g/v1/data/members",
            Some(&token),
            Some(Value::Array(rows)),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // The sampler's pass measures the tenants written to since the last one.
    let sampled = s.engine.sample_storage_pass(false).await.unwrap();
    assert_eq!(sampled, 1);
    let after = s.engine.storage_sample(tenant.id).unwrap();
    assert!(
        after >= before + 300 * 400,
        "{backend:?}: {before} -> {after} after 120 kB of rows"
    );
    if backend == Backend::PgShared {
        // Shared tables hold every tenant: each counts only its own rows.
        let other_after = s.engine.sample_storage(&other).await.unwrap();
        assert_eq!(other_after, other_before, "{backend:?}");
    }

    // The day's value is the latest sample, not a sum; the report and the limits show it.
    let (status, body) = s
        .json(Method::GET, "/v1/tenants/g/usage", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["totals"]["storage_bytes"], after, "{body}");
    let stored = s
        .engine
        .catalog()
        .storage_sample(tenant.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.bytes, after);

    // A process that did not sample reads the others' samples from the catalog.
    let mut config = s.engine.config().clone();
    config.sweep_store_files = false;
    let replica = Engine::open(config).await.unwrap();
    assert_eq!(replica.storage_sample(tenant.id), None);
    replica.refresh_storage_samples().await.unwrap();
    assert_eq!(replica.storage_sample(tenant.id), Some(after));

    // The lease holder's pass samples the tenants not sampled today: none are left.
    assert_eq!(s.engine.sample_storage_pass(true).await.unwrap(), 0);
}

four_modes!(storage_grows_with_the_rows);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_users_are_distinct_per_day_and_over_the_range() {
    let s = Server::start_on_with(Backend::Sqlite, Default::default(), no_periodic_flush)
        .await
        .unwrap();
    s.create_tenant("g").await;
    let mut tokens = Vec::new();
    for email in ["a@example.com", "b@example.com"] {
        s.signup(email).await;
        s.join_by_invitation("g", email, "viewer").await;
        tokens.push(s.login(email, Some("g")).await);
    }
    for token in tokens.iter().chain(tokens.iter()) {
        requests(&s, token, 2).await;
    }
    // Flushed in two batches: the users seen again are not counted twice.
    s.engine.flush_usage().await.unwrap();
    requests(&s, &tokens[0], 1).await;
    let (status, body) = s
        .json(Method::GET, "/v1/tenants/g/usage", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["totals"]["active_users"], 2, "{body}");
    assert_eq!(body["totals"]["requests"], 9, "{body}");
    assert_eq!(body["days"][0]["metrics"]["active_users"], 2, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_keeps_its_counts_for_the_next() {
    let s = Server::start_on_with(Backend::Sqlite, Default::default(), no_periodic_flush)
        .await
        .unwrap();
    s.create_tenant("g").await;
    let (token, _) = key(&s, "g", "viewer", None).await;
    requests(&s, &token, 5).await;
    // The catalog refuses the write (its table is away); nothing counted may be lost.
    let catalog = tenancy::rusqlite::Connection::open(s.dir.path().join("catalog.db")).unwrap();
    catalog
        .execute_batch("ALTER TABLE usage_daily RENAME TO usage_daily_away")
        .unwrap();
    assert!(s.engine.flush_usage().await.is_err());
    assert!(s.engine.flush().await.is_err(), "shutdown reports it too");
    requests(&s, &token, 2).await;
    catalog
        .execute_batch("ALTER TABLE usage_daily_away RENAME TO usage_daily")
        .unwrap();
    s.engine.flush().await.unwrap();
    assert_eq!(stored_requests(&s.engine, "g").await, 7);

    // The operator sees the failure in the metrics.
    let resp = s
        .call(Method::GET, "/metrics", Some(ADMIN_TOKEN), &[], None)
        .await;
    let text = resp.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("tenancy_usage_flushes_total{outcome=\"failed\"}")),
        "{text}"
    );
}
