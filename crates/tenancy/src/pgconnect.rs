//! How every connection to PostgreSQL is made — the catalog's and every store's: libpq's
//! `sslmode` and `sslrootcert` on top of tokio-postgres, with rustls.
//!
//! tokio-postgres understands `sslmode` `disable`, `prefer` and `require` only, never
//! verifies a certificate itself, and refuses `sslrootcert`. So [`PgConfig::parse`] takes
//! both out of the URL (or `key=value` string) before tokio-postgres parses the rest, and
//! keeps them beside its `Config`; [`connect`] then speaks libpq's semantics:
//!
//! | `sslmode`          | TLS                                 | certificate checked     |
//! |--------------------|-------------------------------------|-------------------------|
//! | `disable`          | never                               | —                       |
//! | `allow`            | if the server refuses plaintext     | only with `sslrootcert` |
//! | `prefer` (default) | if the server accepts; or plaintext | only with `sslrootcert` |
//! | `require`          | always                              | only with `sslrootcert` |
//! | `verify-ca`        | always                              | chain                   |
//! | `verify-full`      | always                              | chain and host name     |
//!
//! As libpq: a `prefer` connection whose TLS attempt fails (handshake, or the server
//! refusing the TLS session) is tried again in plaintext, an `allow` one the server
//! refuses in plaintext is tried again with TLS; with `sslrootcert`, `allow`, `prefer` and
//! `require` check the chain as `verify-ca` does; `verify-*` without `sslrootcert` (or
//! with `sslrootcert=system`) trust the web PKI roots; a Unix-domain socket never uses TLS.
//! Unlike libpq, a `sslrootcert` file that cannot be read is an error in every mode but
//! `disable`, never silently ignored.
//!
//! ```
//! use tenancy::pgconnect::{PgConfig, SslMode};
//!
//! let config = PgConfig::parse("postgres://app@db.internal/app?sslmode=verify-full").unwrap();
//! assert_eq!(config.ssl_mode(), SslMode::VerifyFull);
//! assert_eq!(config.get_dbname(), Some("app"));
//! ```

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::{Host, SslMode as Wire};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, Connection, Socket};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    const ALL: [SslMode; 6] = [
        SslMode::Disable,
        SslMode::Allow,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Result<SslMode, String> {
        SslMode::ALL
            .into_iter()
            .find(|m| m.as_str() == value)
            .ok_or_else(|| {
                format!(
                    "sslmode={value} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )
            })
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to reach a PostgreSQL server: tokio-postgres's `Config` (which it derefs to, for
/// the database, the user, timeouts…) and the TLS settings tokio-postgres does not know.
#[derive(Clone)]
pub struct PgConfig {
    config: Config,
    tls: Tls,
}

/// The TLS half of a [`PgConfig`].
#[derive(Clone)]
struct Tls {
    mode: SslMode,
    /// `None` under `disable`.
    client: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `Config`'s own Debug redacts the password.
        f.debug_struct("PgConfig")
            .field("config", &self.config)
            .field("sslmode", &self.tls.mode)
            .finish()
    }
}

impl std::ops::Deref for PgConfig {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.config
    }
}

impl std::ops::DerefMut for PgConfig {
    fn deref_mut(&mut self) -> &mut Config {
        &mut self.config
    }
}

impl PgConfig {
    /// Parses a `postgres://` URL or a libpq `key=value` string. The error says what is
    /// wrong without repeating the URL (it may hold a password); the caller names whose
    /// URL it is.
    pub fn parse(url: &str) -> Result<PgConfig, String> {
        let (rest, params) = take_tls_params(url);
        let config: Config = rest
            .parse()
            .map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
        let root_cert = params.root_cert.filter(|p| !p.is_empty());
        let system_roots = root_cert.as_deref() == Some("system");
        let mode = match params.mode.as_deref().map(SslMode::parse).transpose()? {
            Some(mode) => mode,
            // libpq: trusting every public CA makes sense only with the host name checked.
            None if system_roots => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        if system_roots && mode != SslMode::VerifyFull {
            return Err(format!(
                "sslrootcert=system needs sslmode=verify-full, not sslmode={mode}"
            ));
        }
        let roots = match root_cert {
            _ if mode == SslMode::Disable => None,
            Some(_) if system_roots => Some(Roots::Web),
            Some(path) => Some(Roots::File(PathBuf::from(path))),
            None if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) => Some(Roots::Web),
            None => None,
        };
        let client = match mode {
            SslMode::Disable => None,
            _ => Some(Arc::new(client_config(mode, roots)?)),
        };
        Ok(PgConfig {
            config,
            tls: Tls { mode, client },
        })
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.tls.mode
    }

    /// A deadpool manager whose connections are made by [`connect`].
    pub fn pool_manager(
        &self,
        manager: deadpool_postgres::ManagerConfig,
    ) -> deadpool_postgres::Manager {
        deadpool_postgres::Manager::from_connect(
            self.config.clone(),
            PoolConnect(self.tls.clone()),
            manager,
        )
    }
}

/// A connection's I/O half, to be polled (or spawned) as tokio-postgres requires.
pub type PgConnection = Connection<Socket, TlsStream>;

/// Connects as `config` says. The only way the engine opens a PostgreSQL connection.
/// [`reason`] words its errors for a person.
pub async fn connect(config: &PgConfig) -> Result<(Client, PgConnection), tokio_postgres::Error> {
    let mut pg = config.config.clone();
    let unix_only =
        !pg.get_hosts().is_empty() && pg.get_hosts().iter().all(|h| !matches!(h, Host::Tcp(_)));
    let mode = if unix_only {
        SslMode::Disable
    } else {
        config.tls.mode
    };
    pg.ssl_mode(match mode {
        SslMode::Disable | SslMode::Allow => Wire::Disable,
        SslMode::Prefer => Wire::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Wire::Require,
    });
    let tls = MakeTls {
        client: config.tls.client.clone(),
        tried: Arc::new(AtomicBool::new(false)),
    };
    match pg.connect(tls.clone()).await {
        // libpq: `prefer` tries a failed TLS attempt again in plaintext…
        Err(_) if mode == SslMode::Prefer && tls.tried.load(Ordering::Acquire) => {
            pg.ssl_mode(Wire::Disable);
            pg.connect(tls).await
        }
        // …and `allow` a plaintext attempt the server refused again with TLS.
        Err(e) if mode == SslMode::Allow && e.as_db_error().is_some() => {
            pg.ssl_mode(Wire::Require);
            pg.connect(tls).await
        }
        outcome => outcome,
    }
}

/// Why connecting failed, for a person: a refused certificate as `TLS: …` with the mode
/// and host, a server's refusal (`pg_hba.conf`, authentication) in the server's words
/// (tokio-postgres alone says "db error"), anything else as tokio-postgres says it. Never
/// with the password.
pub fn reason(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.to_string();
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        if let Some(refusal) = refused(err) {
            return format!("TLS: {refusal}");
        }
        cause = err.source();
    }
    e.to_string()
}

/// The certificate refusal inside an error, if that is what it is. An `io::Error`'s own
/// `source` skips the error it wraps, hence `get_ref`.
fn refused<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refusal> {
    if let Some(refusal) = err.downcast_ref::<Refusal>() {
        return Some(refusal);
    }
    if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) =
        err.downcast_ref::<rustls::Error>()
    {
        return other.0.downcast_ref::<Refusal>();
    }
    err.downcast_ref::<io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| refused(inner))
}

/// `sslmode` and `sslrootcert` as given, and the URL without them.
#[derive(Default)]
struct TlsParams {
    mode: Option<String>,
    root_cert: Option<String>,
}

fn take_tls_params(url: &str) -> (String, TlsParams) {
    let mut params = TlsParams::default();
    let mut take = |key: &str, value: String| match key {
        "sslmode" => {
            params.mode = Some(value);
            true
        }
        "sslrootcert" => {
            params.root_cert = Some(value);
            true
        }
        _ => false,
    };
    let rest = match ["postgres://", "postgresql://"]
        .iter()
        .find(|p| url.starts_with(*p))
    {
        Some(_) => take_from_url(url, &mut take),
        None => take_from_key_values(url, &mut take),
    };
    (rest, params)
}

/// `?a=b&c=d` of a URL. Where tokio-postgres's parser looks for the query: the first `?`
/// after the first `@` (a password may hold a `?`).
fn take_from_url(url: &str, take: &mut impl FnMut(&str, String) -> bool) -> String {
    let after_credentials = url.find('@').map_or(0, |i| i + 1);
    let Some(q) = url[after_credentials..]
        .find('?')
        .map(|q| q + after_credentials)
    else {
        return url.to_owned();
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let kept: Vec<&str> = url[q + 1..]
        .split('&')
        .filter(|param| match param.split_once('=') {
            Some((key, value)) => !take(&decode(key), decode(value)),
            None => true,
        })
        .collect();
    if kept.is_empty() {
        url[..q].to_owned()
    } else {
        format!("{}?{}", &url[..q], kept.join("&"))
    }
}

/// `key=value key='quoted value'`, as tokio-postgres (and libpq) read it. Whatever this
/// cannot read is kept for tokio-postgres to report.
fn take_from_key_values(s: &str, take: &mut impl FnMut(&str, String) -> bool) -> String {
    let mut kept = String::new();
    let mut chars = s.char_indices().peekable();
    let mut start = 0;
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(key_start, _)) = chars.peek() else {
            break;
        };
        while chars
            .next_if(|(_, c)| !c.is_whitespace() && *c != '=')
            .is_some()
        {}
        let key_end = chars.peek().map_or(s.len(), |(i, _)| *i);
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            break;
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        let mut value = String::new();
        let mut closed = !quoted;
        while let Some((_, c)) = chars.next_if(|(_, c)| quoted || !c.is_whitespace()) {
            match c {
                '\'' if quoted => {
                    closed = true;
                    break;
                }
                '\\' => value.extend(chars.next().map(|(_, c)| c)),
                c => value.push(c),
            }
        }
        if !closed {
            break;
        }
        let end = chars.peek().map_or(s.len(), |(i, _)| *i);
        if take(&s[key_start..key_end], value) {
            kept.push_str(&s[start..key_start]);
            start = end;
        }
    }
    kept.push_str(&s[start..]);
    kept
}

/// The CAs a certificate chain must lead to.
enum Roots {
    /// The `sslrootcert` file.
    File(PathBuf),
    /// The web PKI's roots (`webpki-roots`): without `sslrootcert`, or `sslrootcert=system`.
    Web,
}

fn client_config(mode: SslMode, roots: Option<Roots>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = match roots {
        None => None,
        Some(roots) => {
            let (store, source) = match roots {
                Roots::File(path) => (
                    read_roots(&path)?,
                    format!("sslrootcert {}", path.display()),
                ),
                Roots::Web => (
                    RootCertStore {
                        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                    },
                    "the web PKI roots".to_owned(),
                ),
            };
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(store), Arc::clone(&provider))
                    .build()
                    .map_err(|e| format!("cannot use {source}: {e}"))?;
            Some((verifier, source))
        }
    };
    let verifier = Verifier {
        mode,
        chain,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // What libpq sends; a server that negotiates TLS directly (PostgreSQL 17) requires it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let unreadable =
        |e: &dyn std::fmt::Display| format!("cannot read sslrootcert {}: {e}", path.display());
    // Read first: the PEM reader's own errors do not say "no such file".
    let pem = std::fs::read(path).map_err(|e| unreadable(&e))?;
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| unreadable(&e))?;
        store.add(cert).map_err(|e| unreadable(&e))?;
    }
    if store.is_empty() {
        return Err(unreadable(&"it holds no PEM certificate"));
    }
    Ok(store)
}

/// Why a server's certificate was refused, in words a person can act on.
#[derive(Debug)]
struct Refusal(String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// Checks the server's certificate as the mode says: not at all, its chain, or its chain
/// and the host name. The handshake's own signatures are always checked.
#[derive(Debug)]
struct Verifier {
    mode: SslMode,
    /// `None`: the certificate is not checked (`prefer`, `require` without `sslrootcert`).
    chain: Option<(Arc<WebPkiServerVerifier>, String)>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some((chain, roots)) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        let refuse = |why: String| {
            rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                Arc::new(Refusal(format!("{why} (sslmode={})", self.mode))),
            )))
        };
        // The chain is checked before the name, so a name error means a good chain.
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(verified) => Ok(verified),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.mode != SslMode::VerifyFull => Ok(ServerCertVerified::assertion()),
            Err(rustls::Error::InvalidCertificate(e)) => Err(refuse(match e {
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => format!(
                    "the server's certificate does not name host {}",
                    server_name.to_str()
                ),
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    format!("the server's certificate is not signed by a CA of {roots}")
                }
                other => format!("the server's certificate is refused: {other}"),
            })),
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// tokio-postgres's hook for TLS, per connection attempt: `tried` says whether the
/// server accepted TLS and a handshake began (what decides `prefer`'s plaintext retry).
#[derive(Clone)]
struct MakeTls {
    client: Option<Arc<ClientConfig>>,
    tried: Arc<AtomicBool>,
}

impl MakeTlsConnect<Socket> for MakeTls {
    type Stream = TlsStream;
    type TlsConnect = Handshake;
    type Error = io::Error;

    fn make_tls_connect(&mut self, host: &str) -> io::Result<Handshake> {
        Ok(Handshake {
            client: self.client.clone(),
            host: host.to_owned(),
            tried: Arc::clone(&self.tried),
        })
    }
}

/// The TLS handshake with one host.
struct Handshake {
    client: Option<Arc<ClientConfig>>,
    host: String,
    tried: Arc<AtomicBool>,
}

impl TlsConnect<Socket> for Handshake {
    type Stream = TlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsStream>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        Box::pin(async move {
            self.tried.store(true, Ordering::Release);
            let client = self
                .client
                .ok_or_else(|| io::Error::other("TLS is off (sslmode=disable)"))?;
            let name = ServerName::try_from(self.host.clone()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{:?} is not a host name TLS can check", self.host),
                )
            })?;
            let stream = tokio_rustls::TlsConnector::from(client)
                .connect(name, socket)
                .await?;
            Ok(TlsStream(Box::new(stream)))
        })
    }
}

/// A TLS session to the server.
pub struct TlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl tokio_postgres::tls::TlsStream for TlsStream {
    // No `tls-server-end-point` binding: SCRAM runs without channel binding (as it does
    // in plaintext), which tokio-postgres's default `channel_binding=prefer` accepts.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// deadpool's hook: the catalog's pooled connections are made by [`connect`] too.
struct PoolConnect(Tls);

impl deadpool_postgres::Connect for PoolConnect {
    fn connect(
        &self,
        pg: &Config,
    ) -> Pin<
        Box<
            dyn Future<
                    Output = Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
                > + Send
                + '_,
        >,
    > {
        let config = PgConfig {
            config: pg.clone(),
            tls: self.0.clone(),
        };
        Box::pin(async move {
            let (client, connection) = connect(&config).await?;
            let task = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "catalog connection closed");
                }
            });
            Ok((client, task))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (String, Option<String>, Option<String>) {
        let (rest, p) = take_tls_params(url);
        (rest, p.mode, p.root_cert)
    }

    #[test]
    fn url_parameters_are_taken_out_and_the_rest_kept() {
        assert_eq!(
            split("postgres://u:p%3F@h:5432/db?sslmode=verify-full&application_name=x&sslrootcert=%2Fca%20dir%2Fca.pem"),
            (
                "postgres://u:p%3F@h:5432/db?application_name=x".into(),
                Some("verify-full".into()),
                Some("/ca dir/ca.pem".into())
            )
        );
        assert_eq!(
            split("postgresql://h/db?sslmode=require"),
            ("postgresql://h/db".into(), Some("require".into()), None)
        );
        // A `?` in the password is not the query.
        assert_eq!(
            split("postgres://u:a?b@h/db"),
            ("postgres://u:a?b@h/db".into(), None, None)
        );
    }

    #[test]
    fn key_value_parameters_are_taken_out_and_the_rest_kept() {
        assert_eq!(
            split(r"host=h sslmode = verify-ca  sslrootcert='/a b/it\'s.pem' dbname=db"),
            (
                "host=h    dbname=db".into(),
                Some("verify-ca".into()),
                Some("/a b/it's.pem".into())
            )
        );
        assert_eq!(
            split("host=h password=x\\ y"),
            ("host=h password=x\\ y".into(), None, None)
        );
    }

    #[test]
    fn modes_parse_as_libpq_and_bad_values_are_named() {
        let mode = |url: &str| PgConfig::parse(url).map(|c| c.ssl_mode());
        assert_eq!(mode("postgres://h/db"), Ok(SslMode::Prefer));
        assert_eq!(mode("host=h sslmode=disable"), Ok(SslMode::Disable));
        assert_eq!(mode("host=h sslmode=allow"), Ok(SslMode::Allow));
        assert_eq!(
            mode("postgres://h/db?sslmode=verify-ca"),
            Ok(SslMode::VerifyCa)
        );
        assert_eq!(
            mode("postgres://h/db?sslrootcert=system"),
            Ok(SslMode::VerifyFull)
        );
        let err = mode("postgres://u:secret@h/db?sslmode=bogus").unwrap_err();
        assert!(err.contains("sslmode=bogus is not one of"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let err = mode("postgres://h/db?sslmode=require&sslrootcert=system").unwrap_err();
        assert!(
            err.contains("sslrootcert=system needs sslmode=verify-full"),
            "{err}"
        );
        let err = mode("postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
            .unwrap_err();
        assert!(
            err.starts_with("cannot read sslrootcert /nonexistent/ca.pem: "),
            "{err}"
        );
        // `disable` never reads it.
        assert_eq!(
            mode("postgres://h/db?sslmode=disable&sslrootcert=/nonexistent/ca.pem"),
            Ok(SslMode::Disable)
        );
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let url = format!("host=h sslmode=verify-ca sslrootcert={}", path.display());
        let err = PgConfig::parse(&url).unwrap_err();
        assert!(err.contains("holds no PEM certificate"), "{err}");
    }
}
