//! Who may do what, as extractors a handler names in its arguments:
//!
//! | extractor | required for | without it | with the wrong one |
//! |---|---|---|---|
//! | [`SignedIn`] + [`SignedIn::owns`] | a user's writes (profile, watchlist, orders) and private reads (portfolio, watchlist, the profile's private fields) | 401 | 403 |
//! | [`Operator`] | `POST /admin/invalidate`, `PUT /api/stocks/{s}/price`, `PUT /api/stocks/{s}/depth` | 401 | 401 (no operator token configured: 403) |
//!
//! Public market data needs neither. Extractors run before the body is
//! read, so an unauthenticated request is refused before its body is
//! parsed or validated, and reveals nothing about the ids it names.
//!
//! The operator token is given to `market serve` by the environment
//! (`MARKET_ADMIN_TOKEN`) or a file (`--admin-token-file`), never on the
//! command line (where `ps` shows it). Only its SHA-256 is kept, and a
//! presented token is compared by digest in constant time.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use tower_sessions::Session;

use crate::error::ApiError;
use crate::patterns::sessions::{unavailable, USER_ID};
use crate::read_your_writes::{self, Freshness, LAST_WRITE};

/// Shortest operator token accepted: anything shorter can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// The request's signed-in user: 401 without a live session.
pub struct SignedIn {
    /// The user the session belongs to.
    pub user_id: i64,
    /// How fresh the user's reads of their own data must be.
    pub freshness: Freshness,
    session: Session,
}

impl SignedIn {
    /// Go on only if the signed-in user is `user_id`: 403 otherwise.
    pub fn owns(&self, user_id: i64) -> Result<(), ApiError> {
        if self.user_id == user_id {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this belongs to another user".to_string(),
            ))
        }
    }

    /// Record that the user wrote, for their reads on every instance
    /// ([`crate::read_your_writes`]).
    pub async fn wrote(&self) -> Result<(), ApiError> {
        read_your_writes::note_write(&self.session).await
    }

    async fn from_session(session: Session) -> Result<Option<SignedIn>, ApiError> {
        let Some(user_id) = session.get::<i64>(USER_ID).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let last_write = session.get::<u64>(LAST_WRITE).await.map_err(unavailable)?;
        Ok(Some(SignedIn {
            user_id,
            freshness: Freshness::after_write_at(last_write),
            session,
        }))
    }
}

async fn session_of<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<Session, ApiError> {
    Session::from_request_parts(parts, state)
        .await
        .map_err(|(_, why)| ApiError::Internal(format!("sessions: {why}")))
}

impl<S: Send + Sync> FromRequestParts<S> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let session = session_of(parts, state).await?;
        SignedIn::from_session(session)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("sign in first (POST /login)".to_string()))
    }
}

/// The request's signed-in user, if any (routes public to all whose answer
/// shows more to the owner).
pub struct Visitor(pub Option<SignedIn>);

impl Visitor {
    /// Whether the visitor is the signed-in user `user_id`.
    pub fn is(&self, user_id: i64) -> bool {
        self.0.as_ref().is_some_and(|user| user.user_id == user_id)
    }

    /// The freshness of the visitor's reads of `user_id`'s data.
    pub fn freshness_for(&self, user_id: i64) -> Freshness {
        match &self.0 {
            Some(user) if user.user_id == user_id => user.freshness,
            _ => Freshness::AnyCopy,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Visitor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let session = session_of(parts, state).await?;
        Ok(Visitor(SignedIn::from_session(session).await?))
    }
}

/// The operator token `market serve` accepts, as its digest.
#[derive(Clone)]
pub struct OperatorToken(Option<[u8; 32]>);

impl std::fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "OperatorToken(set)"
        } else {
            "OperatorToken(none)"
        })
    }
}

/// Why a token was refused at start.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Shorter than [`MIN_TOKEN_LEN`].
    #[error("the operator token must be at least {MIN_TOKEN_LEN} characters long")]
    TooShort,
}

impl OperatorToken {
    /// Accept `token` (surrounding whitespace removed, as a file's trailing
    /// newline); `None`: operator routes are refused to everyone.
    pub fn new(token: Option<&str>) -> Result<Self, TokenError> {
        match token.map(str::trim) {
            None => Ok(Self(None)),
            Some(t) if t.len() < MIN_TOKEN_LEN => Err(TokenError::TooShort),
            Some(t) => Ok(Self(Some(Sha256::digest(t.as_bytes()).into()))),
        }
    }

    /// Whether any token is configured.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Whether `presented` is the token, compared in time independent of
    /// where it differs.
    fn accepts(&self, presented: &str) -> bool {
        let Some(expected) = &self.0 else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        expected
            .iter()
            .zip(presented)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

/// A request carrying the operator token (`Authorization: Bearer <token>`).
pub struct Operator;

impl<S> FromRequestParts<S> for Operator
where
    OperatorToken: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let token = OperatorToken::from_ref(state);
        if !token.is_set() {
            return Err(ApiError::Forbidden(
                "operator routes are disabled: no operator token is configured".to_string(),
            ));
        }
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            Some(presented) if token.accepts(presented) => Ok(Operator),
            Some(_) => Err(ApiError::TokenRequired(
                "invalid operator token".to_string(),
            )),
            None => Err(ApiError::TokenRequired(
                "an operator token is required (Authorization: Bearer …)".to_string(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_digest_and_short_ones_refused() {
        let token = OperatorToken::new(Some("a-long-enough-token\n")).unwrap();
        assert!(token.accepts("a-long-enough-token"));
        assert!(!token.accepts("a-long-enough-tokem") && !token.accepts(""));
        assert!(OperatorToken::new(Some("short")).is_err());
        let none = OperatorToken::new(None).unwrap();
        assert!(!none.is_set() && !none.accepts(""));
        assert!(!format!("{token:?}").contains("long"));
    }
}
