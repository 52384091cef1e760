//! Read-your-writes across instances, for the user who wrote.
//!
//! A write invalidates the old copies in Redis at once, and in every other
//! instance's L1 when the backplane's message arrives there — typically a
//! few milliseconds, up to tens under load. A user who writes on one
//! instance and reads on another within that time would see the old value.
//!
//! So a user-scoped write records its time in the user's session (which
//! lives in Redis, so every instance reads it), and for [`WINDOW`] after it
//! that user's reads of their own data skip L1 copies and read Redis, which
//! the write already changed: [`Freshness::SkipL1`]. Other readers keep the
//! backplane's bound; the writer's reads cost a Redis round trip for a few
//! seconds after each of their writes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stratacache::EntryOptions;
use tower_sessions::Session;

use crate::error::ApiError;

/// How long after a write its user's reads skip L1: far above the
/// backplane's worst delay seen under load (tens of milliseconds), so a
/// loaded machine does not open a gap.
pub const WINDOW: Duration = Duration::from_secs(5);

/// The session's key holding the time of the user's last write (Unix ms).
pub const LAST_WRITE: &str = "last_write_ms";

/// Which cached copies a read may be answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Any copy the cache holds (the policy's L1 TTL bounds its age).
    AnyCopy,
    /// Not this instance's L1: Redis or the source (the reader wrote lately).
    SkipL1,
}

impl Freshness {
    /// `options` for a read of this freshness.
    pub fn apply(self, options: EntryOptions) -> EntryOptions {
        match self {
            Freshness::AnyCopy => options,
            Freshness::SkipL1 => options.skip_l1(true),
        }
    }

    /// The freshness a user's reads need, from the time of their last write.
    pub fn after_write_at(last_write_ms: Option<u64>) -> Freshness {
        let recent =
            last_write_ms.is_some_and(|at| now_ms().saturating_sub(at) < WINDOW.as_millis() as u64);
        if recent {
            Freshness::SkipL1
        } else {
            Freshness::AnyCopy
        }
    }
}

/// Record in `session` that its user wrote just now.
pub async fn note_write(session: &Session) -> Result<(), ApiError> {
    session
        .insert(LAST_WRITE, now_ms())
        .await
        .map_err(|err| ApiError::unavailable("session store unavailable", err))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_skip_l1_only_within_the_window_after_a_write() {
        assert_eq!(Freshness::after_write_at(None), Freshness::AnyCopy);
        assert_eq!(Freshness::after_write_at(Some(now_ms())), Freshness::SkipL1);
        let long_ago = now_ms() - WINDOW.as_millis() as u64 - 1;
        assert_eq!(
            Freshness::after_write_at(Some(long_ago)),
            Freshness::AnyCopy
        );
    }
}
