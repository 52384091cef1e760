//! Invalidation: by key (in `cache.rs`: `delete`, and every write), by tag,
//! by prefix, and of the whole namespace — reaching every instance's L1
//! through the [`backplane`].
//!
//! | operation | in Redis | cost | other instances |
//! |---|---|---|---|
//! | `delete(k)`, `set(k)` | UNLINK/SET the entry, DEL its lease | O(1) | drop `k` from L1 |
//! | `invalidate_tag(t)` | SET `{ns}:__tag:{t}` = now | O(1) | drop L1 entries tagged `t` |
//! | `clear()` | SET `{ns}:__clear` = now | O(1) | drop all of L1 |
//! | `invalidate_prefix(p)` | SCAN + UNLINK on every master | O(keys) | drop L1 keys starting with `p` |
//!
//! Tag and namespace invalidations leave the entries in Redis: a read checks
//! the entry's creation time against the timestamps ([`tags`]) and treats an
//! older entry as a miss. Creation time is when the entry's load *began*, so
//! a load that overlapped the invalidation does not survive it.

pub(crate) mod backplane;
pub(crate) mod failover;
pub(crate) mod message;
pub(crate) mod recovery;
pub(crate) mod tags;

use std::time::Duration;

use crate::cache::{Cache, Inner};
use crate::codec::envelope::EntryMeta;
use crate::error::Result;
use failover::Replay;
use message::{Invalidation, Message};

/// How long tag timestamps are kept in Redis: entries tagged longer ago than
/// this (ttl + stale window) could outlive their tag's invalidation.
pub(crate) const TAG_TIMESTAMP_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const SCAN_BATCH: usize = 1_000;

impl Cache {
    /// Invalidate every entry tagged `tag`, in every instance. O(1) in Redis:
    /// one timestamp, checked lazily when entries are read.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<()> {
        self.inner.invalidate_tag_everywhere(tag).await
    }

    /// Invalidate every entry of the namespace, in every instance, without
    /// SCAN or FLUSHALL: one timestamp (a namespace version bump).
    pub async fn clear(&self) -> Result<()> {
        let inner = &self.inner;
        let at_ms = inner.clock.now_ms();
        inner.tags.set_cleared_at(at_ms);
        inner.apply_invalidation(&Invalidation::Clear { at_ms });
        inner.failover_log.note([Replay::Clear]);
        if let Some(l2) = &inner.l2 {
            l2.set_plain(&inner.clear_key(), &at_ms.to_string(), None)
                .await?;
            inner.publish(Invalidation::Clear { at_ms }).await;
        }
        Ok(())
    }

    /// Delete every key starting with `prefix`, in Redis (SCAN in batches on
    /// every master, UNLINK — never KEYS) and in every instance's L1.
    /// Returns the number of Redis keys deleted (entries and their leases).
    pub async fn invalidate_prefix(&self, prefix: &str) -> Result<u64> {
        let inner = &self.inner;
        inner.apply_invalidation(&Invalidation::Prefix {
            prefix: prefix.to_string(),
        });
        inner.failover_log.note([Replay::Clear]);
        let Some(l2) = &inner.l2 else { return Ok(0) };
        let pattern = format!(
            "{}{}*",
            glob_escape(&inner.stored_prefix()),
            glob_escape(prefix)
        );
        // Version floors stay: a load that read an older row must still be
        // refused after the entries are gone (see `versioned`).
        let deleted = l2
            .delete_matching(&pattern, SCAN_BATCH, crate::versioned::is_floor_key)
            .await?;
        inner
            .publish(Invalidation::Prefix {
                prefix: prefix.to_string(),
            })
            .await;
        Ok(deleted)
    }
}

fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Inner {
    /// Invalidate `tag` here, in Redis (its timestamp) and in the other
    /// instances.
    pub(crate) async fn invalidate_tag_everywhere(&self, tag: &str) -> Result<()> {
        let at_ms = self.clock.now_ms();
        self.tags.set_tag(tag, at_ms);
        self.apply_invalidation(&Invalidation::Tag {
            tag: tag.to_string(),
            at_ms,
        });
        self.failover_log.note([Replay::Tag(tag.to_string())]);
        if let Some(l2) = &self.l2 {
            l2.set_plain(
                &self.tag_key(tag),
                &at_ms.to_string(),
                Some(TAG_TIMESTAMP_TTL),
            )
            .await?;
            self.publish(Invalidation::Tag {
                tag: tag.to_string(),
                at_ms,
            })
            .await;
        }
        Ok(())
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("{}:__tag:{tag}", self.keys.namespace())
    }

    fn clear_key(&self) -> String {
        format!("{}:__clear", self.keys.namespace())
    }

    fn stored_prefix(&self) -> String {
        format!("{}:{{", self.keys.namespace())
    }

    /// Apply an invalidation to this instance: L1, the flights, the clock.
    pub(crate) fn apply_invalidation(&self, what: &Invalidation) {
        match what {
            Invalidation::Keys { keys } => {
                for key in keys {
                    self.invalidations.key_invalidated(key);
                    if let Some(l1) = &self.l1 {
                        l1.remove_inner(key);
                    }
                    self.flights.forget(&self.keys.stored_from_inner(key));
                }
            }
            Invalidation::Tag { tag, at_ms } => {
                self.invalidations.broad_invalidation();
                self.tags.set_tag(tag, *at_ms);
                let (tag, at_ms) = (tag.clone(), *at_ms);
                if let Some(l1) = &self.l1 {
                    l1.remove_if(move |_, entry| {
                        entry.meta.created_at_ms <= at_ms && entry.meta.tags.contains(&tag)
                    });
                }
            }
            Invalidation::Prefix { prefix } => {
                self.invalidations.broad_invalidation();
                let stored_prefix = format!("{}{prefix}", self.stored_prefix());
                self.flights
                    .forget_if(|key| key.starts_with(&stored_prefix));
                if let Some(l1) = &self.l1 {
                    let prefix = prefix.clone();
                    l1.remove_if(move |key, _| key.starts_with(&prefix));
                }
            }
            Invalidation::Clear { at_ms } => {
                self.invalidations.broad_invalidation();
                self.tags.set_cleared_at(*at_ms);
                self.flights.forget_if(|_| true);
                self.clear_l1_only();
            }
        }
    }

    pub(crate) fn clear_l1_only(&self) {
        self.invalidations.broad_invalidation();
        if let Some(l1) = &self.l1 {
            l1.clear();
        }
    }

    /// Tell the other instances; returns whether the message went out.
    pub(crate) async fn publish(&self, what: Invalidation) -> bool {
        let (Some(l2), Some(backplane)) = (&self.l2, &self.backplane) else {
            return true;
        };
        let payload = Message::encode(&backplane.instance, what);
        match l2.publish(&backplane.channel, &payload).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(error = ?err, "could not publish an invalidation");
                false
            }
        }
    }

    pub(crate) async fn write_clear_timestamp(&self, at_ms: u64) -> Result<()> {
        if let Some(l2) = &self.l2 {
            l2.set_plain(&self.clear_key(), &at_ms.to_string(), None)
                .await?;
        }
        Ok(())
    }

    /// Re-read what may have been missed: the namespace timestamp; tag
    /// timestamps are dropped and fetched again on demand.
    pub(crate) async fn refresh_invalidation_state(&self) {
        self.tags.forget_tags();
        if let Some(l2) = &self.l2 {
            if let Ok(Some(bytes)) = l2.get(&self.clear_key()).await {
                if let Some(at) = std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|s| s.parse().ok())
                {
                    self.tags.set_cleared_at(at);
                }
            }
        }
    }

    /// Whether an entry read from L2 was invalidated by a tag or by `clear`,
    /// or predates a master move the instances may not have repaired yet
    /// ([`failover::FENCE`]).
    pub(crate) async fn is_invalidated(&self, meta: &EntryMeta) -> bool {
        if let Some(l2) = &self.l2 {
            if failover::fenced(
                meta.created_at_ms,
                l2.master_moved_at_ms(),
                self.clock.now_ms(),
            ) {
                return true;
            }
        }
        let unknown = self.tags.unknown(meta);
        if !unknown.is_empty() {
            if let Some(l2) = &self.l2 {
                let keys: Vec<String> = unknown.iter().map(|t| self.tag_key(t)).collect();
                match l2.get_many(&keys).await {
                    Ok(values) => {
                        for (tag, value) in unknown.iter().zip(values) {
                            let at = value
                                .and_then(|b| {
                                    std::str::from_utf8(&b).ok().and_then(|s| s.parse().ok())
                                })
                                .unwrap_or(0);
                            self.tags.set_tag(tag, at);
                        }
                    }
                    // Cannot tell: a tagged entry read while Redis fails is not trusted.
                    Err(_) => return true,
                }
            }
        }
        self.tags.invalidates(meta)
    }
}
