//! TLS material for `rediss://` connections signed by a private CA, and
//! client certificates for mutual TLS. With a public CA, `rediss://` alone
//! is enough (the `tls` feature trusts the webpki roots).

use redis::RedisResult;

/// Certificates for `rediss://` (needs the `tls` cargo feature).
///
/// ```no_run
/// # async fn demo() -> Result<(), stratacache::Error> {
/// use stratacache::{Cache, RedisTls};
///
/// let ca = std::fs::read("/etc/redis/tls/ca.crt").unwrap();
/// let cache = Cache::builder()
///     .namespace("shop")
///     .redis_url("rediss://cache.internal:6380")
///     .redis_tls(RedisTls::new().root_cert_pem(ca))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    root_cert_pem: Option<Vec<u8>>,
    client_cert_pem: Option<Vec<u8>>,
    client_key_pem: Option<Vec<u8>>,
}

impl RedisTls {
    /// No custom material yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust this CA (PEM) instead of the public roots.
    pub fn root_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_cert_pem = Some(pem.into());
        self
    }

    /// Present this certificate and key (PEM) to the server (mutual TLS).
    pub fn client_cert_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.client_cert_pem = Some(cert.into());
        self.client_key_pem = Some(key.into());
        self
    }

    #[cfg(feature = "tls")]
    fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: match (&self.client_cert_pem, &self.client_key_pem) {
                (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
                _ => None,
            },
            root_cert: self.root_cert_pem.clone(),
        }
    }
}

/// The key stays out of logs.
impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("root_cert", &self.root_cert_pem.as_ref().map(|c| c.len()))
            .field("client_cert", &self.client_cert_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// A client for `url`, with `tls`'s certificates when given.
pub(crate) fn client(url: &str, tls: Option<&RedisTls>) -> RedisResult<redis::Client> {
    match tls {
        None => redis::Client::open(url),
        #[cfg(feature = "tls")]
        Some(tls) => redis::Client::build_with_tls(url, tls.certificates()),
        #[cfg(not(feature = "tls"))]
        Some(_) => Err(not_built_with_tls()),
    }
}

#[cfg(feature = "tls")]
pub(crate) fn cluster_certificates(tls: &RedisTls) -> redis::TlsCertificates {
    tls.certificates()
}

#[cfg(not(feature = "tls"))]
pub(crate) fn not_built_with_tls() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "TLS certificates given, but stratacache was built without its `tls` feature",
    ))
}

/// rustls needs one process-wide crypto provider; install ring's unless the
/// application installed one already.
pub(crate) fn install_crypto_provider() {
    #[cfg(feature = "tls")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
    }
}
