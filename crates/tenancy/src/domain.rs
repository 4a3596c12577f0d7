//! `Domain`: a host name as tenants register it and as requests name it.

use std::fmt;

use crate::error::{Error, Result};

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
        ] {
            assert!(Domain::parse(bad).is_err(), "{bad}");
        }
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
