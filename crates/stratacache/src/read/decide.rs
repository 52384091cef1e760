//! The decisions of the read path, as plain functions of what was found and
//! when: what to do with an L1 entry, with an L2 entry, and the metadata of
//! an entry kept by fail-safe or renewed by "not modified". No I/O here; the
//! read path (`caller`, `flight`, `fill`) acts on the answers.

use std::time::Duration;

use crate::codec::envelope::EntryMeta;
use crate::freshness::{classify, Usability};
use crate::options::EntryOptions;

/// What to do with the L1 entry found for a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnL1 {
    /// Answer with it (and maybe refresh it early in the background).
    Serve { refresh_early: bool },
    /// Answer with it as stale: a fail-safe value, the source not retried yet.
    ServeThrottled,
    /// Load, keeping it as the stale value: offered at once to callers that
    /// accept stale data (`offer`), and the fallback if the load fails.
    /// Entries L1 no longer trusts (the backplane is down) are fallbacks only.
    Fallback { offer: bool },
    /// Load; it is of no use.
    Miss,
}

/// A value kept by fail-safe is served only to calls with fail-safe on
/// (`opts.fail_safe`); for the others it is a stale value, and they load.
pub(crate) fn on_l1(
    meta: &EntryMeta,
    present: bool,
    trusted: bool,
    accept_absent: bool,
    opts: &EntryOptions,
    now_ms: u64,
) -> OnL1 {
    let acceptable = present || accept_absent;
    match classify(meta, now_ms, opts.eager_refresh) {
        Usability::Fresh { refresh_early } if acceptable && trusted => {
            OnL1::Serve { refresh_early }
        }
        Usability::Throttled if acceptable && trusted && opts.fail_safe => OnL1::ServeThrottled,
        Usability::Fresh { .. } | Usability::Throttled | Usability::Stale if present => {
            OnL1::Fallback {
                offer: trusted && !meta.is_fresh(now_ms),
            }
        }
        _ => OnL1::Miss,
    }
}

/// What a flight does with an entry found in L2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnL2 {
    /// Answer with it.
    Serve,
    /// Answer with it as stale: another instance's fail-safe.
    ServeThrottled,
    /// A stale entry newer than the one at hand: keep it as the stale value.
    KeepStale,
    /// Go on loading.
    Load,
}

/// `refresh`: the flight is an early refresh of a fresh entry created at
/// `known_created_us` (a refresh that finds that same entry goes on).
/// `fail_safe`: the load's options accept a value kept by fail-safe (else it
/// loads, and does not offer that value as stale either).
pub(crate) fn on_l2(
    meta: &EntryMeta,
    present: bool,
    accept_absent: bool,
    refresh: bool,
    known_created_us: Option<u64>,
    fail_safe: bool,
    now_ms: u64,
) -> OnL2 {
    let acceptable = present || accept_absent;
    let newer = known_created_us.is_none_or(|known| meta.created_at_us > known);
    match classify(meta, now_ms, None) {
        Usability::Fresh { .. } if refresh && !newer => OnL2::Load,
        Usability::Fresh { .. } if acceptable => OnL2::Serve,
        Usability::Throttled if acceptable && fail_safe => OnL2::ServeThrottled,
        Usability::Stale if present && newer => OnL2::KeepStale,
        _ => OnL2::Load,
    }
}

/// How long a caller holding a stale value waits for a fresh one before
/// leaving with the stale one (`None`: it does not accept stale data — no
/// stale window, or fail-safe off for the call).
pub(crate) fn patience(opts: &EntryOptions) -> Option<Duration> {
    (!opts.stale_for.is_zero() && opts.fail_safe)
        .then(|| opts.soft_timeout.unwrap_or(Duration::ZERO))
}

/// The metadata of a stale value kept after a failed load: served as stale,
/// the source not retried before `fail_safe_throttle` (nor past the end of
/// the stale window).
pub(crate) fn fail_safe_meta(old: &EntryMeta, throttle: Duration, now_ms: u64) -> EntryMeta {
    let retry_at = now_ms
        .saturating_add(throttle.as_millis() as u64)
        .min(old.stale_until_ms);
    EntryMeta {
        fresh_until_ms: retry_at.max(old.created_at_us / 1_000),
        fail_safe: true,
        ..old.clone()
    }
}

/// The metadata of a value its source confirmed unchanged: created at
/// `stamp`, with a new lifetime.
pub(crate) fn renewed_meta(
    old: &EntryMeta,
    ttl: Duration,
    stale_for: Duration,
    etag: Option<String>,
    (load_micros, stamp, now_ms): (u32, u64, u64),
) -> EntryMeta {
    let fresh_until_ms = now_ms.saturating_add(ttl.as_millis() as u64);
    EntryMeta {
        created_at_us: stamp,
        fresh_until_ms,
        stale_until_ms: fresh_until_ms.saturating_add(stale_for.as_millis() as u64),
        load_micros,
        tags: old.tags.clone(),
        etag: etag.or_else(|| old.etag.clone()),
        fail_safe: false,
        schema: old.schema,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    /// Options with fail-safe on (the default).
    fn on() -> EntryOptions {
        EntryOptions::new()
    }

    fn meta(fresh_until_ms: u64, stale_until_ms: u64, fail_safe: bool) -> EntryMeta {
        EntryMeta {
            created_at_us: (NOW - 10) * 1_000,
            fresh_until_ms,
            stale_until_ms,
            fail_safe,
            ..EntryMeta::default()
        }
    }

    #[test]
    fn a_trusted_fresh_l1_entry_is_served() {
        let fresh = meta(NOW + 5, NOW + 50, false);
        assert_eq!(
            on_l1(&fresh, true, true, false, &on(), NOW),
            OnL1::Serve {
                refresh_early: false
            }
        );
        assert_eq!(
            on_l1(&fresh, false, true, false, &on(), NOW),
            OnL1::Miss,
            "an absent marker for a caller that needs a value"
        );
    }

    #[test]
    fn an_untrusted_l1_entry_is_a_fallback_only() {
        let fresh = meta(NOW + 5, NOW + 50, false);
        assert_eq!(
            on_l1(&fresh, true, false, false, &on(), NOW),
            OnL1::Fallback { offer: false }
        );
        let stale = meta(NOW - 5, NOW + 50, false);
        assert_eq!(
            on_l1(&stale, true, false, false, &on(), NOW),
            OnL1::Fallback { offer: false }
        );
        assert_eq!(
            on_l1(&stale, true, true, false, &on(), NOW),
            OnL1::Fallback { offer: true },
            "stale and trusted: stale-while-revalidate may serve it"
        );
        assert_eq!(
            on_l1(
                &meta(NOW - 5, NOW - 1, false),
                true,
                true,
                false,
                &on(),
                NOW
            ),
            OnL1::Miss
        );
    }

    #[test]
    fn a_fail_safe_entry_is_served_stale_until_its_retry_time() {
        let throttled = meta(NOW + 5, NOW + 50, true);
        assert_eq!(
            on_l1(&throttled, true, true, false, &on(), NOW),
            OnL1::ServeThrottled
        );
        assert_eq!(
            on_l2(&throttled, true, false, false, None, true, NOW),
            OnL2::ServeThrottled
        );
    }

    #[test]
    fn with_fail_safe_off_a_fail_safe_entry_is_only_stale() {
        let throttled = meta(NOW + 5, NOW + 50, true);
        let off = EntryOptions::new().fail_safe(false);
        assert_eq!(
            on_l1(&throttled, true, true, false, &off, NOW),
            OnL1::Fallback { offer: false },
            "kept as the load's context, never offered"
        );
        assert_eq!(
            on_l2(&throttled, true, false, false, None, false, NOW),
            OnL2::Load
        );
        let stale_window = EntryOptions::new().stale_for(Duration::from_secs(60));
        assert_eq!(patience(&stale_window), Some(Duration::ZERO));
        assert_eq!(patience(&stale_window.fail_safe(false)), None);
    }

    #[test]
    fn an_early_refresh_goes_on_past_its_own_entry() {
        let entry = meta(NOW + 5, NOW + 50, false);
        let own = Some(entry.created_at_us);
        assert_eq!(on_l2(&entry, true, false, true, own, true, NOW), OnL2::Load);
        assert_eq!(
            on_l2(
                &entry,
                true,
                false,
                true,
                Some(entry.created_at_us - 1),
                true,
                NOW
            ),
            OnL2::Serve,
            "another instance refreshed it already"
        );
    }

    #[test]
    fn a_newer_stale_l2_entry_replaces_the_one_at_hand() {
        let stale = meta(NOW - 5, NOW + 50, false);
        assert_eq!(
            on_l2(&stale, true, false, false, None, true, NOW),
            OnL2::KeepStale
        );
        assert_eq!(
            on_l2(
                &stale,
                true,
                false,
                false,
                Some(stale.created_at_us),
                true,
                NOW
            ),
            OnL2::Load
        );
    }

    #[test]
    fn fail_safe_retries_after_the_throttle_within_the_stale_window() {
        let old = meta(NOW - 5, NOW + 50, false);
        let kept = fail_safe_meta(&old, Duration::from_millis(20), NOW);
        assert_eq!(kept.fresh_until_ms, NOW + 20);
        assert!(kept.fail_safe);
        let kept = fail_safe_meta(&old, Duration::from_secs(60), NOW);
        assert_eq!(kept.fresh_until_ms, NOW + 50, "never past the stale window");
    }
}
