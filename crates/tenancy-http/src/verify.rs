//! Checking that a custom domain belongs to whoever registered it: the token the
//! registration issued, served by the domain at
//! `http://<domain>/.well-known/tenancy-verification/<token>`.

use std::net::SocketAddr;
use std::time::Duration;

use tenancy::{Domain, DomainVerifier};

/// Where a domain serves its token.
pub const WELL_KNOWN_PATH: &str = "/.well-known/tenancy-verification/";

/// The largest answer read: a token is 32 characters.
const MAX_BODY: usize = 1024;

/// The URL at which `domain` must serve `token` (as the body of a `200`).
pub fn verification_url(domain: &str, token: &str) -> String {
    format!("http://{domain}{WELL_KNOWN_PATH}{token}")
}

/// Verifies a domain over HTTP: `GET http://<domain>/.well-known/tenancy-verification/<token>`
/// must answer `200` with the token as its body (surrounding white space ignored).
/// Redirects are not followed, and the answer must come within the timeout (10 s).
///
/// [`HttpTokenVerifier::connect_to`] sends the check to one address whatever the domain
/// resolves to (as `curl --connect-to` does): for a platform whose outbound traffic goes
/// through a known gateway, and for tests.
///
/// ```
/// use std::sync::Arc;
/// use tenancy_http::{HttpConfig, HttpTokenVerifier};
///
/// let config = HttpConfig {
///     domain_verifier: Arc::new(HttpTokenVerifier::new()),
///     ..HttpConfig::default()
/// };
/// ```
#[derive(Debug, Clone)]
pub struct HttpTokenVerifier {
    connect_to: Option<SocketAddr>,
    timeout: Duration,
}

impl Default for HttpTokenVerifier {
    fn default() -> Self {
        HttpTokenVerifier::new()
    }
}

impl HttpTokenVerifier {
    pub fn new() -> HttpTokenVerifier {
        HttpTokenVerifier {
            connect_to: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// Connects to `addr` for every domain (the `Host` is still the domain).
    pub fn connect_to(mut self, addr: SocketAddr) -> HttpTokenVerifier {
        self.connect_to = Some(addr);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> HttpTokenVerifier {
        self.timeout = timeout;
        self
    }
}

#[async_trait::async_trait]
impl DomainVerifier for HttpTokenVerifier {
    async fn verify(&self, domain: &Domain, token: &str) -> Result<(), String> {
        let url = verification_url(domain.as_str(), token);
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .no_proxy();
        if let Some(addr) = self.connect_to {
            builder = builder.resolve(domain.as_str(), addr);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot make the check: {e}"))?;
        let mut resp = client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{url} could not be fetched: {}", reason(&e)))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(format!(
                "{url} answered {}, not 200 with the token",
                resp.status().as_u16()
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("{url} could not be read: {}", reason(&e)))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BODY {
                break;
            }
        }
        if String::from_utf8_lossy(&body).trim() == token {
            Ok(())
        } else {
            Err(format!("{url} answered 200, but its body is not the token"))
        }
    }
}

/// What went wrong, without the driver's chain of wrappers.
fn reason(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "no connection to the domain's server (is its DNS record in place?)"
    } else {
        "the answer was not HTTP"
    }
}
