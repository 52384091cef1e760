//! `GET`/`PUT /api/watchlists/{user_id}` (cache-aside 300 s, invalidated on
//! update) and `GET`/`PUT /api/users/{id}/profile` (cache-aside 1 h; an
//! update invalidates every `user:{id}:*` key, through the tag `user:{id}`).

use axum::extract::State;

use crate::error::PathParams as Path;
use axum::Json;

use crate::app::Shared;
use crate::db::{queries, writes};
use crate::error::{parse_id, ApiError, JsonBody};
use crate::model::{NewWatchlist, Profile, ProfileUpdate, Watchlist};

fn unknown(user_id: i64) -> ApiError {
    ApiError::NotFound(format!("unknown user {user_id}"))
}

/// The tag on every `user:{id}:*` entry (profile, watchlist, portfolio):
/// a profile update drops them all with one O(1) tag invalidation rather
/// than a SCAN of Redis for the prefix.
pub fn user_tag(user_id: i64) -> String {
    format!("user:{user_id}")
}

/// The cache key of a user's watchlist.
pub fn watchlist_key(user_id: i64) -> String {
    format!("user:{user_id}:watchlist")
}

/// The cache key of a user's profile.
pub fn profile_key(user_id: i64) -> String {
    format!("user:{user_id}:profile")
}

/// `GET /api/watchlists/{user_id}`.
pub async fn watchlist(
    State(state): State<Shared>,
    Path(user_id): Path<String>,
) -> Result<Json<Watchlist>, ApiError> {
    let user_id = parse_id(&user_id, "user id")?;
    let db = state.db.clone();
    let opts = state
        .caching
        .options_tagged("watchlist", user_tag(user_id))?;
    state
        .caching
        .read_optional(
            "watchlist",
            &watchlist_key(user_id),
            Some(opts),
            move || async move { queries::watchlist(&db, user_id).await },
        )
        .await?
        .map(Json)
        .ok_or_else(|| unknown(user_id))
}

/// `PUT /api/watchlists/{user_id}` `{"symbols": ["ABCD", ...]}`.
pub async fn put_watchlist(
    State(state): State<Shared>,
    Path(user_id): Path<String>,
    JsonBody(new): JsonBody<NewWatchlist>,
) -> Result<Json<Watchlist>, ApiError> {
    let user_id = parse_id(&user_id, "user id")?;
    let list = writes::put_watchlist(&state.db, user_id, &new).await?;
    state.caching.invalidate(&watchlist_key(user_id)).await;
    Ok(Json(list))
}

/// A user's profile through the cache (also used by `GET /api/me`).
pub async fn cached_profile(state: &Shared, user_id: i64) -> Result<Option<Profile>, ApiError> {
    let db = state.db.clone();
    let opts = state.caching.options_tagged("profile", user_tag(user_id))?;
    state
        .caching
        .read_optional(
            "profile",
            &profile_key(user_id),
            Some(opts),
            move || async move { queries::profile(&db, user_id).await },
        )
        .await
}

/// `GET /api/users/{id}/profile`.
pub async fn profile(
    State(state): State<Shared>,
    Path(user_id): Path<String>,
) -> Result<Json<Profile>, ApiError> {
    let user_id = parse_id(&user_id, "user id")?;
    cached_profile(&state, user_id)
        .await?
        .map(Json)
        .ok_or_else(|| unknown(user_id))
}

/// `PUT /api/users/{id}/profile` with the fields to change.
pub async fn put_profile(
    State(state): State<Shared>,
    Path(user_id): Path<String>,
    JsonBody(update): JsonBody<ProfileUpdate>,
) -> Result<Json<Profile>, ApiError> {
    let user_id = parse_id(&user_id, "user id")?;
    let profile = writes::update_profile(&state.db, user_id, &update).await?;
    state.caching.invalidate_tag(&user_tag(user_id)).await;
    Ok(Json(profile))
}
