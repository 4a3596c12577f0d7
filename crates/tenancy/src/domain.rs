//! `Domain`: a host name as tenants register it and as requests name it; `CustomDomain`,
//! a tenant's claim on one; `DomainVerifier`, how a claim's ownership is checked.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::tenant::TenantId;

/// A lower-case ASCII host name: labels of `a-z`, `0-9`, `-`, at least two labels, at most
/// 253 characters, no port, no trailing dot. International names must be given in their
/// ASCII (`xn--`) form.
///
/// ```
/// use tenancy::Domain;
/// assert_eq!(Domain::parse("Guild.Example.COM.").unwrap().as_str(), "guild.example.com");
/// assert!(Domain::parse("exa mple.com").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Domain(String);

impl Domain {
    pub fn parse(raw: &str) -> Result<Domain> {
        let invalid = |reason| Err(Error::InvalidDomain { reason });
        if !raw.is_ascii() {
            return invalid("use the ASCII (xn--) form of international names");
        }
        let lower = raw.trim_end_matches('.').to_ascii_lowercase();
        if lower.is_empty() || lower.len() > 253 {
            return invalid("it must be 1 to 253 characters");
        }
        let labels: Vec<&str> = lower.split('.').collect();
        if labels.len() < 2 {
            return invalid("it needs at least two labels (example.com)");
        }
        if labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return invalid("an IP address is not a domain (no top-level domain is numeric)");
        }
        for label in &labels {
            let ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return invalid("each label is 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'");
            }
        }
        Ok(Domain(lower))
    }

    /// The host of a `Host` header: the port dropped, case and a trailing dot ignored.
    /// `localhost`-style single labels are allowed here (they match base domains).
    pub fn from_host_header(host: &str) -> Option<String> {
        if !host.is_ascii() || host.len() > 260 || host.starts_with('[') {
            return None;
        }
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return None,
            None => host,
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let valid = !name.is_empty()
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
        valid.then_some(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this domain is one of `hosts` or under one of them (`api.example.com` is
    /// under `example.com`).
    pub fn is_within(&self, hosts: &[String]) -> bool {
        hosts.iter().any(|host| {
            let host = host.trim_end_matches('.');
            self.0.eq_ignore_ascii_case(host)
                || self.0.len() > host.len()
                    && self.0.as_bytes()[self.0.len() - host.len() - 1] == b'.'
                    && self.0[self.0.len() - host.len()..].eq_ignore_ascii_case(host)
        })
    }
}

/// A tenant's claim on a custom domain. It is `pending` until the domain proves it belongs
/// to the claimant by serving `token` (see [`DomainVerifier`]); only a verified domain
/// names its tenant. Several tenants may claim one domain; the first to verify it keeps it
/// and the other claims are dropped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CustomDomain {
    pub domain: String,
    pub tenant_id: TenantId,
    /// What the domain must serve to prove the claim (issued at registration; not a
    /// secret: it is published).
    pub token: String,
    pub created_at: DateTime<Utc>,
    pub verified_at: Option<DateTime<Utc>>,
}

impl CustomDomain {
    pub fn is_verified(&self) -> bool {
        self.verified_at.is_some()
    }
}

/// Checks that a domain belongs to whoever holds a claim's token: the domain serves the
/// token (over HTTP, in DNS…). `tenancy_http::HttpTokenVerifier` is the HTTP check.
///
/// ```
/// use tenancy::{Domain, DomainVerifier};
///
/// /// Accepts the domains an operator vouched for by hand.
/// #[derive(Debug)]
/// struct Vouched(Vec<String>);
///
/// #[async_trait::async_trait]
/// impl DomainVerifier for Vouched {
///     async fn verify(&self, domain: &Domain, _token: &str) -> Result<(), String> {
///         if self.0.iter().any(|d| d == domain.as_str()) {
///             Ok(())
///         } else {
///             Err(format!("{domain} is not on the operator's list"))
///         }
///     }
/// }
/// ```
#[async_trait]
pub trait DomainVerifier: Send + Sync + fmt::Debug {
    /// `Ok` when `domain` shows `token`; otherwise what was found instead, in words for
    /// the person who registered the domain.
    async fn verify(&self, domain: &Domain, token: &str) -> std::result::Result<(), String>;
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_domains() {
        assert_eq!(Domain::parse("a.io").unwrap().as_str(), "a.io");
        assert_eq!(
            Domain::parse("Raid.Guild.GG.").unwrap().as_str(),
            "raid.guild.gg"
        );
        for bad in [
            "",
            "localhost",
            "a..io",
            "-a.io",
            "a-.io",
            "a_b.io",
            "bücher.de",
            "a.io:80",
            "a b.io",
            "a.io/x",
            "127.0.0.1",
            "10.0.0.8",
        ] {
            assert!(Domain::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn finds_domains_within_hosts() {
        let hosts = vec!["example.com".to_owned(), "API.Other.net.".to_owned()];
        let within = |d: &str| Domain::parse(d).unwrap().is_within(&hosts);
        assert!(within("example.com"));
        assert!(within("a.b.example.com"));
        assert!(within("api.other.net"));
        assert!(within("x.api.other.net"));
        assert!(!within("notexample.com"));
        assert!(!within("example.com.evil.io"));
        assert!(!within("other.net"));
    }

    #[test]
    fn normalizes_host_headers() {
        assert_eq!(
            Domain::from_host_header("Acme.Localhost:8080").as_deref(),
            Some("acme.localhost")
        );
        assert_eq!(
            Domain::from_host_header("acme.example.com.").as_deref(),
            Some("acme.example.com")
        );
        assert_eq!(
            Domain::from_host_header("localhost").as_deref(),
            Some("localhost")
        );
        for bad in ["", "a..b", "bücher.de", "[::1]:80", "a:b", "a b", "a\r\nb"] {
            assert_eq!(Domain::from_host_header(bad), None, "{bad:?}");
        }
    }
}
