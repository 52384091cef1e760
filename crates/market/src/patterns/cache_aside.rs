//! Cache-aside: a user's watchlist (300 s) and profile (1 h).
//!
//! A read asks the cache; on a miss the loader reads PostgreSQL and the
//! cache keeps the answer (an unknown user is kept as absent for the
//! policy's `negative_ttl`). A write goes to PostgreSQL, then removes the
//! cached copy from Redis and, through the backplane, from every instance's
//! L1; the next read loads the new row. A profile update removes every
//! `user:{id}:*` entry (profile, watchlist, portfolio) at once, through
//! their common tag.

use crate::caching::Caching;
use crate::db::{queries, writes, Db};
use crate::error::ApiError;
use crate::keys;
use crate::model::{NewWatchlist, Profile, ProfileUpdate, Watchlist};
use crate::policy::Policy;
use crate::read_your_writes::Freshness;

/// A user's watchlist; `None` for an unknown user.
pub async fn watchlist(
    caching: &Caching,
    db: &Db,
    user_id: i64,
    freshness: Freshness,
) -> Result<Option<Watchlist>, ApiError> {
    let db = db.clone();
    let opts = caching.options_tagged(Policy::Watchlist, keys::user_tag(user_id))?;
    caching
        .read_optional(
            Policy::Watchlist,
            &keys::watchlist(user_id),
            Some(freshness.apply(opts)),
            move || async move { queries::watchlist(&db, user_id).await },
        )
        .await
}

/// Replace a user's watchlist, then drop the cached one everywhere.
pub async fn put_watchlist(
    caching: &Caching,
    db: &Db,
    user_id: i64,
    new: &NewWatchlist,
) -> Result<Watchlist, ApiError> {
    let list = writes::put_watchlist(db, user_id, new).await?;
    caching.invalidate(&keys::watchlist(user_id)).await;
    Ok(list)
}

/// A user's profile; `None` for an unknown user.
pub async fn profile(
    caching: &Caching,
    db: &Db,
    user_id: i64,
    freshness: Freshness,
) -> Result<Option<Profile>, ApiError> {
    let db = db.clone();
    let opts = caching.options_tagged(Policy::Profile, keys::user_tag(user_id))?;
    caching
        .read_optional(
            Policy::Profile,
            &keys::profile(user_id),
            Some(freshness.apply(opts)),
            move || async move { queries::profile(&db, user_id).await },
        )
        .await
}

/// Change a profile, then drop every `user:{id}:*` entry everywhere (one
/// tag invalidation: O(1), whatever the number of entries).
pub async fn update_profile(
    caching: &Caching,
    db: &Db,
    user_id: i64,
    update: &ProfileUpdate,
) -> Result<Profile, ApiError> {
    let profile = writes::update_profile(db, user_id, update).await?;
    caching.invalidate_tag(&keys::user_tag(user_id)).await;
    Ok(profile)
}
