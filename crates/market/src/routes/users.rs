//! `GET`/`PUT /api/watchlists/{user_id}` and `GET`/`PUT
//! /api/users/{id}/profile`, cache-aside ([`crate::patterns::cache_aside`]).
//!
//! A watchlist is its user's alone; a profile's public part (username,
//! display name) is anyone's, its private fields (email, country, risk
//! level) its user's. Writes need the user's session; answers meant for one
//! user say `Cache-Control: private`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::app::Shared;
use crate::auth::{SignedIn, Visitor};
use crate::error::{parse_id, ApiError, JsonBody, PathParams as Path};
use crate::model::{NewWatchlist, ProfileUpdate};
use crate::patterns::cache_aside;
use crate::routes::private;

fn unknown(user_id: i64) -> ApiError {
    ApiError::NotFound(format!("unknown user {user_id}"))
}

/// `GET /api/watchlists/{user_id}`: the user's own.
pub async fn watchlist(
    user: SignedIn,
    State(state): State<Shared>,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    let user_id = parse_id(&user_id, "user id")?;
    user.owns(user_id)?;
    let list = cache_aside::watchlist(&state.caching, &state.db, user_id, user.freshness)
        .await?
        .ok_or_else(|| unknown(user_id))?;
    Ok(private(Json(list)))
}

/// `PUT /api/watchlists/{user_id}` `{"symbols": ["ABCD", ...]}`: the user's own.
pub async fn put_watchlist(
    user: SignedIn,
    State(state): State<Shared>,
    Path(user_id): Path<String>,
    JsonBody(new): JsonBody<NewWatchlist>,
) -> Result<Response, ApiError> {
    let user_id = parse_id(&user_id, "user id")?;
    user.owns(user_id)?;
    let list = cache_aside::put_watchlist(&state.caching, &state.db, user_id, &new).await?;
    user.wrote().await?;
    Ok(private(Json(list)))
}

/// `GET /api/users/{id}/profile`: all of it for its user, the public part
/// for anyone else.
pub async fn profile(
    visitor: Visitor,
    State(state): State<Shared>,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    let user_id = parse_id(&user_id, "user id")?;
    let freshness = visitor.freshness_for(user_id);
    let profile = cache_aside::profile(&state.caching, &state.db, user_id, freshness)
        .await?
        .ok_or_else(|| unknown(user_id))?;
    Ok(if visitor.is(user_id) {
        private(Json(profile))
    } else {
        Json(profile.public()).into_response()
    })
}

/// `PUT /api/users/{id}/profile` with the fields to change: the user's own.
pub async fn put_profile(
    user: SignedIn,
    State(state): State<Shared>,
    Path(user_id): Path<String>,
    JsonBody(update): JsonBody<ProfileUpdate>,
) -> Result<Response, ApiError> {
    let user_id = parse_id(&user_id, "user id")?;
    user.owns(user_id)?;
    let profile = cache_aside::update_profile(&state.caching, &state.db, user_id, &update).await?;
    user.wrote().await?;
    Ok(private(Json(profile)))
}
