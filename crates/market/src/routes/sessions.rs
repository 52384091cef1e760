//! `POST /login`, `POST /logout`, `GET /api/me`, on tower-sessions
//! (see [`crate::seams::sessions`]). Store calls are made here, not left to
//! the sessions layer, so a Redis outage answers a clear 503.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tower_sessions::Session;

use crate::app::Shared;
use crate::db::queries;
use crate::error::{ApiError, JsonBody};
use crate::model::Credentials;
use crate::routes::users::cached_profile;
use crate::seams::sessions::{ready, unavailable, USER_ID};

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
    Ok(Json(serde_json::json!({ "user_id": user_id, "username": creds.username })).into_response())
}

/// `POST /logout`: deletes the session; the layer clears the cookie.
pub async fn logout(State(state): State<Shared>, session: Session) -> Result<Response, ApiError> {
    ready(&state.session_redis).await?;
    session.flush().await.map_err(unavailable)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/me`: the logged-in user, 401 without a live session.
pub async fn me(State(state): State<Shared>, session: Session) -> Result<Json<Me>, ApiError> {
    let not_logged_in = || ApiError::Unauthorized("not logged in".into());
    let user_id: i64 = session
        .get(USER_ID)
        .await
        .map_err(unavailable)?
        .ok_or_else(not_logged_in)?;
    let profile = cached_profile(&state, user_id)
        .await?
        .ok_or_else(not_logged_in)?;
    Ok(Json(Me {
        user_id,
        username: profile.username,
        display_name: profile.display_name,
    }))
}
