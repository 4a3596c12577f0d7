//! `Email`: trimmed, at most 254 characters, one `@` between a non-empty local part and
//! a domain with a dot; compared case-insensitively. Stored verbatim otherwise.

use std::fmt;

use serde::Serialize;

use crate::error::{Error, Result};

/// A syntactically plausible email address. Its constructor is the only validation.
///
/// ```
/// use tenancy::identity::Email;
/// assert_eq!(Email::parse(" Ada@Example.COM ").unwrap().normalized(), "ada@example.com");
/// assert!(Email::parse("not-an-email").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Email> {
        let email = raw.trim();
        let invalid = |reason| Err(Error::InvalidEmail { reason });
        if email.is_empty() {
            return invalid("it is empty");
        }
        if email.chars().count() > 254 {
            return invalid("it is longer than 254 characters");
        }
        if email.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return invalid("it contains spaces or control characters");
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return invalid("it has no '@'");
        };
        if local.is_empty() || local.contains('@') {
            return invalid("the part before '@' must be non-empty and hold no '@'");
        }
        if domain.len() < 3
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
        {
            return invalid("the domain after '@' is not valid");
        }
        Ok(Email(email.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form compared for uniqueness and login.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }

    /// The part before `@`, lower-cased (for the password policy).
    pub fn local_part(&self) -> String {
        self.normalized()
            .rsplit_once('@')
            .map(|(l, _)| l.to_owned())
            .unwrap_or_default()
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_normalizes() {
        for ok in [
            "a@b.co",
            "Ada.Lovelace+x@Example.org",
            "<b>@x.io",
            "o'neil@x.io",
        ] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(Email::parse("A@B.CO").unwrap().normalized(), "a@b.co");
    }

    #[test]
    fn refuses_bad_addresses() {
        let long = format!("{}@x.io", "a".repeat(260));
        for bad in [
            "",
            " ",
            "ab",
            "@x.io",
            "a@",
            "a@b",
            "a@.io",
            "a@x.",
            "a@x..io",
            "a b@x.io",
            "a\r\n@x.io",
            &long,
            "a@b@c.io",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }
}
