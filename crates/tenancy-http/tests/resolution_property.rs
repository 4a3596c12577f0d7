//! Property: whatever sources a request combines, a principal never reaches a tenant it
//! has no membership in, and a request whose sources disagree is never served.
//!
//! The property runs once per backend (`four_modes!`): the resolver chain reads tenants,
//! keys and memberships from the catalog, which is on PostgreSQL for the PostgreSQL
//! backends. Those run a quarter of the cases (64 of proptest's default 256; the default
//! follows `PROPTEST_CASES`), which keeps the suite fast: every case is a request.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::collections::HashMap;

use common::{Backend, Server, ADMIN_TOKEN};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseResult, TestRunner};
use reqwest::Method;
use serde_json::{json, Value};

const TENANTS: [&str; 4] = ["t0", "t1", "t2", "ghost"];

struct Caller {
    token: String,
    /// Tenant slug → role this caller has there.
    reach: HashMap<&'static str, &'static str>,
    /// The tenant a scoped token or key is bound to.
    bound: Option<&'static str>,
}

struct Fixture {
    server: Server,
    callers: Vec<Caller>,
}

/// Tenants t0–t2 (`ghost` does not exist), three users with their unscoped and scoped
/// tokens, and two API keys. `None`: PostgreSQL is unreachable (the test is skipped).
async fn fixture(backend: Backend) -> Option<Fixture> {
    let s = Server::start_on(backend).await?;
    for t in &TENANTS[..3] {
        s.create_tenant(t).await;
    }
    let memberships: [(&str, &[(&'static str, &'static str)]); 3] = [
        ("u0@x.gg", &[("t0", "viewer")]),
        ("u1@x.gg", &[("t1", "admin"), ("t2", "member")]),
        ("u2@x.gg", &[]),
    ];
    let mut callers = Vec::new();
    for (email, roles) in memberships {
        s.signup(email).await;
        for (t, role) in roles {
            s.join_by_invitation(t, email, role).await;
        }
        let reach: HashMap<_, _> = roles.iter().copied().collect();
        callers.push(Caller {
            token: s.login(email, None).await,
            reach: reach.clone(),
            bound: None,
        });
        for (t, role) in roles {
            callers.push(Caller {
                token: s.login(email, Some(t)).await,
                reach: HashMap::from([(*t, *role)]),
                bound: Some(t),
            });
        }
    }
    for (t, role) in [("t0", "member"), ("t2", "viewer")] {
        let (status, key) = s
            .json(
                Method::POST,
                &format!("/v1/tenants/{t}/api-keys"),
                Some(ADMIN_TOKEN),
                Some(json!({ "role": role })),
            )
            .await;
        assert_eq!(status, 201, "{key}");
        callers.push(Caller {
            token: key["key"].as_str().unwrap().to_owned(),
            reach: HashMap::from([(t, role)]),
            bound: Some(t),
        });
    }
    Some(Fixture { server: s, callers })
}

fn source() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        Just(None),
        (0..TENANTS.len()).prop_map(|i| Some(TENANTS[i]))
    ]
}

/// One request: `caller` asks `GET /v1/tenant`, naming tenants by path, subdomain and
/// header (each optional).
async fn check(
    f: &Fixture,
    caller: &Caller,
    path: Option<&str>,
    subdomain: Option<&str>,
    header: Option<&str>,
) -> TestCaseResult {
    let uri = match path {
        Some(t) => format!("/t/{t}/v1/tenant"),
        None => "/v1/tenant".to_owned(),
    };
    let host = subdomain.map(|t| format!("{t}.localhost"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(h) = &host {
        headers.push(("host", h));
    }
    if let Some(t) = header {
        headers.push(("x-tenant", t));
    }
    let resp = f
        .server
        .call(Method::GET, &uri, Some(&caller.token), &headers, None)
        .await;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);

    let named: Vec<&str> = [path, subdomain, header, caller.bound]
        .into_iter()
        .flatten()
        .collect();
    if status == 200 {
        let slug = body["slug"].as_str().unwrap();
        prop_assert!(
            caller.reach.contains_key(slug),
            "reached {slug} without membership"
        );
        prop_assert_eq!(body["role"].as_str(), caller.reach.get(slug).copied());
        prop_assert!(
            named.iter().all(|n| *n == slug),
            "served despite sources {:?}",
            named
        );
    } else {
        prop_assert!([400, 403, 404].contains(&status), "status {status}: {body}");
        let all_agree_on_reachable = !named.is_empty()
            && named.iter().all(|n| *n == named[0])
            && caller.reach.contains_key(named[0]);
        prop_assert!(
            !all_agree_on_reachable,
            "refused a legitimate request ({named:?}): {body}"
        );
    }
    Ok(())
}

four_modes!(a_principal_never_reaches_a_tenant_it_is_not_a_member_of);

async fn a_principal_never_reaches_a_tenant_it_is_not_a_member_of(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let mut config = ProptestConfig {
        // Seeds of failures are kept next to this crate, as `proptest!` would.
        source_file: Some(file!()),
        ..ProptestConfig::default()
    };
    if backend != Backend::Sqlite {
        config.cases = (config.cases / 4).max(1);
    }
    let strategy = (0..f.callers.len(), source(), source(), source());
    let mut runner = TestRunner::new(config);
    let runtime = tokio::runtime::Handle::current();
    // Proptest drives cases synchronously; each case's request runs on the test's runtime,
    // whose other worker keeps serving.
    let outcome = tokio::task::block_in_place(|| {
        runner.run(&strategy, |(who, path, subdomain, header)| {
            runtime.block_on(check(&f, &f.callers[who], path, subdomain, header))
        })
    });
    if let Err(e) = outcome {
        panic!("{backend:?}: {e}");
    }
}
