//! Whether a stored response may answer a request now, and how long it is
//! worth keeping: RFC 9111 §4.2.4 (stale responses), §4.3 (validation),
//! §5.2.1 (request directives) and RFC 5861, as plain functions.

use serde::{Deserialize, Serialize};

use crate::cache_control::{MaxStale, RequestDirectives, ResponseDirectives};
use crate::freshness::Timing;
use crate::policy::RouteRule;

/// When a stored response may be used past its freshness; fixed when it is
/// stored, from its directives and its route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StalePolicy {
    /// `no-cache`: validated before every use.
    pub validate_always: bool,
    /// Never served stale: `no-cache`, `must-revalidate`,
    /// `proxy-revalidate` or `s-maxage` (§4.2.4, §5.2.2).
    pub never_stale: bool,
    /// How long past its freshness it is served at once while revalidated
    /// in the background: its own `stale-while-revalidate`, else the route's.
    pub while_revalidate_ms: u64,
    /// How long past its freshness it is served when validation fails: its
    /// own `stale-if-error`, else the route's.
    pub if_error_ms: u64,
}

impl StalePolicy {
    pub fn of(directives: &ResponseDirectives, rule: &RouteRule) -> Self {
        let own = |seconds: Option<u64>, route: std::time::Duration| {
            seconds.map_or(route.as_millis() as u64, |s| s * 1000)
        };
        Self {
            validate_always: directives.no_cache,
            never_stale: directives.forbids_stale(),
            while_revalidate_ms: own(
                directives.stale_while_revalidate,
                rule.stale_while_revalidate,
            ),
            if_error_ms: own(directives.stale_if_error, rule.stale_if_error),
        }
    }
}

/// What to do with a stored response for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// Serve it.
    Fresh,
    /// Serve it stale; revalidate it in the background if `refresh`.
    Stale { refresh: bool },
    /// Validate it with the origin first; if that fails, serve it anyway
    /// when `on_error` (fresh, or stale within its `stale-if-error`).
    Validate { on_error: bool },
}

/// How a stored response with `timing` and `policy` may answer a request
/// with `request` directives at `now_ms`.
pub(crate) fn decide(
    timing: &Timing,
    policy: &StalePolicy,
    request: &RequestDirectives,
    now_ms: u64,
) -> Use {
    let age_ms = timing.age_ms(now_ms);
    let fresh = timing.is_fresh(now_ms);
    let stale_for_ms = timing.stale_for_ms(now_ms);
    let must_validate = policy.validate_always
        || request.no_cache
        || request.max_age.is_some_and(|max| age_ms > max * 1000)
        || request
            .min_fresh
            .is_some_and(|min| timing.fresh_for_ms(now_ms) < min * 1000);
    if !must_validate {
        if fresh {
            return Use::Fresh;
        }
        if !policy.never_stale {
            let client_accepts = match request.max_stale {
                Some(MaxStale::Any) => true,
                Some(MaxStale::Seconds(max)) => stale_for_ms <= max * 1000,
                None => false,
            };
            if client_accepts {
                return Use::Stale { refresh: false };
            }
            if stale_for_ms <= policy.while_revalidate_ms {
                return Use::Stale { refresh: true };
            }
        }
    }
    let usable_on_error = (fresh && !policy.validate_always)
        || (!policy.never_stale && stale_for_ms <= policy.if_error_ms);
    Use::Validate {
        on_error: usable_on_error,
    }
}

/// How long to keep a response received now: while fresh, then while it
/// may still be served stale, and while it can be revalidated (it has a
/// validator). Zero: not worth storing.
pub(crate) fn keep_ms(
    timing: &Timing,
    policy: &StalePolicy,
    has_validator: bool,
    keep_for_revalidation_ms: u64,
    now_ms: u64,
) -> u64 {
    if policy.validate_always && !has_validator {
        // Every use would be a full request anyway.
        return 0;
    }
    let stale_use = if policy.never_stale {
        0
    } else {
        policy.while_revalidate_ms.max(policy.if_error_ms)
    };
    let revalidation = if has_validator {
        keep_for_revalidation_ms
    } else {
        0
    };
    timing
        .lifetime_ms
        .saturating_add(stale_use.max(revalidation))
        .saturating_sub(timing.age_ms(now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000_000;

    /// Received at NOW, fresh for `lifetime` seconds, now `age` seconds old.
    fn timing(lifetime: u64) -> Timing {
        Timing {
            response_time_ms: NOW,
            corrected_initial_age_ms: 0,
            lifetime_ms: lifetime * 1000,
        }
    }

    fn policy(never_stale: bool, swr: u64, sie: u64) -> StalePolicy {
        StalePolicy {
            validate_always: false,
            never_stale,
            while_revalidate_ms: swr * 1000,
            if_error_ms: sie * 1000,
        }
    }

    fn at(seconds: u64) -> u64 {
        NOW + seconds * 1000
    }

    const PLAIN: RequestDirectives = RequestDirectives {
        no_cache: false,
        no_store: false,
        only_if_cached: false,
        max_age: None,
        min_fresh: None,
        max_stale: None,
    };

    #[test]
    fn fresh_then_stale_within_the_windows_then_validated() {
        let (t, p) = (timing(10), policy(false, 5, 60));
        assert_eq!(decide(&t, &p, &PLAIN, at(9)), Use::Fresh);
        assert_eq!(decide(&t, &p, &PLAIN, at(14)), Use::Stale { refresh: true });
        assert_eq!(
            decide(&t, &p, &PLAIN, at(20)),
            Use::Validate { on_error: true }
        );
        assert_eq!(
            decide(&t, &p, &PLAIN, at(80)),
            Use::Validate { on_error: false }
        );
    }

    #[test]
    fn never_stale_responses_are_validated_and_never_served_stale() {
        let (t, p) = (timing(10), policy(true, 5, 60));
        assert_eq!(
            decide(&t, &p, &PLAIN, at(11)),
            Use::Validate { on_error: false }
        );
        let any_stale = RequestDirectives {
            max_stale: Some(MaxStale::Any),
            ..PLAIN
        };
        assert_eq!(
            decide(&t, &p, &any_stale, at(11)),
            Use::Validate { on_error: false }
        );
    }

    #[test]
    fn request_directives_narrow_or_widen_what_is_served() {
        let (t, p) = (timing(100), policy(false, 0, 0));
        let no_cache = RequestDirectives {
            no_cache: true,
            ..PLAIN
        };
        assert_eq!(
            decide(&t, &p, &no_cache, at(1)),
            Use::Validate { on_error: true }
        );
        let max_age = RequestDirectives {
            max_age: Some(10),
            ..PLAIN
        };
        assert_eq!(decide(&t, &p, &max_age, at(5)), Use::Fresh);
        assert!(matches!(
            decide(&t, &p, &max_age, at(11)),
            Use::Validate { .. }
        ));
        let min_fresh = RequestDirectives {
            min_fresh: Some(50),
            ..PLAIN
        };
        assert_eq!(decide(&t, &p, &min_fresh, at(40)), Use::Fresh);
        assert!(matches!(
            decide(&t, &p, &min_fresh, at(60)),
            Use::Validate { .. }
        ));
        let max_stale = RequestDirectives {
            max_stale: Some(MaxStale::Seconds(30)),
            ..PLAIN
        };
        assert_eq!(
            decide(&t, &p, &max_stale, at(120)),
            Use::Stale { refresh: false }
        );
        assert!(matches!(
            decide(&t, &p, &max_stale, at(140)),
            Use::Validate { .. }
        ));
    }

    #[test]
    fn kept_while_usable_and_while_revalidatable() {
        let t = timing(10);
        assert_eq!(
            keep_ms(&t, &policy(false, 5, 60), false, 600_000, NOW),
            70_000
        );
        assert_eq!(
            keep_ms(&t, &policy(true, 5, 60), false, 600_000, NOW),
            10_000
        );
        assert_eq!(
            keep_ms(&t, &policy(true, 0, 0), true, 600_000, NOW),
            610_000
        );
        let expired = timing(0);
        assert_eq!(
            keep_ms(&expired, &policy(false, 0, 0), false, 600_000, NOW),
            0
        );
        let no_cache = StalePolicy {
            validate_always: true,
            ..policy(true, 0, 0)
        };
        assert_eq!(keep_ms(&t, &no_cache, false, 600_000, NOW), 0);
    }
}
