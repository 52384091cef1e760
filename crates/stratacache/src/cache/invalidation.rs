//! Invalidation beyond one key: by tag, by prefix, of the whole namespace,
//! and by version — each reaching every instance's L1.
//!
//! | operation | in Redis | cost | other instances |
//! |---|---|---|---|
//! | `delete(k)`, `set(k)` | UNLINK/SET the entry, DEL its lease | O(1) | drop `k` from L1 |
//! | `invalidate_tag(t)` | SET `{ns}:__tag:{t}` = a stamp | O(1) | hide entries tagged `t` created before |
//! | `invalidate_all()` | SET `{ns}:__clear` = a stamp | O(1) | hide every entry created before |
//! | `invalidate_prefix(p)` | SCAN + UNLINK on every master (twice) | O(keys) | drop L1 keys starting with `p` |
//! | `invalidate_version(k, v)` | raise `k`'s version floor, UNLINK it | O(1) | drop `k` from L1 |
//!
//! Tag and namespace invalidations leave the entries in Redis: a read checks
//! the entry's creation stamp against the invalidation's and treats an older
//! entry as a miss. Creation is when the entry's load *began*, so a load that
//! overlapped the invalidation does not survive it.
//!
//! Each returns an error when Redis could not be told now. The invalidation
//! still holds on this instance, and is replayed to Redis and announced to
//! the other instances as soon as Redis answers again.

use super::Cache;
use crate::error::Result;
use crate::options::EntryOptions;
use crate::tiers::CacheValue;

impl Cache {
    /// Invalidate every entry tagged `tag`, in every instance. O(1) in Redis:
    /// one stamp, checked lazily when entries are read.
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// use std::time::Duration;
    /// use stratacache::EntryOptions;
    ///
    /// let opts = EntryOptions::new().ttl(Duration::from_secs(3600)).tags(["user:42"]);
    /// cache.set("user:42:profile", &"Ada".to_string(), &opts).await?;
    /// cache.set("user:42:settings", &"dark".to_string(), &opts).await?;
    /// cache.invalidate_tag("user:42").await?; // both gone, on every instance
    /// assert_eq!(cache.get::<String>("user:42:profile").await?, None);
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_tag(&self, tag: &str) -> Result<()> {
        self.writes().invalidate_tag(tag).await
    }

    /// Invalidate every entry of the namespace, in Redis and in every
    /// instance's L1, without SCAN or FLUSHALL: one stamp (a namespace
    /// version bump). To drop only this instance's L1, see
    /// [`clear_l1`](Self::clear_l1).
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// cache.invalidate_all().await?; // every entry of this cache's namespace, on every instance
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_all(&self) -> Result<()> {
        self.writes().invalidate_all().await
    }

    /// Delete every key starting with `prefix`, in Redis (SCAN in batches on
    /// every master, UNLINK — never KEYS) and in every instance's L1.
    /// Returns the number of Redis keys deleted (entries and their leases).
    /// Keys too long to be stored as themselves (over `max_key_len`, stored
    /// as a digest) are deleted when their readable head matches: a prefix
    /// longer than that head deletes every such key sharing it.
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// let deleted = cache.invalidate_prefix("report:2024-").await?;
    /// println!("{deleted} keys deleted");
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_prefix(&self, prefix: &str) -> Result<u64> {
        self.writes().invalidate_prefix(prefix).await
    }

    /// Announce that the source of `key` now holds `version` (a row version
    /// committed by a write or a delete): every instance drops its copy, and
    /// no fill that read an older version can land afterwards. For keys read
    /// under [`Consistency::Version`](crate::Consistency::Version).
    ///
    /// An error means Redis could not be told; the key is gone from this
    /// instance's L1 and is invalidated (with its version) when Redis is back.
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// // After `UPDATE prices SET price = 101.5, version = 18 WHERE symbol = 'ACME'`:
    /// cache.invalidate_version("price:ACME", 18).await?;
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_version(&self, key: &str, version: u64) -> Result<()> {
        let stored = self.tiers().keys().stored(key)?;
        self.writes().raise_floor(&stored, version).await
    }

    /// Write-through with a version: store `value` as `key`'s value at
    /// `version`, unless Redis already knows a newer version of it (then
    /// nothing is stored and `Ok(false)` is returned — a newer write won).
    /// Without Redis the value is stored in L1 unconditionally.
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// use stratacache::{Consistency, EntryOptions};
    ///
    /// let opts = EntryOptions::new().consistency(Consistency::Version);
    /// assert!(cache.set_versioned("price:ACME", &101.5, 18, &opts).await?);
    /// // A write-through that read the row before version 18 arrives late:
    /// assert!(!cache.set_versioned("price:ACME", &99.0, 17, &opts).await?);
    /// assert_eq!(cache.get::<f64>("price:ACME").await?, Some(101.5));
    /// # Ok(()) }
    /// ```
    pub async fn set_versioned<V: CacheValue>(
        &self,
        key: &str,
        value: &V,
        version: u64,
        opts: &EntryOptions,
    ) -> Result<bool> {
        opts.validate()?;
        let write = self.key_write(key, value.clone(), opts)?;
        self.writes().put_versioned(write, version, opts).await
    }
}
