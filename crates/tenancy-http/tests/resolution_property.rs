//! Property: whatever sources a request combines, a principal never reaches a tenant it
//! has no membership in, and a request whose sources disagree is never served.

mod common;

use std::collections::HashMap;
use std::sync::OnceLock;

use common::{Server, ADMIN_TOKEN};
use proptest::prelude::*;
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
    runtime: tokio::runtime::Runtime,
    server: Server,
    callers: Vec<Caller>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (server, callers) = runtime.block_on(async {
            let s = Server::start().await;
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
                    let (status, _) = s
                        .json(
                            Method::POST,
                            &format!("/v1/tenants/{t}/members"),
                            Some(ADMIN_TOKEN),
                            Some(json!({ "email": email, "role": role })),
                        )
                        .await;
                    assert_eq!(status, 201);
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
                let (_, key) = s
                    .json(
                        Method::POST,
                        &format!("/v1/tenants/{t}/api-keys"),
                        Some(ADMIN_TOKEN),
                        Some(json!({ "role": role })),
                    )
                    .await;
                callers.push(Caller {
                    token: key["key"].as_str().unwrap().to_owned(),
                    reach: HashMap::from([(t, role)]),
                    bound: Some(t),
                });
            }
            (s, callers)
        });
        Fixture {
            runtime,
            server,
            callers,
        }
    })
}

fn source() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        Just(None),
        (0..TENANTS.len()).prop_map(|i| Some(TENANTS[i]))
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_principal_never_reaches_a_tenant_it_is_not_a_member_of(
        who in 0usize..7,
        path in source(),
        subdomain in source(),
        header in source(),
    ) {
        let f = fixture();
        let caller = &f.callers[who % f.callers.len()];
        let (status, body): (u16, Value) = f.runtime.block_on(async {
            let uri = match path {
                Some(t) => format!("/t/{t}/v1/tenant"),
                None => "/v1/tenant".to_owned(),
            };
            let host = subdomain.map(|t| format!("{t}.localhost"));
            let mut headers: Vec<(&str, &str)> = Vec::new();
            if let Some(h) = &host { headers.push(("host", h)); }
            if let Some(t) = header { headers.push(("x-tenant", t)); }
            let resp = f.server.call(Method::GET, &uri, Some(&caller.token), &headers, None).await;
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        });
        let named: Vec<&str> = [path, subdomain, header, caller.bound].into_iter().flatten().collect();
        if status == 200 {
            let slug = body["slug"].as_str().unwrap();
            prop_assert!(caller.reach.contains_key(slug), "reached {slug} without membership");
            prop_assert_eq!(body["role"].as_str(), caller.reach.get(slug).copied());
            prop_assert!(named.iter().all(|n| *n == slug), "served despite sources {:?}", named);
        } else {
            prop_assert!([400, 403, 404].contains(&status), "status {status}: {body}");
            let all_agree_on_reachable = !named.is_empty()
                && named.iter().all(|n| *n == named[0])
                && caller.reach.contains_key(named[0]);
            prop_assert!(!all_agree_on_reachable, "refused a legitimate request ({named:?}): {body}");
        }
    }
}
