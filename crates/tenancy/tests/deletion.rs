//! Deleting a tenant acts on the tenant whose access was checked, by id: if its slug
//! changes hands between the check and the act, the new holder is untouched.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use tenancy::{Engine, EngineConfig, Error, Slug, TenantStatus};

fn slug(s: &str) -> Slug {
    Slug::parse(s).unwrap()
}

#[tokio::test]
async fn a_deletion_acts_on_the_authorised_tenant_not_the_slug() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineConfig::new(dir.path())).await.unwrap();
    // The caller's access is checked on this tenant…
    let authorised = engine.create_tenant(slug("acme"), None).await.unwrap();
    // …and before it acts, the tenant is deleted and its slug taken by another.
    engine.delete_tenant_by_id(authorised.id).await.unwrap();
    let successor = engine.create_tenant(slug("acme"), None).await.unwrap();
    assert_ne!(successor.id, authorised.id);

    let err = engine.delete_tenant_by_id(authorised.id).await.unwrap_err();
    assert!(matches!(err, Error::TenantNotFound { .. }), "{err:?}");
    let holder = engine.tenant(&slug("acme")).await.unwrap();
    assert_eq!(holder.id, successor.id);
    assert_eq!(holder.status, TenantStatus::Active);
    engine
        .query(&holder, "SELECT COUNT(*) AS n FROM members", vec![])
        .await
        .unwrap();

    // The successor itself is deleted by its own id.
    let deleted = engine.delete_tenant_by_id(successor.id).await.unwrap();
    assert_eq!(deleted.status, TenantStatus::Deleted);
}
