//! Users, sessions and tokens through the engine, on a fresh catalog per test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use tenancy::{Engine, EngineConfig, Error, Slug};

async fn engine() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineConfig::new(dir.path())).await.unwrap();
    (dir, engine)
}

const PW: &str = "lok'tar ogar 42";

#[tokio::test]
async fn signup_login_refresh_logout() {
    let (_dir, engine) = engine().await;
    let user = engine
        .create_user("Thrall@Horde.gg", PW, false)
        .await
        .unwrap();
    assert_eq!(user.email, "Thrall@Horde.gg");
    let err = engine
        .create_user("thrall@horde.GG", PW, false)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::EmailTaken), "{err}");

    let session = engine
        .login("thrall@horde.gg", PW, None, Some("1.2.3.4"))
        .await
        .unwrap();
    let claims = engine
        .verify_access_token(&session.access_token)
        .await
        .unwrap();
    assert_eq!(claims.sub, user.id.to_string());
    assert_eq!(claims.tid, None);
    assert!(session.expires_in > 800 && session.expires_in <= 900);

    // Rotating: the refresh token works once; replaying it revokes the new one too.
    let next = engine.refresh(&session.refresh_token).await.unwrap();
    assert!(engine.refresh(&session.refresh_token).await.is_err());
    assert!(
        engine.refresh(&next.refresh_token).await.is_err(),
        "family revoked"
    );

    let again = engine
        .login("thrall@horde.gg", PW, None, None)
        .await
        .unwrap();
    engine.logout(&again.refresh_token).await.unwrap();
    assert!(engine.refresh(&again.refresh_token).await.is_err());
}

#[tokio::test]
async fn tenant_scoped_tokens_carry_the_role_and_need_membership() {
    let (_dir, engine) = engine().await;
    let owner = engine
        .create_user("owner@guild.gg", PW, false)
        .await
        .unwrap();
    engine
        .create_user("stranger@guild.gg", PW, false)
        .await
        .unwrap();
    let acme = Slug::parse("acme").unwrap();
    engine
        .create_tenant_owned_by(acme.clone(), None, Some(owner.id))
        .await
        .unwrap();
    let session = engine
        .login("owner@guild.gg", PW, Some(&acme), None)
        .await
        .unwrap();
    let claims = engine
        .verify_access_token(&session.access_token)
        .await
        .unwrap();
    assert_eq!(claims.role.as_deref(), Some("owner"));
    assert!(claims.tid.is_some());
    let refreshed = engine.refresh(&session.refresh_token).await.unwrap();
    let claims = engine
        .verify_access_token(&refreshed.access_token)
        .await
        .unwrap();
    assert_eq!(claims.role.as_deref(), Some("owner"));

    // Not a member, and unknown tenant: the same answer.
    let err = engine
        .login("stranger@guild.gg", PW, Some(&acme), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TenantNotFound { .. }), "{err}");
    let ghost = Slug::parse("ghost").unwrap();
    let err = engine
        .login("stranger@guild.gg", PW, Some(&ghost), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TenantNotFound { .. }), "{err}");

    let (_, memberships) = engine.user_with_memberships(owner.id).await.unwrap();
    assert_eq!(memberships.len(), 1);
    assert_eq!(memberships[0].slug, "acme");
}

#[tokio::test]
async fn bad_signups_are_refused() {
    let (_dir, engine) = engine().await;
    for (email, password) in [
        ("not-an-email", PW),
        ("a@b", PW),
        ("x@guild.gg", "short"),
        ("longname@guild.gg", "LONGNAME-password"),
        ("x@guild.gg", &"a".repeat(2000)),
    ] {
        assert!(
            engine.create_user(email, password, false).await.is_err(),
            "{email} {password:.20}"
        );
    }
    // Stored verbatim, never interpreted.
    let odd = "<script>alert(1)</script>'--@guild.gg";
    let user = engine.create_user(odd, PW, false).await.unwrap();
    assert_eq!(user.email, odd);
}

#[tokio::test]
async fn failed_logins_are_limited_per_email() {
    let (_dir, engine) = engine().await;
    engine
        .create_user("jaina@alliance.gg", PW, false)
        .await
        .unwrap();
    for _ in 0..5 {
        let err = engine
            .login("jaina@alliance.gg", "wrong password!", None, None)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidCredentials), "{err}");
    }
    // Refused even with the right password until the window ends.
    let err = engine
        .login("jaina@alliance.gg", PW, None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RateLimited { .. }), "{err}");
    // Unknown emails answer like wrong passwords.
    let err = engine
        .login("nobody@alliance.gg", PW, None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidCredentials), "{err}");
}

#[tokio::test]
async fn rotation_keeps_issued_tokens_valid_across_processes() {
    let (dir, engine) = engine().await;
    engine.create_user("a@b.co", PW, false).await.unwrap();
    let before = engine.login("a@b.co", PW, None, None).await.unwrap();
    // Another process (another engine on the same catalog) rotates the key.
    let other = Engine::open(EngineConfig::new(dir.path())).await.unwrap();
    other.rotate_signing_key().await.unwrap();
    let after = other.login("a@b.co", PW, None, None).await.unwrap();
    assert!(engine
        .verify_access_token(&before.access_token)
        .await
        .is_ok());
    assert!(other
        .verify_access_token(&before.access_token)
        .await
        .is_ok());
    // The first engine learns the new key on first sight of a token signed with it.
    assert!(engine
        .verify_access_token(&after.access_token)
        .await
        .is_ok());
}
