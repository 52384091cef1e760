//! Deciding what an entry is good for right now: serve it, serve it and
//! refresh it early, serve it only as stale, or not at all.
//!
//! ```text
//! created_at ──── fresh ────► fresh_until ──── stale window ────► stale_until (Redis TTL ends)
//!              └ eager refresh may start here
//! ```

use crate::codec::envelope::EntryMeta;
use crate::error::{Error, Result};

/// When to refresh a fresh entry before it expires.
///
/// ```
/// use stratacache::EagerRefresh;
///
/// let at_80_percent = EagerRefresh::AfterFraction(0.8);
/// let probabilistic = EagerRefresh::XFetch { beta: 1.0 };
/// assert_eq!(EagerRefresh::parse("0.8").unwrap(), at_80_percent);
/// assert_eq!(EagerRefresh::parse("xfetch:1").unwrap(), probabilistic);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EagerRefresh {
    /// Once this fraction of the TTL has passed (`0.0 < f < 1.0`), the next
    /// read triggers a background refresh.
    AfterFraction(f64),
    /// Probabilistic early expiration (Vattani et al., "Optimal Probabilistic
    /// Cache Stampede Prevention"): a read refreshes when
    /// `now − δ·β·ln(rand) ≥ fresh_until`, δ being the last load's duration.
    /// Slow loads start earlier; β > 1 favours earlier refreshes.
    XFetch {
        /// β, usually 1.0.
        beta: f64,
    },
}

impl EagerRefresh {
    /// Parse `"0.8"` (a fraction of the TTL), `"xfetch"` (β = 1) or `"xfetch:2.0"`.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim().to_ascii_lowercase();
        let parsed = if let Some(beta) = text.strip_prefix("xfetch:") {
            EagerRefresh::XFetch {
                beta: beta
                    .parse()
                    .map_err(|_| Error::config(format!("bad XFetch beta {beta:?}")))?,
            }
        } else if text == "xfetch" {
            EagerRefresh::XFetch { beta: 1.0 }
        } else {
            EagerRefresh::AfterFraction(text.parse().map_err(|_| {
                Error::config(format!(
                    "eager_refresh {text:?}: expected a fraction or xfetch[:beta]"
                ))
            })?)
        };
        parsed.validate()?;
        Ok(parsed)
    }

    pub(crate) fn validate(self) -> Result<()> {
        match self {
            EagerRefresh::AfterFraction(f) if !(f > 0.0 && f < 1.0) => Err(Error::config(format!(
                "eager_refresh fraction must be in (0, 1), got {f}"
            ))),
            EagerRefresh::XFetch { beta } if !(beta > 0.0 && beta.is_finite()) => Err(
                Error::config(format!("XFetch beta must be positive, got {beta}")),
            ),
            _ => Ok(()),
        }
    }

    fn due(self, meta: &EntryMeta, now_ms: u64) -> bool {
        match self {
            EagerRefresh::AfterFraction(fraction) => {
                let created_ms = meta.created_at_us / 1_000;
                let lifetime = meta.fresh_until_ms.saturating_sub(created_ms) as f64;
                now_ms as f64 >= created_ms as f64 + lifetime * fraction
            }
            EagerRefresh::XFetch { beta } => {
                let delta_ms = f64::from(meta.load_micros) / 1000.0;
                // 1 − rand is in (0, 1], so the logarithm is finite.
                let draw: f64 = 1.0 - rand::random::<f64>();
                now_ms as f64 - delta_ms * beta * draw.ln() >= meta.fresh_until_ms as f64
            }
        }
    }
}

/// What an entry can be used for at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Usability {
    /// Serve it; `refresh_early` asks for a background refresh.
    Fresh { refresh_early: bool },
    /// A stale value kept after a failed refresh, inside its throttle window:
    /// serve it as stale without calling the source again yet.
    Throttled,
    /// Past fresh, inside the stale window: may be served as stale while a refresh runs.
    Stale,
    /// Past the stale window: unusable.
    Expired,
}

pub(crate) fn classify(meta: &EntryMeta, now_ms: u64, eager: Option<EagerRefresh>) -> Usability {
    if now_ms >= meta.stale_until_ms {
        return Usability::Expired;
    }
    if meta.is_fresh(now_ms) {
        if meta.fail_safe {
            return Usability::Throttled;
        }
        let refresh_early = eager.is_some_and(|e| e.due(meta, now_ms));
        return Usability::Fresh { refresh_early };
    }
    Usability::Stale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(created: u64, fresh: u64, stale: u64, load_micros: u32) -> EntryMeta {
        EntryMeta {
            created_at_us: created * 1_000,
            fresh_until_ms: fresh,
            stale_until_ms: stale,
            load_micros,
            ..EntryMeta::default()
        }
    }

    #[test]
    fn entries_move_from_fresh_to_stale_to_expired() {
        let m = meta(0, 1_000, 2_000, 0);
        assert_eq!(
            classify(&m, 500, None),
            Usability::Fresh {
                refresh_early: false
            }
        );
        assert_eq!(classify(&m, 1_000, None), Usability::Stale);
        assert_eq!(classify(&m, 2_000, None), Usability::Expired);
        let throttled = EntryMeta {
            fail_safe: true,
            ..m
        };
        assert_eq!(classify(&throttled, 500, None), Usability::Throttled);
        assert_eq!(classify(&throttled, 1_500, None), Usability::Stale);
    }

    #[test]
    fn refresh_ahead_triggers_past_the_threshold() {
        let m = meta(0, 1_000, 1_000, 0);
        let eager = Some(EagerRefresh::AfterFraction(0.8));
        assert_eq!(
            classify(&m, 799, eager),
            Usability::Fresh {
                refresh_early: false
            }
        );
        assert_eq!(
            classify(&m, 800, eager),
            Usability::Fresh {
                refresh_early: true
            }
        );
    }

    #[test]
    fn xfetch_refreshes_more_often_close_to_expiry_and_for_slow_loads() {
        let eager = Some(EagerRefresh::XFetch { beta: 1.0 });
        let share = |now: u64, load_ms: u32| {
            let m = meta(0, 10_000, 10_000, load_ms * 1000);
            (0..10_000)
                .filter(|_| {
                    classify(&m, now, eager)
                        == Usability::Fresh {
                            refresh_early: true,
                        }
                })
                .count() as f64
                / 10_000.0
        };
        // P(refresh) = exp(−(expiry − now)/(δβ)).
        let far = share(5_000, 100); // e^-50 ≈ 0
        let near = share(9_900, 100); // e^-1 ≈ 0.37
        let near_fast = share(9_900, 10); // e^-10 ≈ 0.00005
        assert!(far < 0.001, "{far}");
        assert!((0.32..0.42).contains(&near), "{near}");
        assert!(near_fast < 0.002, "{near_fast}");
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(EagerRefresh::parse("1.5").is_err());
        assert!(EagerRefresh::parse("xfetch:-1").is_err());
        assert!(EagerRefresh::parse("soon").is_err());
    }
}
