//! Plans through the HTTP API, in every mode: limits that hold under concurrency, lowered
//! limits that keep the data, feature flags and gated tables, plan changes, rate limits and
//! the suspension of tenants whose trial ended.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::collections::BTreeMap;

use common::{Backend, Server, ADMIN_TOKEN};
use reqwest::Method;
use serde_json::{json, Value};
use tenancy::plans::{Limits, PriceModel, RowLimit};
use tenancy::{Plan, Plans};
use tenancy_http::HttpConfig;

fn plan(name: &str) -> Plan {
    Plan {
        name: name.into(),
        display_name: name.to_uppercase(),
        mode: None,
        store: None,
        limits: Limits::default(),
        features: BTreeMap::new(),
        price: PriceModel::default(),
        budget: None,
        retention: Vec::new(),
    }
}

/// `free`: 5 open auctions, 10 members rows, 3 members (with invitations), 2 API keys, no
/// analytics (which gates the `raids` table). `premium`: unlimited, analytics on.
fn guild_plans() -> Plans {
    let mut free = plan("free");
    free.limits.rows = vec![
        RowLimit {
            name: "open_auctions".into(),
            table: "auctions".into(),
            filter: Some("status=eq.open".into()),
            max: 5,
        },
        RowLimit {
            name: "roster".into(),
            table: "members".into(),
            filter: None,
            max: 10,
        },
    ];
    free.limits.members = Some(3);
    free.limits.owned_tenants = Some(1);
    free.limits.api_keys = Some(2);
    free.features.insert("analytics".into(), false);
    free.features.insert("bot".into(), false);
    let mut premium = plan("premium");
    premium.features.insert("analytics".into(), true);
    premium.features.insert("bot".into(), true);
    let gates = BTreeMap::from([("raids".to_owned(), "analytics".to_owned())]);
    Plans::new(vec![free, premium], Some("free".into()), gates).unwrap()
}

async fn server(backend: Backend, plans: Plans) -> Option<Server> {
    Server::start_on_with(backend, HttpConfig::default(), move |c| c.plans = plans).await
}

async fn data(
    s: &Server,
    method: Method,
    slug: &str,
    rest: &str,
    body: Option<Value>,
) -> (u16, Value) {
    s.json(
        method,
        &format!("/t/{slug}/v1/data/{rest}"),
        Some(ADMIN_TOKEN),
        body,
    )
    .await
}

/// The rows of `table` matching `query`, counted by the API.
async fn count(s: &Server, slug: &str, table: &str, query: &str) -> u64 {
    let (status, body) = data(
        s,
        Method::GET,
        slug,
        &format!("{table}?{query}&count=exact&limit=1"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("no count in {body}"))
}

fn is_quota(got: &(u16, Value), limit: &str) -> bool {
    got.0 == 429 && got.1["code"] == "quota_exceeded" && got.1["limit"] == limit
}

async fn row_limits_hold_under_64_racing_writers(backend: Backend) {
    let Some(s) = server(backend, guild_plans()).await else {
        return;
    };
    s.create_tenant("g").await;
    let (status, item) = data(
        &s,
        Method::POST,
        "g",
        "items",
        Some(json!({"id": "i1", "name": "Sword"})),
    )
    .await;
    assert_eq!(status, 201, "{item}");

    // 64 writers race for the 5 open-auction slots.
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..64 {
        let (base, client) = (s.base.clone(), s.client.clone());
        racers.spawn(async move {
            let resp = client
                .post(format!("{base}/t/g/v1/data/auctions"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"id": format!("a{i}"), "item_id": "i1"}))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        });
    }
    let mut created = 0;
    while let Some(got) = racers.join_next().await {
        let got = got.unwrap();
        match got.0 {
            201 => created += 1,
            _ => {
                assert!(is_quota(&got, "open_auctions"), "{got:?}");
                assert_eq!(got.1["max"], 5, "{}", got.1);
                assert_eq!(got.1["current"], 5, "{}", got.1);
            }
        }
    }
    assert_eq!(created, 5, "exactly the free slots were taken");
    assert_eq!(count(&s, "g", "auctions", "status=eq.open").await, 5);

    // A bulk insert that would pass the limit changes nothing.
    let bulk = json!([
        {"id": "b1", "item_id": "i1", "status": "closed"},
        {"id": "b2", "item_id": "i1"},
    ]);
    let got = data(&s, Method::POST, "g", "auctions", Some(bulk)).await;
    assert!(is_quota(&got, "open_auctions"), "{got:?}");
    assert_eq!(
        count(&s, "g", "auctions", "").await,
        5,
        "nothing of the refused batch is kept"
    );

    // Rows the filter does not count go in; closing one frees a slot.
    let got = data(
        &s,
        Method::POST,
        "g",
        "auctions",
        Some(json!({"id": "c1", "item_id": "i1", "status": "closed"})),
    )
    .await;
    assert_eq!(got.0, 201, "{got:?}");
    let open: Vec<String> = {
        let (_, body) = data(
            &s,
            Method::GET,
            "g",
            "auctions?status=eq.open&order=id",
            None,
        )
        .await;
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let got = data(
        &s,
        Method::PATCH,
        "g",
        &format!("auctions/{}", open[0]),
        Some(json!({"status": "closed"})),
    )
    .await;
    assert_eq!(got.0, 200, "{got:?}");
    let got = data(
        &s,
        Method::POST,
        "g",
        "auctions",
        Some(json!({"id": "n1", "item_id": "i1"})),
    )
    .await;
    assert_eq!(got.0, 201, "{got:?}");
    // Reopening a closed one is an update that adds to the count: refused at the limit.
    let got = data(
        &s,
        Method::PATCH,
        "g",
        &format!("auctions/{}", open[0]),
        Some(json!({"status": "open"})),
    )
    .await;
    assert!(is_quota(&got, "open_auctions"), "{got:?}");

    // 64 writers race for the 10 roster rows, too.
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..64 {
        let (base, client) = (s.base.clone(), s.client.clone());
        racers.spawn(async move {
            client
                .post(format!("{base}/t/g/v1/data/members"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"name": format!("member {i}")}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    let mut statuses = BTreeMap::new();
    while let Some(status) = racers.join_next().await {
        *statuses.entry(status.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(statuses, BTreeMap::from([(201, 10), (429, 54)]));
    assert_eq!(count(&s, "g", "members", "").await, 10);

    // Lowering the limit below what the tenant holds keeps every row and refuses new ones;
    // changes that add nothing and deletions go on.
    let (status, body) = s
        .json(
            Method::PATCH,
            "/v1/tenants/g",
            Some(ADMIN_TOKEN),
            Some(json!({"limits": {"roster": 4}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(count(&s, "g", "members", "").await, 10, "the data is kept");
    let got = data(
        &s,
        Method::POST,
        "g",
        "members",
        Some(json!({"name": "late"})),
    )
    .await;
    assert!(is_quota(&got, "roster"), "{got:?}");
    assert_eq!(
        (got.1["current"].clone(), got.1["max"].clone()),
        (json!(10), json!(4))
    );
    let (_, body) = data(&s, Method::GET, "g", "members?order=name&limit=1", None).await;
    let first = body["data"][0]["id"].as_str().unwrap().to_owned();
    let got = data(
        &s,
        Method::PATCH,
        "g",
        &format!("members/{first}"),
        Some(json!({"dkp": 7})),
    )
    .await;
    assert_eq!(got.0, 200, "{got:?}");
    let got = data(&s, Method::DELETE, "g", &format!("members/{first}"), None).await;
    assert_eq!(got.0, 204, "{got:?}");

    // GET /v1/tenant shows each limit against what the tenant holds.
    let (status, me) = s
        .json(Method::GET, "/t/g/v1/tenant", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["plan"], "free");
    let limit = |name: &str| {
        me["limits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["limit"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {me}"))
    };
    assert_eq!(
        limit("roster"),
        json!({"limit": "roster", "max": 4, "current": 9})
    );
    assert_eq!(limit("open_auctions")["current"], 5);
    assert_eq!(limit("members")["max"], 3);
    assert_eq!(me["features"], json!({"analytics": false, "bot": false}));
}

async fn plans_flags_and_gated_tables(backend: Backend) {
    let Some(s) = server(backend, guild_plans()).await else {
        return;
    };
    let (status, plans) = s.json(Method::GET, "/v1/plans", None, None).await;
    assert_eq!(status, 200, "{plans}");
    assert_eq!(plans["default"], "free");
    assert_eq!(
        plans["data"][0]["limits"]["rows"][0]["filter"],
        "status=eq.open"
    );

    s.create_tenant("g").await;
    // `raids` needs analytics, which free lacks.
    let got = data(&s, Method::GET, "g", "raids", None).await;
    assert_eq!(
        (got.0, got.1["code"].as_str()),
        (403, Some("feature_disabled")),
        "{got:?}"
    );
    assert_eq!(got.1["feature"], "analytics");

    // Unknown plans and malformed changes are refused and change nothing.
    for (body, code) in [
        (json!({"plan": "gold"}), "unknown_plan"),
        (json!({"limits": {"guilds": 1}}), "invalid_input"),
        (json!({"limits": {"roster": -1}}), "invalid_body"),
        (json!({"limits": {"roster": "many"}}), "invalid_body"),
        (json!({"features": {"Bot Mode": true}}), "invalid_input"),
        (json!({"budget": "lots"}), "invalid_body"),
        (json!({"budget": "0"}), "invalid_input"),
        (json!({"trial_ends_at": "tomorrow"}), "invalid_body"),
        (json!({"color": "red"}), "invalid_body"),
        (json!({}), "invalid_input"),
    ] {
        let (status, problem) = s
            .json(
                Method::PATCH,
                "/v1/tenants/g",
                Some(ADMIN_TOKEN),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (status / 100, problem["code"].as_str()),
            (4, Some(code)),
            "{body}: {problem}"
        );
    }
    let t = s
        .engine
        .tenant(&tenancy::Slug::parse("g").unwrap())
        .await
        .unwrap();
    assert_eq!(
        (t.plan.as_deref(), t.plan_overrides.is_empty()),
        (Some("free"), true)
    );

    // A flag turned on for this tenant alone opens the gate.
    let (status, body) = s
        .json(
            Method::PATCH,
            "/v1/tenants/g",
            Some(ADMIN_TOKEN),
            Some(json!({"features": {"analytics": true}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(data(&s, Method::GET, "g", "raids", None).await.0, 200);
    assert!(s
        .engine
        .feature(&s.engine.tenant(&t.slug).await.unwrap(), "analytics"));

    // The plan change is journaled; a plan that places tenants elsewhere says a move is due.
    let (status, body) = s
        .json(
            Method::PATCH,
            "/v1/tenants/g",
            Some(ADMIN_TOKEN),
            Some(json!({"plan": "premium", "reset_overrides": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plan"], "premium");
    assert!(body.get("move_due").is_none(), "{body}");
    let journal = s.engine.catalog().journal(t.id).await.unwrap();
    let last = journal
        .iter()
        .rev()
        .find(|j| j.event == "plan.update")
        .expect("journaled");
    assert!(
        last.detail
            .as_deref()
            .unwrap_or("")
            .contains("plan free -> premium"),
        "{last:?}"
    );
    let (_, me) = s
        .json(Method::GET, "/t/g/v1/tenant", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(me["features"], json!({"analytics": true, "bot": true}));
}

async fn member_and_key_limits_hold_under_racing_requests(backend: Backend) {
    let Some(s) = server(backend, guild_plans()).await else {
        return;
    };
    s.create_tenant("g").await;
    // 3 members, invitations included: 32 racing invitations leave exactly 3.
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..32 {
        let (base, client) = (s.base.clone(), s.client.clone());
        racers.spawn(async move {
            let resp = client
                .post(format!("{base}/v1/tenants/g/members"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"email": format!("p{i}@example.com"), "role": "member"}))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        });
    }
    let mut invited = 0;
    while let Some(got) = racers.join_next().await {
        let got = got.unwrap();
        if got.0 == 201 {
            invited += 1;
        } else {
            assert!(is_quota(&got, "members"), "{got:?}");
        }
    }
    assert_eq!(invited, 3);
    // Keys: 2.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (status, body) = s
            .json(
                Method::POST,
                "/v1/tenants/g/api-keys",
                Some(ADMIN_TOKEN),
                Some(json!({"role": "member"})),
            )
            .await;
        statuses.push(status);
        if status != 201 {
            assert!(is_quota(&(status, body.clone()), "api_keys"), "{body}");
        }
    }
    assert_eq!(statuses, [201, 201, 429, 429]);
}

async fn rate_limits_answer_429_with_headers(backend: Backend) {
    let mut plans_list = vec![plan("metered")];
    plans_list[0].limits.requests_per_minute = Some(60);
    plans_list[0].limits.burst = Some(5);
    let plans = Plans::new(plans_list, Some("metered".into()), BTreeMap::new()).unwrap();
    let Some(s) = server(backend, plans).await else {
        return;
    };
    s.create_tenant("g").await;
    s.create_tenant("h").await;
    let key = |slug: &str| {
        let s = &s;
        let slug = slug.to_owned();
        async move {
            let (status, body) = s
                .json(
                    Method::POST,
                    &format!("/v1/tenants/{slug}/api-keys"),
                    Some(ADMIN_TOKEN),
                    Some(json!({"role": "member"})),
                )
                .await;
            assert_eq!(status, 201, "{body}");
            body["key"].as_str().unwrap().to_owned()
        }
    };
    let (g, h) = (key("g").await, key("h").await);
    let get = |k: String| {
        let s = &s;
        async move {
            s.call(Method::GET, "/v1/data/members", Some(&k), &[], None)
                .await
        }
    };
    for i in 0..5 {
        let resp = get(g.clone()).await;
        assert_eq!(resp.status(), 200, "request {i} is within the burst");
        let headers = resp.headers();
        assert_eq!(headers["ratelimit-limit"], "5");
        assert_eq!(headers["ratelimit-remaining"], (4 - i).to_string().as_str());
    }
    let refused = get(g.clone()).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "one request a second: {retry}");
    assert_eq!(refused.headers()["ratelimit-remaining"], "0");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    // Another tenant is not slowed by this one.
    assert_eq!(get(h.clone()).await.status(), 200);
    // The platform's own calls are not rated.
    let (status, _) = data(&s, Method::GET, "g", "members", None).await;
    assert_eq!(status, 200);
}

async fn a_trial_that_ends_suspends_the_tenant(backend: Backend) {
    let Some(s) = server(backend, guild_plans()).await else {
        return;
    };
    s.create_tenant("trial").await;
    s.create_tenant("paid").await;
    let past = (chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339();
    let future = (chrono::Utc::now() + chrono::Duration::days(10)).to_rfc3339();
    for (slug, body) in [
        ("trial", json!({"trial_ends_at": past})),
        ("paid", json!({"trial_ends_at": past})),
    ] {
        let (status, got) = s
            .json(
                Method::PATCH,
                &format!("/v1/tenants/{slug}"),
                Some(ADMIN_TOKEN),
                Some(body),
            )
            .await;
        assert_eq!(status, 200, "{got}");
    }
    // A plan change ends the trial (no new one given): `paid` upgraded in time.
    let (status, got) = s
        .json(
            Method::PATCH,
            "/v1/tenants/paid",
            Some(ADMIN_TOKEN),
            Some(json!({"plan": "premium", "subscription_ends_at": future})),
        )
        .await;
    assert_eq!(status, 200, "{got}");
    assert!(got.get("trial_ends_at").is_none(), "{got}");

    let suspended = s.engine.suspend_lapsed().await.unwrap();
    let slugs: Vec<&str> = suspended.iter().map(|t| t.slug.as_str()).collect();
    assert_eq!(slugs, ["trial"]);
    let (status, problem) = data(&s, Method::GET, "trial", "members", None).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (403, Some("tenant_suspended")),
        "{problem}"
    );
    assert!(
        problem["reason"]
            .as_str()
            .unwrap()
            .starts_with("trial ended"),
        "{problem}"
    );
    assert_eq!(data(&s, Method::GET, "paid", "members", None).await.0, 200);
    // Run again: nothing more to do, nothing suspended twice.
    assert!(s.engine.suspend_lapsed().await.unwrap().is_empty());
    // Resumed after paying (a new plan), it serves again, its data intact.
    let t = s
        .engine
        .tenant(&tenancy::Slug::parse("trial").unwrap())
        .await
        .unwrap();
    s.engine.resume_tenant(&t).await.unwrap();
    let (status, _) = s
        .json(
            Method::PATCH,
            "/v1/tenants/trial",
            Some(ADMIN_TOKEN),
            Some(json!({"plan": "premium"})),
        )
        .await;
    assert_eq!(status, 200);
    assert!(s.engine.suspend_lapsed().await.unwrap().is_empty());
    assert_eq!(data(&s, Method::GET, "trial", "members", None).await.0, 200);
}

async fn retention_deletes_old_rows_in_batches(backend: Backend) {
    let mut keeper = plan("keeper");
    keeper.retention = vec![tenancy::plans::Retention {
        table: "bids".into(),
        column: "created_at".into(),
        days: 30,
    }];
    let mut broken = plan("broken");
    broken.retention = vec![tenancy::plans::Retention {
        table: "bids".into(),
        column: "placed_at".into(),
        days: 30,
    }];
    let plans = Plans::new(
        vec![keeper, broken, plan("forever")],
        Some("keeper".into()),
        BTreeMap::new(),
    )
    .unwrap();
    let Some(s) = server(backend, plans).await else {
        return;
    };
    for slug in ["g", "h", "x"] {
        s.create_tenant(slug).await;
        for (table, row) in [
            ("members", json!({"id": "m1", "name": "Aria"})),
            ("items", json!({"id": "i1", "name": "Sword"})),
            ("auctions", json!({"id": "a1", "item_id": "i1"})),
        ] {
            let got = data(&s, Method::POST, slug, table, Some(row)).await;
            assert_eq!(got.0, 201, "{got:?}");
        }
        let old = (chrono::Utc::now() - chrono::Duration::days(31)).to_rfc3339();
        let recent = (chrono::Utc::now() - chrono::Duration::days(29)).to_rfc3339();
        // 2,500 old bids (three batches) and 3 recent ones.
        for chunk in 0..5 {
            let rows: Vec<Value> = (0..500)
                .map(|i| json!({"auction_id": "a1", "member_id": "m1", "amount": chunk * 500 + i + 1, "created_at": old}))
                .collect();
            let got = data(&s, Method::POST, slug, "bids", Some(json!(rows))).await;
            assert_eq!(got.0, 201, "{got:?}");
        }
        let rows: Vec<Value> = (0..3)
            .map(|i| json!({"auction_id": "a1", "member_id": "m1", "amount": 9000 + i, "created_at": recent}))
            .collect();
        assert_eq!(
            data(&s, Method::POST, slug, "bids", Some(json!(rows)))
                .await
                .0,
            201
        );
    }
    for (slug, plan) in [("h", "forever"), ("x", "broken")] {
        let (status, body) = s
            .json(
                Method::PATCH,
                &format!("/v1/tenants/{slug}"),
                Some(ADMIN_TOKEN),
                Some(json!({"plan": plan})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let report = s.engine.run_retention().await.unwrap();
    assert_eq!(
        report.deleted,
        vec![("g".to_owned(), "bids".to_owned(), 2500)]
    );
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].0, "x");
    assert!(report.failed[0].1.contains("placed_at"), "{report:?}");
    assert_eq!(count(&s, "g", "bids", "").await, 3, "the recent bids stay");
    assert_eq!(
        count(&s, "h", "bids", "").await,
        2503,
        "a plan without retention keeps all"
    );
    assert_eq!(
        count(&s, "x", "bids", "").await,
        2503,
        "a broken rule deletes nothing"
    );
    // Nothing left to do.
    assert!(s.engine.run_retention().await.unwrap().deleted.is_empty());
    // The rows the job deleted are the tenant's `rows_expired` of the day.
    let (status, usage) = s
        .json(Method::GET, "/v1/tenants/g/usage", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["totals"]["rows_expired"], 2500, "{usage}");
}

async fn one_guild_per_account_holds_under_racing_signups(backend: Backend) {
    let config = HttpConfig {
        self_service_tenants: true,
        ..HttpConfig::default()
    };
    let plans = guild_plans();
    let Some(s) = Server::start_on_with(backend, config, move |c| c.plans = plans).await else {
        return;
    };
    s.signup("founder@example.com").await;
    let token = s.login("founder@example.com", None).await;
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..16 {
        let (base, client, token) = (s.base.clone(), s.client.clone(), token.clone());
        racers.spawn(async move {
            let resp = client
                .post(format!("{base}/v1/tenants"))
                .bearer_auth(token)
                .json(&json!({"slug": format!("guild-{i}")}))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        });
    }
    let mut created = 0;
    while let Some(got) = racers.join_next().await {
        let got = got.unwrap();
        if got.0 == 201 {
            created += 1;
            assert_eq!(got.1["plan"], "free");
        } else {
            assert!(is_quota(&got, "owned_tenants"), "{got:?}");
        }
    }
    assert_eq!(created, 1, "free allows one guild per account");
    // Choosing a plan at creation is the platform's.
    let (status, body) = s
        .json(
            Method::POST,
            "/v1/tenants",
            Some(&token),
            Some(json!({"slug": "rich", "plan": "premium"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
}

async fn writes_stop_at_the_storage_limit_once_sampled(backend: Backend) {
    let mut small = plan("small");
    small.limits.storage_bytes = Some(1);
    let plans = Plans::new(
        vec![small, plan("roomy")],
        Some("small".into()),
        BTreeMap::new(),
    )
    .unwrap();
    let Some(s) = server(backend, plans).await else {
        return;
    };
    s.create_tenant("g").await;
    // Before any sample, nothing is known: writes go on.
    let got = data(
        &s,
        Method::POST,
        "g",
        "members",
        Some(json!({"id": "m1", "name": "Aria"})),
    )
    .await;
    assert_eq!(got.0, 201, "{got:?}");
    let t = s
        .engine
        .tenant(&tenancy::Slug::parse("g").unwrap())
        .await
        .unwrap();
    let bytes = s.engine.sample_storage(&t).await.unwrap();
    assert!(bytes > 1, "{bytes}");
    assert_eq!(s.engine.storage_sample(t.id), Some(bytes));
    let got = data(
        &s,
        Method::POST,
        "g",
        "members",
        Some(json!({"name": "Borin"})),
    )
    .await;
    assert!(is_quota(&got, "storage_bytes"), "{got:?}");
    assert_eq!(got.1["current"], bytes);
    assert_eq!(got.1["max"], 1);
    // Reads and deletes go on; a plan with room lets writes in again.
    assert_eq!(data(&s, Method::GET, "g", "members", None).await.0, 200);
    assert_eq!(
        data(&s, Method::DELETE, "g", "members/m1", None).await.0,
        204
    );
    let (status, body) = s
        .json(
            Method::PATCH,
            "/v1/tenants/g",
            Some(ADMIN_TOKEN),
            Some(json!({"plan": "roomy"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let got = data(
        &s,
        Method::POST,
        "g",
        "members",
        Some(json!({"name": "Borin"})),
    )
    .await;
    assert_eq!(got.0, 201, "{got:?}");
    let (_, me) = s
        .json(Method::GET, "/t/g/v1/tenant", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(me["plan"], "roomy");
}

four_modes!(
    writes_stop_at_the_storage_limit_once_sampled,
    one_guild_per_account_holds_under_racing_signups,
    retention_deletes_old_rows_in_batches,
    row_limits_hold_under_64_racing_writers,
    plans_flags_and_gated_tables,
    member_and_key_limits_hold_under_racing_requests,
    rate_limits_answer_429_with_headers,
    a_trial_that_ends_suspends_the_tenant,
);
