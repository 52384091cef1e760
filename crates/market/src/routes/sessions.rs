//! `POST /login`, `POST /logout`, `GET /api/me`, on the session seam.

use axum::extract::State;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::app::Shared;
use crate::db::queries;
use crate::error::{ApiError, JsonBody};
use crate::model::Credentials;
use crate::routes::users::cached_profile;
use crate::seams::sessions::COOKIE as SESSION_COOKIE;

/// Who is logged in.
#[derive(Debug, Serialize)]
pub struct Me {
    user_id: i64,
    username: String,
    display_name: String,
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == SESSION_COOKIE).then(|| value.to_string())
        })
}

fn cookie(value: &str, max_age: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}"
    ))
    .expect("a cookie of hex digits is a valid header")
}

/// `POST /login` `{"username", "password"}`: sets the session cookie.
pub async fn login(
    State(state): State<Shared>,
    JsonBody(creds): JsonBody<Credentials>,
) -> Result<Response, ApiError> {
    if creds.username.len() > 100 || creds.password.len() > 200 {
        return Err(ApiError::BadRequest("username or password too long".into()));
    }
    let user_id = queries::authenticate(&state.db, &creds.username, &creds.password)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("wrong username or password".into()))?;
    let id = state.sessions.create(user_id).await?;
    let body = Json(serde_json::json!({ "user_id": user_id, "username": creds.username }));
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(SET_COOKIE, cookie(&id, state.sessions.ttl().as_secs()));
    Ok(response)
}

/// `POST /logout`: ends the session and clears the cookie.
pub async fn logout(State(state): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(id) = session_id(&headers) {
        state.sessions.end(&id).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(SET_COOKIE, cookie("", 0));
    Ok(response)
}

/// `GET /api/me`: the logged-in user, 401 without a live session.
pub async fn me(State(state): State<Shared>, headers: HeaderMap) -> Result<Json<Me>, ApiError> {
    let not_logged_in = || ApiError::Unauthorized("not logged in".into());
    let id = session_id(&headers).ok_or_else(not_logged_in)?;
    let user_id = state.sessions.user(&id).await?.ok_or_else(not_logged_in)?;
    let profile = cached_profile(&state, user_id)
        .await?
        .ok_or_else(not_logged_in)?;
    Ok(Json(Me {
        user_id,
        username: profile.username,
        display_name: profile.display_name,
    }))
}
