//! What a hostile or careless client can do to the accounts side: floods of signups and
//! logins, guesses raced against the login limit, a suspended tenant's owner carrying on,
//! one user creating tenants without end, and members added without their consent.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::time::Duration;

use common::{Backend, Server, ADMIN_TOKEN, PASSWORD};
use reqwest::Method;
use serde_json::{json, Value};

four_modes!(
    a_suspended_tenant_changes_nothing_but_its_resumption,
    concurrent_tenant_creation_stops_at_the_per_user_maximum,
    adding_a_member_is_always_an_invitation,
);

async fn post(s: &Server, path: &str, token: Option<&str>, body: Value) -> reqwest::Response {
    s.client
        .post(format!("{}{path}", s.base))
        .timeout(Duration::from_secs(60))
        .bearer_auth(token.unwrap_or_default())
        .json(&body)
        .send()
        .await
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signup_flood_is_refused_beyond_the_limits_while_a_reader_keeps_answering() {
    let s = Server::start().await;
    s.create_tenant("g").await;
    let (status, key) = s
        .json(
            Method::POST,
            "/v1/tenants/g/api-keys",
            Some(ADMIN_TOKEN),
            Some(json!({ "role": "viewer" })),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().unwrap().to_owned();

    // A reader of the tenant's data, beside the flood.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let reader = {
        let (client, base, key) = (s.client.clone(), s.base.clone(), key.clone());
        tokio::spawn(async move {
            let mut answered = 0u32;
            while !*stop_rx.borrow_and_update() {
                let resp = client
                    .get(format!("{base}/t/g/v1/data/members?limit=5"))
                    .bearer_auth(&key)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .expect("the reader is answered within 10 s during the flood");
                assert_eq!(resp.status(), 200);
                answered += 1;
                let _ = tokio::time::timeout(Duration::from_millis(20), stop_rx.changed()).await;
            }
            answered
        })
    };

    let flood: Vec<_> = (0..80)
        .map(|i| {
            let s = (s.client.clone(), s.base.clone());
            tokio::spawn(async move {
                let resp = s
                    .0
                    .post(format!("{}/v1/auth/signup", s.1))
                    .timeout(Duration::from_secs(60))
                    .json(&json!({ "email": format!("flood{i}@spam.gg"), "password": PASSWORD }))
                    .send()
                    .await
                    .expect("signup answered");
                let retry = resp.headers().get("retry-after").is_some();
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                (status, retry, body)
            })
        })
        .collect();
    let mut created = 0;
    let mut refused = 0;
    for f in flood {
        let (status, retry, body) = f.await.unwrap();
        match status {
            201 => created += 1,
            429 | 503 => {
                assert!(retry, "a refusal says when to retry: {body}");
                let code = body["code"].as_str().unwrap();
                assert!(code == "rate_limited" || code == "auth_busy", "{body}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    stop_tx.send(true).unwrap();
    let answered = reader.await.unwrap();
    assert!(answered > 0);
    assert!(
        created <= 20,
        "at most the per-address signup limit: {created}"
    );
    assert_eq!(created + refused, 80);
    // Signups refused as busy did not count: one by one, the address gets exactly the
    // rest of its limit, then 429.
    for i in 0.. {
        let resp = post(
            &s,
            "/v1/auth/signup",
            None,
            json!({ "email": format!("late{i}@spam.gg"), "password": PASSWORD }),
        )
        .await;
        match resp.status().as_u16() {
            201 => created += 1,
            429 => break,
            other => panic!("unexpected {other}"),
        }
        assert!(created <= 20, "past the limit");
    }
    assert_eq!(created, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_login_guesses_cannot_outrun_the_limit() {
    let s = Server::start().await;
    s.signup("target@guild.gg").await;
    // 100 concurrent guesses, the right password among them.
    let guesses: Vec<_> = (0..100)
        .map(|i| {
            let (client, base) = (s.client.clone(), s.base.clone());
            let password = if i == 70 {
                PASSWORD.to_owned()
            } else {
                format!("wrong guess number {i}")
            };
            tokio::spawn(async move {
                client
                    .post(format!("{base}/v1/auth/login"))
                    .timeout(Duration::from_secs(60))
                    .json(&json!({ "email": "target@guild.gg", "password": password }))
                    .send()
                    .await
                    .expect("login answered")
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut counts = std::collections::BTreeMap::new();
    for g in guesses {
        *counts.entry(g.await.unwrap()).or_insert(0) += 1;
    }
    let checked = counts.get(&401).unwrap_or(&0) + counts.get(&200).unwrap_or(&0);
    assert!(
        checked <= 5,
        "at most the per-email limit checked: {counts:?}"
    );
    assert_eq!(checked + counts.get(&429).unwrap_or(&0), 100, "{counts:?}");
    // Whether or not the right guess came in time, the email is now locked, the right
    // password included.
    let resp = post(
        &s,
        "/v1/auth/login",
        None,
        json!({ "email": "target@guild.gg", "password": PASSWORD }),
    )
    .await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("retry-after").is_some());
}

async fn a_suspended_tenant_changes_nothing_but_its_resumption(backend: Backend) {
    let Some(s) = Server::start_on(backend).await else {
        return;
    };
    s.signup("owner@frozen.gg").await;
    s.signup("friend@frozen.gg").await;
    let owner = s.login("owner@frozen.gg", None).await;
    let resp = post(&s, "/v1/tenants", Some(&owner), json!({ "slug": "frozen" })).await;
    assert_eq!(resp.status(), 201);
    let scoped = s.login("owner@frozen.gg", Some("frozen")).await;
    let (status, key) = s
        .json(
            Method::POST,
            "/v1/tenants/frozen/api-keys",
            Some(&scoped),
            Some(json!({ "role": "admin" })),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().unwrap().to_owned();
    let (status, invited) = s
        .json(
            Method::POST,
            "/v1/tenants/frozen/members",
            Some(&scoped),
            Some(json!({ "email": "late@frozen.gg", "role": "member" })),
        )
        .await;
    assert_eq!(status, 201, "{invited}");
    let resp = post(
        &s,
        "/v1/tenants/frozen/suspend",
        Some(ADMIN_TOKEN),
        json!({}),
    )
    .await;
    assert_eq!(resp.status(), 200);

    let suspended = |resp_status: u16, body: &Value, what: &str| {
        assert_eq!(
            (resp_status, body["code"].as_str()),
            (403, Some("tenant_suspended")),
            "{what}: {body}"
        );
    };
    for token in [owner.as_str(), scoped.as_str(), key.as_str()] {
        let (status, body) = s
            .json(
                Method::POST,
                "/v1/tenants/frozen/api-keys",
                Some(token),
                Some(json!({ "role": "viewer" })),
            )
            .await;
        suspended(status, &body, "a new API key");
        let (status, body) = s
            .json(
                Method::POST,
                "/v1/tenants/frozen/members",
                Some(token),
                Some(json!({ "email": "friend@frozen.gg", "role": "member" })),
            )
            .await;
        suspended(status, &body, "a new member");
        let (status, body) = s
            .json(
                Method::POST,
                "/v1/tenants/frozen/domains",
                Some(token),
                Some(json!({ "domain": "frozen.example.com" })),
            )
            .await;
        suspended(status, &body, "a new domain");
    }
    let (status, body) = s
        .json(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({ "email": "owner@frozen.gg", "password": PASSWORD, "tenant": "frozen" })),
        )
        .await;
    suspended(status, &body, "a session scoped to it");
    let (status, body) = s
        .json(Method::DELETE, "/v1/tenants/frozen", Some(&owner), None)
        .await;
    suspended(status, &body, "its owner deleting it");
    // An invitation made before the suspension does not let anyone in while it lasts.
    let (status, body) = s
        .json(
            Method::POST,
            "/v1/auth/signup",
            None,
            Some(json!({ "email": "late@frozen.gg", "password": PASSWORD, "invitation": invited["invitation"] })),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_invitation"))
    );
    // Its control-plane metadata stays readable.
    let (status, members) = s
        .json(
            Method::GET,
            "/v1/tenants/frozen/members",
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(
        (status, members["data"].as_array().unwrap().len()),
        (200, 1)
    );
    let (status, _) = s
        .json(
            Method::GET,
            "/v1/tenants/frozen/api-keys",
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(status, 200);

    // Resumed, everything works again.
    let resp = post(
        &s,
        "/v1/tenants/frozen/resume",
        Some(ADMIN_TOKEN),
        json!({}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (status, body) = s
        .json(
            Method::POST,
            "/v1/tenants/frozen/api-keys",
            Some(&scoped),
            Some(json!({ "role": "viewer" })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    s.login("owner@frozen.gg", Some("frozen")).await;
}

async fn concurrent_tenant_creation_stops_at_the_per_user_maximum(backend: Backend) {
    let Some(s) = Server::start_on(backend).await else {
        return;
    };
    s.signup("hoarder@greed.gg").await;
    let token = s.login("hoarder@greed.gg", None).await;
    let creates: Vec<_> = (0..16)
        .map(|i| {
            let (client, base, token) = (s.client.clone(), s.base.clone(), token.clone());
            tokio::spawn(async move {
                let resp = client
                    .post(format!("{base}/v1/tenants"))
                    .timeout(Duration::from_secs(120))
                    .bearer_auth(token)
                    .json(&json!({ "slug": format!("hoard-{i}") }))
                    .send()
                    .await
                    .expect("create answered");
                let status = resp.status().as_u16();
                (status, resp.json::<Value>().await.unwrap_or(Value::Null))
            })
        })
        .collect();
    let mut created = 0;
    for c in creates {
        let (status, body) = c.await.unwrap();
        match status {
            201 => created += 1,
            403 => assert_eq!(body["code"], "tenant_limit_reached", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(created, 10, "exactly the default maximum of 10");
    let (_, listed) = s.json(Method::GET, "/v1/tenants", Some(&token), None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 10);
    // A platform administrator is not bound by it.
    s.create_tenant("admin-made").await;
}

async fn adding_a_member_is_always_an_invitation(backend: Backend) {
    let Some(s) = Server::start_on(backend).await else {
        return;
    };
    s.create_tenant("inn").await;
    s.signup("alice@inn.gg").await;
    s.signup("bob@inn.gg").await;
    let invite = |email: &'static str| {
        let s = &s;
        async move {
            s.json(
                Method::POST,
                "/v1/tenants/inn/members",
                Some(ADMIN_TOKEN),
                Some(json!({ "email": email, "role": "member" })),
            )
            .await
        }
    };
    // An account and no account: the same status and the same shape.
    let (status_a, alice) = invite("alice@inn.gg").await;
    let (status_g, ghost) = invite("ghost@inn.gg").await;
    assert_eq!((status_a, status_g), (201, 201), "{alice} {ghost}");
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&alice), keys(&ghost));
    assert_eq!(alice["status"], "invited");
    assert_eq!(ghost["status"], "invited");

    // Nobody joined without consent.
    let (_, members) = s
        .json(
            Method::GET,
            "/v1/tenants/inn/members",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(members["data"].as_array().unwrap().len(), 0, "{members}");
    let (status, _) = s
        .json(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({ "email": "alice@inn.gg", "password": PASSWORD, "tenant": "inn" })),
        )
        .await;
    assert_eq!(status, 404, "not a member yet");

    // Only the invited user redeems it, once.
    let accept = |token: String, invitation: Value| {
        let s = &s;
        async move {
            s.json(
                Method::POST,
                "/v1/invitations/accept",
                Some(&token),
                Some(json!({ "invitation": invitation })),
            )
            .await
        }
    };
    let bob = s.login("bob@inn.gg", None).await;
    let (status, body) = accept(bob, alice["invitation"].clone()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_invitation"))
    );
    let (status, body) = accept(ADMIN_TOKEN.to_owned(), alice["invitation"].clone()).await;
    assert_eq!(status, 403, "{body}");
    let alice_token = s.login("alice@inn.gg", None).await;
    let (status, body) = accept(alice_token.clone(), alice["invitation"].clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["membership"]["slug"], "inn");
    assert_eq!(body["membership"]["role"], "member");
    let (status, body) = accept(alice_token, alice["invitation"].clone()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_invitation"))
    );
    s.login("alice@inn.gg", Some("inn")).await;

    // A new user redeems theirs at signup.
    let (status, body) = s
        .json(
            Method::POST,
            "/v1/auth/signup",
            None,
            Some(json!({ "email": "ghost@inn.gg", "password": PASSWORD, "invitation": ghost["invitation"] })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (_, members) = s
        .json(
            Method::GET,
            "/v1/tenants/inn/members",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(members["data"].as_array().unwrap().len(), 2, "{members}");
    // Inviting a member again is refused (the members list shows them anyway).
    let (status, body) = invite("alice@inn.gg").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("member_exists"))
    );
}
