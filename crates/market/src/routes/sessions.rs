//! `POST /login`, `POST /logout`, `GET /api/me`, on tower-sessions
//! ([`crate::patterns::sessions`]). Login and logout need Redis: the store's
//! connection is checked first, so an outage answers a clear 503 rather than
//! a half-made change.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tower_sessions::Session;

use crate::app::Shared;
use crate::auth::SignedIn;
use crate::db::queries;
use crate::error::{ApiError, JsonBody};
use crate::model::Credentials;
use crate::patterns::cache_aside;
use crate::patterns::sessions::{ready, unavailable, USER_ID};
use crate::routes::private;

/// Who is logged in.
#[derive(Debug, Serialize)]
pub struct Me {
    user_id: i64,
    username: String,
    display_name: String,
}

/// `POST /login` `{"username", "password"}`: a new session (a new id, even
/// for a client that had one) and its cookie.
pub async fn login(
    State(state): State<Shared>,
    session: Session,
    JsonBody(creds): JsonBody<Credentials>,
) -> Result<Response, ApiError> {
    if creds.username.len() > 100 || creds.password.len() > 200 {
        return Err(ApiError::BadRequest("username or password too long".into()));
    }
    let user_id = queries::authenticate(&state.db, &creds.username, &creds.password)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("wrong username or password".into()))?;
    ready(&state.session_redis).await?;
    session.cycle_id().await.map_err(unavailable)?;
    session
        .insert(USER_ID, user_id)
        .await
        .map_err(unavailable)?;
    session.save().await.map_err(unavailable)?;
    let answer = Json(serde_json::json!({ "user_id": user_id, "username": creds.username }));
    Ok(private(answer))
}

/// `POST /logout`: deletes the session; the layer clears the cookie.
pub async fn logout(State(state): State<Shared>, session: Session) -> Result<Response, ApiError> {
    ready(&state.session_redis).await?;
    session.flush().await.map_err(unavailable)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/me`: the signed-in user, 401 without a live session.
pub async fn me(user: SignedIn, State(state): State<Shared>) -> Result<Response, ApiError> {
    let profile = cache_aside::profile(&state.caching, &state.db, user.user_id, user.freshness)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("sign in first (POST /login)".into()))?;
    Ok(private(Json(Me {
        user_id: user.user_id,
        username: profile.username,
        display_name: profile.display_name,
    })))
}
