//! Sessions: `POST /login`, `POST /logout`, and who a request is from.
//!
//! tower-sessions with `stratacache_http::RedisSessionStore`: the session
//! record lives in Redis under `{namespace}:session:{id}`, so every instance
//! sharing the namespace shares sessions, behind a [`FallbackStore`] that
//! answers from this instance's copies while Redis does not. The id travels
//! in an `HttpOnly` cookie; the session expires after the `session` policy's
//! TTL (30 minutes) without activity. Login rotates the id (no session
//! fixation), logout deletes the record.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use stratacache_http::RedisSessionStore;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

use super::session_fallback::FallbackStore;
use crate::error::ApiError;

/// The cookie's name.
pub const COOKIE: &str = "market_session";

/// The session's key holding the user id.
pub const USER_ID: &str = "user_id";

/// The store of the service: Redis, with in-process copies as the fallback.
pub type Store = FallbackStore<RedisSessionStore<ConnectionManager>>;

/// The sessions layer type of the service.
pub type Sessions = SessionManagerLayer<Store>;

/// The sessions layer on `redis_url`. The connection is made on first use,
/// so a service started while Redis is down still starts (sign-ins answer
/// 503 until Redis is back). Every store call waits at most `timeout`. The
/// cookie is not `Secure`: the service speaks plain HTTP and is meant to sit
/// behind a TLS-terminating proxy.
/// The returned connection is the store's (clones share it), for [`ready`].
pub fn layer(
    redis_url: &str,
    namespace: &str,
    ttl: Duration,
    timeout: Duration,
) -> anyhow::Result<(Sessions, ConnectionManager)> {
    let client = redis::Client::open(redis_url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1);
    let connection = ConnectionManager::new_lazy_with_config(client, config)?;
    let redis = RedisSessionStore::new(connection.clone())
        .with_prefix(format!("{namespace}:session:"))
        .with_timeout(timeout);
    let inactivity = time::Duration::try_from(ttl)?;
    let layer = SessionManagerLayer::new(FallbackStore::new(redis, ttl))
        .with_name(COOKIE)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(inactivity));
    Ok((layer, connection))
}

/// Make sure the store's connection answers before a login or logout
/// changes a session: after Redis restarted, the connection manager learns
/// that its connection is dead from the first call that fails and reconnects
/// then, so one failed `PING` is retried once rather than failing the
/// change half-way.
pub async fn ready(connection: &ConnectionManager) -> Result<(), ApiError> {
    let mut connection = connection.clone();
    let ping = redis::cmd("PING");
    if ping.query_async::<()>(&mut connection).await.is_ok() {
        return Ok(());
    }
    ping.query_async::<()>(&mut connection)
        .await
        .map_err(unavailable)
}

/// A session store failure, as the routes answer it.
pub fn unavailable(err: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable("session store unavailable", err)
}
