//! Named policies: one per kind of data (`"stock_price"`, `"portfolio"` …),
//! each holding entry options, loaded from code, a TOML file or the
//! environment.
//!
//! A policy has no strategy. The caching pattern is the call a service makes
//! — `get_or_load` (cache-aside), a `Resource` (read-through),
//! `write_through`, a `WriteBehind` queue, `eager_refresh` in the options
//! (refresh-ahead) — and a label the cache never read would only suggest
//! otherwise. Policy files that still say `strategy = "…"` are refused with
//! an error that says so.
//!
//! ```
//! use stratacache::Policies;
//!
//! let policies = Policies::from_toml_str(r#"
//!     [policies.stock_price]
//!     ttl = "2s"
//!
//!     [policies.portfolio]
//!     ttl = "60s"
//!     jitter = 0.1
//!     stale_for = "5m"
//! "#).unwrap();
//! let price = policies.get("stock_price").unwrap();
//! assert_eq!(price.options().configured_ttl().as_secs(), 2);
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::freshness::EagerRefresh;
use crate::options::{Consistency, EntryOptions};

/// Why a policy's `strategy` is refused: it was read, and changed nothing.
const STRATEGY_REMOVED: &str = "`strategy` is no longer a policy field: it changed nothing at \
     run time (the call you make is the pattern: get_or_load, a Resource, write_through, a \
     WriteBehind queue, eager_refresh for refresh-ahead); remove it";

/// A named set of entry options.
///
/// ```
/// use std::time::Duration;
/// use stratacache::{EntryOptions, Policy};
///
/// let price = Policy::new("stock_price", EntryOptions::new().ttl(Duration::from_secs(2)));
/// assert_eq!(price.name(), "stock_price");
/// assert_eq!(price.options().policy_name(), Some("stock_price")); // its metrics label
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    name: Arc<str>,
    options: EntryOptions,
}

impl Policy {
    /// A policy named `name`; its options carry the name as their metrics label.
    pub fn new(name: &str, mut options: EntryOptions) -> Self {
        let name: Arc<str> = Arc::from(name);
        options.policy = Some(name.clone());
        Self { name, options }
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy's entry options (labelled with its name).
    pub fn options(&self) -> &EntryOptions {
        &self.options
    }
}

/// A set of named policies.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    by_name: BTreeMap<String, Policy>,
}

/// One policy as written in a file: every field optional, laid over the defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySpec {
    /// Refused (see [`STRATEGY_REMOVED`]); read only to say so.
    strategy: Option<toml::Value>,
    #[serde(default, with = "humantime_serde")]
    ttl: Option<Duration>,
    jitter: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    l1_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    negative_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    stale_for: Option<Duration>,
    tags: Option<Vec<String>>,
    skip_l1: Option<bool>,
    skip_l2: Option<bool>,
    eager_refresh: Option<String>,
    #[serde(default, with = "humantime_serde")]
    soft_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    hard_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    lock_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    fail_safe_throttle: Option<Duration>,
    fail_safe: Option<bool>,
    distributed_lease: Option<bool>,
    fill_in_background: Option<bool>,
    consistency: Option<String>,
    schema_version: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    defaults: PolicySpec,
    #[serde(default)]
    policies: BTreeMap<String, PolicySpec>,
}

impl PolicySpec {
    fn apply(&self, base: &EntryOptions) -> Result<EntryOptions> {
        if self.strategy.is_some() {
            return Err(Error::config(STRATEGY_REMOVED));
        }
        let mut opts = base.clone();
        if let Some(v) = &self.eager_refresh {
            opts.eager_refresh = Some(EagerRefresh::parse(v)?);
        }
        if let Some(v) = self.soft_timeout {
            opts.soft_timeout = Some(v);
        }
        if let Some(v) = self.hard_timeout {
            opts.hard_timeout = Some(v);
        }
        if let Some(v) = self.lock_timeout {
            opts.lock_timeout = v;
        }
        if let Some(v) = self.fail_safe_throttle {
            opts.fail_safe_throttle = v;
        }
        if let Some(v) = self.fail_safe {
            opts.fail_safe = v;
        }
        if let Some(v) = self.distributed_lease {
            opts.distributed_lease = v;
        }
        if let Some(v) = self.fill_in_background {
            opts.fill_in_background = v;
        }
        if let Some(v) = &self.consistency {
            opts.consistency = Consistency::parse(v)?;
        }
        if let Some(v) = self.ttl {
            opts.ttl = v;
        }
        if let Some(v) = self.jitter {
            opts.jitter = v;
        }
        if let Some(v) = self.l1_ttl {
            opts.l1_ttl = Some(v);
        }
        if let Some(v) = self.negative_ttl {
            opts.negative_ttl = v;
        }
        if let Some(v) = self.stale_for {
            opts.stale_for = v;
        }
        if let Some(v) = &self.tags {
            opts.tags = v.clone();
        }
        if let Some(v) = self.skip_l1 {
            opts.skip_l1 = v;
        }
        if let Some(v) = self.skip_l2 {
            opts.skip_l2 = v;
        }
        if let Some(v) = self.schema_version {
            opts.schema_version = v;
        }
        opts.checked.reset();
        Ok(opts)
    }

    fn set_from_env(&mut self, field: &str, value: &str) -> Result<()> {
        let bad = |what: &str| Error::config(format!("{field}={value:?}: {what}"));
        let duration = || humantime::parse_duration(value).map_err(|e| bad(&e.to_string()));
        match field {
            "strategy" => return Err(bad(STRATEGY_REMOVED)),
            "ttl" => self.ttl = Some(duration()?),
            "l1_ttl" => self.l1_ttl = Some(duration()?),
            "negative_ttl" => self.negative_ttl = Some(duration()?),
            "stale_for" => self.stale_for = Some(duration()?),
            "jitter" => self.jitter = Some(value.parse().map_err(|_| bad("not a number"))?),
            "schema_version" => {
                self.schema_version = Some(value.parse().map_err(|_| bad("not a number"))?)
            }
            "tags" => {
                self.tags = Some(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(String::from)
                        .collect(),
                )
            }
            "skip_l1" => self.skip_l1 = Some(value.parse().map_err(|_| bad("not a bool"))?),
            "skip_l2" => self.skip_l2 = Some(value.parse().map_err(|_| bad("not a bool"))?),
            "eager_refresh" => {
                EagerRefresh::parse(value)?;
                self.eager_refresh = Some(value.to_string());
            }
            "soft_timeout" => self.soft_timeout = Some(duration()?),
            "hard_timeout" => self.hard_timeout = Some(duration()?),
            "lock_timeout" => self.lock_timeout = Some(duration()?),
            "fail_safe_throttle" => self.fail_safe_throttle = Some(duration()?),
            "fail_safe" => self.fail_safe = Some(value.parse().map_err(|_| bad("not a bool"))?),
            "distributed_lease" => {
                self.distributed_lease = Some(value.parse().map_err(|_| bad("not a bool"))?)
            }
            "fill_in_background" => {
                self.fill_in_background = Some(value.parse().map_err(|_| bad("not a bool"))?)
            }
            "consistency" => {
                Consistency::parse(value)?;
                self.consistency = Some(value.to_string());
            }
            _ => return Err(bad("unknown policy field")),
        }
        Ok(())
    }
}

impl Policies {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add (or replace) a policy.
    pub fn insert(&mut self, policy: Policy) -> Result<()> {
        policy.options.validate().map_err(|e| match e {
            Error::Config(msg) => Error::config(format!("policy {:?}: {msg}", policy.name)),
            other => other,
        })?;
        self.by_name.insert(policy.name.to_string(), policy);
        Ok(())
    }

    /// The policy called `name`.
    pub fn get(&self, name: &str) -> Result<&Policy> {
        self.by_name
            .get(name)
            .ok_or_else(|| Error::UnknownPolicy(name.to_string()))
    }

    /// Every policy, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Policy> {
        self.by_name.values()
    }

    /// Parse policies from TOML: an optional `[defaults]` table and one
    /// `[policies.NAME]` table per policy, each with the fields of
    /// [`EntryOptions`] (durations as `"2s"`, `"5m"`).
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| Error::config(format!("policy file: {e}")))?;
        let defaults = file
            .defaults
            .apply(&EntryOptions::default())
            .map_err(|e| Error::config(format!("[defaults]: {e}")))?;
        let mut policies = Policies::new();
        for (name, spec) in &file.policies {
            policies.insert(Policy::new(
                name,
                spec.apply(&defaults)
                    .map_err(|e| Error::config(format!("policy {name:?}: {e}")))?,
            ))?;
        }
        Ok(policies)
    }

    /// Read and parse a TOML policy file.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml_str(&text).map_err(|e| Error::config(format!("{}: {e}", path.display())))
    }

    /// Overlay policies from environment variables named
    /// `{PREFIX}__POLICIES__{NAME}__{FIELD}` (e.g.
    /// `STRATACACHE__POLICIES__PORTFOLIO__TTL=90s`); names and fields are
    /// case-insensitive. A variable for a policy not yet defined creates it.
    pub fn overlay_env(&mut self, prefix: &str) -> Result<()> {
        self.overlay_vars(prefix, std::env::vars())
    }

    fn overlay_vars(
        &mut self,
        prefix: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<()> {
        let marker = format!("{}__POLICIES__", prefix.to_ascii_uppercase());
        let mut specs: BTreeMap<String, PolicySpec> = BTreeMap::new();
        for (name, value) in vars {
            let Some(rest) = name
                .to_ascii_uppercase()
                .strip_prefix(&marker)
                .map(String::from)
            else {
                continue;
            };
            let Some((policy, field)) = rest.split_once("__") else {
                return Err(Error::config(format!(
                    "{name}: expected {marker}<NAME>__<FIELD>"
                )));
            };
            specs
                .entry(policy.to_ascii_lowercase())
                .or_default()
                .set_from_env(&field.to_ascii_lowercase(), &value)
                .map_err(|e| Error::config(format!("{name}: {e}")))?;
        }
        for (name, spec) in specs {
            let base = match self.by_name.get(&name) {
                Some(p) => p.options.clone(),
                None => EntryOptions::default(),
            };
            self.insert(Policy::new(&name, spec.apply(&base)?))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_defaults_apply_to_every_policy() {
        let p = Policies::from_toml_str(
            r#"
            [defaults]
            jitter = 0.1
            negative_ttl = "15s"
            [policies.profile]
            ttl = "1h"
            [policies.session]
            ttl = "30m"
            jitter = 0.0
            "#,
        )
        .unwrap();
        let profile = p.get("profile").unwrap().options();
        assert_eq!(profile.ttl, Duration::from_secs(3600));
        assert_eq!(profile.jitter, 0.1);
        assert_eq!(profile.negative_ttl, Duration::from_secs(15));
        assert_eq!(profile.policy_name(), Some("profile"));
        assert_eq!(p.get("session").unwrap().options().jitter, 0.0);
        assert!(matches!(p.get("nope"), Err(Error::UnknownPolicy(_))));
    }

    #[test]
    fn freshness_settings_load_from_files() {
        let p = Policies::from_toml_str(
            r#"
            [policies.overview]
            ttl = "5s"
            stale_for = "10m"
            soft_timeout = "50ms"
            hard_timeout = "2s"
            lock_timeout = "3s"
            fail_safe_throttle = "30s"
            eager_refresh = "xfetch:2"
            distributed_lease = false
            fail_safe = false
            fill_in_background = true
            "#,
        )
        .unwrap();
        let o = p.get("overview").unwrap().options();
        assert_eq!(o.stale_for, Duration::from_secs(600));
        assert_eq!(o.soft_timeout, Some(Duration::from_millis(50)));
        assert_eq!(o.hard_timeout, Some(Duration::from_secs(2)));
        assert_eq!(o.lock_timeout, Duration::from_secs(3));
        assert_eq!(o.fail_safe_throttle, Duration::from_secs(30));
        assert_eq!(o.eager_refresh, Some(EagerRefresh::XFetch { beta: 2.0 }));
        assert!(!o.distributed_lease);
        assert!(!o.fail_safe);
        assert!(o.fill_in_background);
        let err = Policies::from_toml_str("[policies.a]\neager_refresh = \"2.5\"").unwrap_err();
        assert!(err.to_string().contains("eager_refresh"), "{err}");
        let err =
            Policies::from_toml_str("[policies.a]\nsoft_timeout = \"5s\"\nhard_timeout = \"1s\"")
                .unwrap_err();
        assert!(err.to_string().contains("soft_timeout"), "{err}");
    }

    #[test]
    fn consistency_is_chosen_per_policy() {
        let policies = Policies::from_toml_str(
            r#"
            [policies.rows]
            consistency = "version"
            [policies.other]
            "#,
        )
        .unwrap();
        let rows = policies.get("rows").unwrap().options();
        assert_eq!(rows.consistency, Consistency::Version);
        let other = policies.get("other").unwrap().options();
        assert_eq!(other.consistency, Consistency::Lease);
        let err = Policies::from_toml_str("[policies.x]\nconsistency = \"eventual\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("eventual"), "{err}");
    }

    #[test]
    fn malformed_files_give_clear_errors() {
        for (text, needle) in [
            ("[policies.a]\nttl = \"soon\"", "ttl"),
            ("[policies.a]\nttl = \"1s\"\nbogus = 1", "bogus"),
            (
                "[policies.a]\nstrategy = \"yolo\"",
                "no longer a policy field",
            ),
            (
                "[policies.a]\nstrategy = \"write-through\"",
                "no longer a policy field",
            ),
            (
                "[defaults]\nstrategy = \"cache-aside\"",
                "no longer a policy field",
            ),
            ("[policies.a]\nttl = \"0s\"", "ttl must be greater"),
            ("[policies.a]\nttl = \"1s\"\nl1_ttl = \"2s\"", "l1_ttl"),
            ("[policies", "policy file"),
        ] {
            let err = Policies::from_toml_str(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?} → {err}");
        }
    }

    #[test]
    fn environment_overrides_and_creates_policies() {
        let mut p = Policies::from_toml_str("[policies.portfolio]\nttl = \"60s\"").unwrap();
        p.overlay_vars(
            "app",
            [
                (
                    "APP__POLICIES__PORTFOLIO__TTL".to_string(),
                    "90s".to_string(),
                ),
                ("APP__POLICIES__STOCK_PRICE__TTL".into(), "2s".into()),
                (
                    "APP__POLICIES__STOCK_PRICE__TAGS".into(),
                    "prices, market".into(),
                ),
                ("UNRELATED".into(), "x".into()),
            ],
        )
        .unwrap();
        assert_eq!(
            p.get("portfolio").unwrap().options().ttl,
            Duration::from_secs(90)
        );
        let price = p.get("stock_price").unwrap();
        assert_eq!(price.options().ttl, Duration::from_secs(2));
        assert_eq!(price.options().tags, vec!["prices", "market"]);

        let err = p
            .overlay_vars("app", [("APP__POLICIES__X__TTL".into(), "never".into())])
            .unwrap_err();
        assert!(err.to_string().contains("APP__POLICIES__X__TTL"), "{err}");
        let err = p
            .overlay_vars(
                "app",
                [("APP__POLICIES__X__STRATEGY".into(), "write_through".into())],
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("no longer a policy field"),
            "{err}"
        );
    }
}
