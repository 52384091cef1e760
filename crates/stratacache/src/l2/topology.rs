//! Where L2 lives: one Redis node, a Cluster, or a master behind Sentinels.

use crate::error::{Error, Result};

/// The Redis deployment L2 talks to.
///
/// ```
/// use stratacache::RedisTopology;
///
/// assert!(matches!(RedisTopology::parse("redis://127.0.0.1:6379/0"), Ok(RedisTopology::Single(_))));
/// let cluster = RedisTopology::parse("redis+cluster://10.0.0.1:7000,10.0.0.2:7000").unwrap();
/// assert_eq!(cluster, RedisTopology::Cluster(vec![
///     "redis://10.0.0.1:7000".into(), "redis://10.0.0.2:7000".into(),
/// ]));
/// let sentinel = RedisTopology::parse("redis+sentinel://s1:26379,s2:26379/mymaster").unwrap();
/// assert!(matches!(sentinel, RedisTopology::Sentinel { .. }));
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisTopology {
    /// One node: `redis://[user:pass@]host:port[/db]` or `rediss://` for TLS.
    Single(String),
    /// Seed node URLs of a Redis Cluster.
    Cluster(Vec<String>),
    /// A master found through Sentinels.
    Sentinel {
        /// Sentinel URLs (`redis://host:port`).
        sentinels: Vec<String>,
        /// The monitored master's name.
        master_name: String,
        /// URL parts (`redis://[user:pass@]_/db`, `rediss://` for TLS) used to
        /// connect to the master once found; only scheme, credentials and db matter.
        master_url: String,
    },
}

impl RedisTopology {
    /// Parse a URL:
    /// - `redis://…` / `rediss://…`: one node;
    /// - `redis+cluster://[user:pass@]h1:p1,h2:p2` (`rediss+cluster` for TLS): a Cluster;
    /// - `redis+sentinel://[user:pass@]s1:p1,s2:p2/MASTER[/db]` (`rediss+sentinel`): Sentinel,
    ///   where the credentials and TLS apply to the master.
    pub fn parse(url: &str) -> Result<Self> {
        let url = url.trim();
        let bad = |why: &str| Error::config(format!("redis url {:?}: {why}", redact(url)));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("missing scheme"))?;
        let (tls, kind) = match scheme {
            "redis" => (false, "single"),
            "rediss" => (true, "single"),
            "redis+cluster" => (false, "cluster"),
            "rediss+cluster" => (true, "cluster"),
            "redis+sentinel" => (false, "sentinel"),
            "rediss+sentinel" => (true, "sentinel"),
            _ => {
                return Err(bad(
                    "scheme must be redis, rediss, redis+cluster or redis+sentinel",
                ))
            }
        };
        let node_scheme = if tls { "rediss" } else { "redis" };
        if kind == "single" {
            if rest.is_empty() {
                return Err(bad("missing host"));
            }
            return Ok(RedisTopology::Single(url.to_string()));
        }
        let (userinfo, hosts_and_path) = match rest.rsplit_once('@') {
            Some((user, hosts)) => (format!("{user}@"), hosts),
            None => (String::new(), rest),
        };
        let (hosts, path) = match hosts_and_path.split_once('/') {
            Some((h, p)) => (h, p),
            None => (hosts_and_path, ""),
        };
        let hosts: Vec<&str> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        if hosts.is_empty() {
            return Err(bad("no hosts"));
        }
        for host in &hosts {
            let port = host.rsplit_once(':').map(|(_, p)| p);
            if port.and_then(|p| p.parse::<u16>().ok()).is_none() {
                return Err(bad("every host needs a numeric port"));
            }
        }
        if kind == "cluster" {
            if !path.is_empty() {
                return Err(bad("a cluster has no database number"));
            }
            let nodes = hosts
                .iter()
                .map(|h| format!("{node_scheme}://{userinfo}{h}"))
                .collect();
            return Ok(RedisTopology::Cluster(nodes));
        }
        let mut parts = path.split('/');
        let master_name = parts.next().unwrap_or_default();
        if master_name.is_empty() {
            return Err(bad("sentinel url needs /MASTER_NAME"));
        }
        let db = parts.next().unwrap_or("0");
        if db.parse::<u32>().is_err() {
            return Err(bad("database must be a number"));
        }
        Ok(RedisTopology::Sentinel {
            sentinels: hosts.iter().map(|h| format!("redis://{h}")).collect(),
            master_name: master_name.to_string(),
            master_url: format!("{node_scheme}://{userinfo}sentinel-master/{db}"),
        })
    }
}

/// Passwords never reach a log through `{:?}`.
impl std::fmt::Debug for RedisTopology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |urls: &[String]| urls.iter().map(|u| redact(u)).collect::<Vec<_>>();
        match self {
            RedisTopology::Single(url) => f.debug_tuple("Single").field(&redact(url)).finish(),
            RedisTopology::Cluster(urls) => {
                f.debug_tuple("Cluster").field(&redacted(urls)).finish()
            }
            RedisTopology::Sentinel {
                sentinels,
                master_name,
                master_url,
            } => f
                .debug_struct("Sentinel")
                .field("sentinels", &redacted(sentinels))
                .field("master_name", master_name)
                .field("master_url", &redact(master_url))
                .finish(),
        }
    }
}

/// The URL with any password replaced, for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            RedisTopology::parse("rediss+cluster://u:p@a:1,b:2").unwrap(),
            RedisTopology::Cluster(vec!["rediss://u:p@a:1".into(), "rediss://u:p@b:2".into()])
        );
        assert_eq!(
            RedisTopology::parse("redis+sentinel://a:1,b:2/main/3").unwrap(),
            RedisTopology::Sentinel {
                sentinels: vec!["redis://a:1".into(), "redis://b:2".into()],
                master_name: "main".into(),
                master_url: "redis://sentinel-master/3".into(),
            }
        );
    }

    #[test]
    fn bad_urls_are_config_errors_without_secrets() {
        for url in [
            "http://x",
            "redis://",
            "redis+cluster://a",
            "redis+cluster://a:1/0",
            "redis+sentinel://a:1",
            "redis+sentinel://a:1/m/x",
            "nonsense",
        ] {
            assert!(
                matches!(RedisTopology::parse(url), Err(Error::Config(_))),
                "{url}"
            );
        }
        let err = RedisTopology::parse("redis+cluster://bob:hunter2@a").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
