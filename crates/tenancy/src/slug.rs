//! `Slug`: a tenant's DNS-label name. Its constructor is the only validation.

use std::fmt;

use crate::error::{Error, Result};

/// Slugs that would collide with the platform's own hosts and routes.
pub const RESERVED_SLUGS: &[&str] = &[
    "admin",
    "api",
    "app",
    "assets",
    "auth",
    "console",
    "dashboard",
    "data",
    "docs",
    "help",
    "internal",
    "login",
    "logout",
    "mail",
    "me",
    "metrics",
    "new",
    "openapi",
    "platform",
    "public",
    "readyz",
    "healthz",
    "root",
    "settings",
    "signup",
    "static",
    "status",
    "support",
    "system",
    "t",
    "tenancy",
    "tenant",
    "tenants",
    "v1",
    "www",
];

/// A tenant slug: a lower-case DNS label (RFC 1123), 1–63 characters of `a-z`, `0-9` and `-`,
/// not starting or ending with `-`, and not reserved.
///
/// ```
/// use tenancy::Slug;
/// assert!(Slug::parse("acme-42").is_ok());
/// assert!(Slug::parse("Acme").is_err());
/// assert!(Slug::parse("www").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Slug(String);

impl Slug {
    pub fn parse(raw: &str) -> Result<Slug> {
        let invalid = |reason| {
            Err(Error::InvalidSlug {
                slug: raw.chars().take(80).collect(),
                reason,
            })
        };
        if raw.is_empty() {
            return invalid("it is empty");
        }
        if raw.len() > 63 {
            return invalid("it is longer than 63 characters");
        }
        if !raw.is_ascii() {
            return invalid("only a-z, 0-9 and '-' are allowed");
        }
        if raw.bytes().any(|b| b.is_ascii_uppercase()) {
            return invalid("it must be lower case");
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return invalid("only a-z, 0-9 and '-' are allowed");
        }
        if raw.starts_with('-') || raw.ends_with('-') {
            return invalid("it must not start or end with '-'");
        }
        if RESERVED_SLUGS.contains(&raw) {
            return invalid("it is reserved");
        }
        Ok(Slug(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "acme", "acme-42", "0day", &"a".repeat(63), "x-y-z"] {
            assert_eq!(Slug::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_everything_else() {
        let long = "a".repeat(64);
        for bad in [
            "", "Acme", "ac_me", "-acme", "acme-", "acmé", "ac me", "ac.me", &long, "www", "api",
            "admin", "t", "acme\n", "a;drop", "ÄÖ", "\0",
        ] {
            let err = Slug::parse(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidSlug { .. }),
                "{bad:?} gave {err}"
            );
        }
    }
}
