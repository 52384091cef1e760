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

/// A Sentinel client that reaches the master (and its replicas) with
/// `tls`'s certificates when `master` is `rediss://`, and every Sentinel
/// given as `rediss://` with them too (then all of them must be).
#[cfg(feature = "tls")]
pub(crate) fn sentinel_client(
    sentinels: &[String],
    master_name: &str,
    master: &redis::ConnectionInfo,
    tls: &RedisTls,
) -> RedisResult<redis::sentinel::SentinelClient> {
    use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
    use redis::{ConnectionAddr, IntoConnectionInfo, TlsMode};

    let infos = sentinels
        .iter()
        .map(|url| url.as_str().into_connection_info())
        .collect::<RedisResult<Vec<_>>>()?;
    let is_tls = |addr: &ConnectionAddr| matches!(addr, ConnectionAddr::TcpTls { .. });
    let tls_sentinels = infos.iter().filter(|i| is_tls(i.addr())).count();
    if tls_sentinels != 0 && tls_sentinels != infos.len() {
        return Err(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "either every Sentinel is reached over TLS (rediss://) or none",
        )));
    }
    let mut builder = SentinelClientBuilder::new(
        infos.iter().map(|i| i.addr().clone()),
        master_name,
        SentinelServerType::Master,
    )?;
    let settings = master.redis_settings();
    builder = builder
        .set_client_to_redis_db(settings.db())
        .set_client_to_redis_protocol(settings.protocol());
    if let Some(user) = settings.username() {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = settings.password() {
        builder = builder.set_client_to_redis_password(password);
    }
    if is_tls(master.addr()) {
        builder = builder
            .set_client_to_redis_tls_mode(TlsMode::Secure)
            .set_client_to_redis_certificates(tls.certificates());
    }
    if let Some(first) = infos.first() {
        let s = first.redis_settings();
        if let Some(user) = s.username() {
            builder = builder.set_client_to_sentinel_username(user);
        }
        if let Some(password) = s.password() {
            builder = builder.set_client_to_sentinel_password(password);
        }
    }
    if tls_sentinels != 0 {
        builder = builder
            .set_client_to_sentinel_tls_mode(TlsMode::Secure)
            .set_client_to_sentinel_certificates(tls.certificates());
    }
    builder.build()
}

#[cfg(not(feature = "tls"))]
pub(crate) fn sentinel_client(
    _: &[String],
    _: &str,
    _: &redis::ConnectionInfo,
    _: &RedisTls,
) -> RedisResult<redis::sentinel::SentinelClient> {
    Err(not_built_with_tls())
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
