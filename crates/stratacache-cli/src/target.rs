//! The Redis deployment a command talks to: its URL parsed by the library
//! (`RedisTopology`), and its nodes found (a Cluster's from `CLUSTER NODES`,
//! a Sentinel group's master from the Sentinels, replicas from `INFO`).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use redis::aio::MultiplexedConnection;
use stratacache::RedisTopology;

use crate::{RedisArgs, TlsFiles};

/// One Redis server.
#[derive(Debug, Clone)]
pub struct Node {
    /// `host:port`.
    pub addr: String,
    /// A URL to connect to it (the given URL's scheme, credentials and db).
    pub url: String,
    /// A master (or the one node), as opposed to a replica.
    pub master: bool,
}

/// A Redis deployment and its nodes.
#[derive(Debug)]
pub struct Target {
    pub topology: RedisTopology,
    /// The URL with any password hidden.
    pub shown: String,
    /// Masters first (the one node of a single-node URL is a "master" even
    /// if it turns out to be a replica: the doctor says so).
    pub nodes: Vec<Node>,
    pub timeout: Duration,
    /// Certificates for the data nodes (Sentinels are reached without).
    pub tls: Option<TlsFiles>,
}

impl Target {
    /// Parse `url` and find the masters (replicas are added by the doctor
    /// from `INFO replication`).
    pub async fn discover(redis: &RedisArgs) -> Result<Target> {
        let (url, timeout, tls) = (&redis.redis_url, redis.timeout, redis.tls()?);
        let topology = RedisTopology::parse(url).map_err(|e| anyhow!("{e}"))?;
        let shown = redact(url);
        let nodes = match &topology {
            RedisTopology::Single(url) => vec![Node {
                addr: addr_of(url).unwrap_or_default(),
                url: url.clone(),
                master: true,
            }],
            RedisTopology::Cluster(seeds) => cluster_nodes(seeds, timeout, tls.as_ref()).await?,
            RedisTopology::Sentinel {
                sentinels,
                master_name,
                master_url,
            } => {
                let addr = sentinel_master(sentinels, master_name, timeout).await?;
                vec![Node {
                    url: with_addr(master_url, &addr),
                    addr,
                    master: true,
                }]
            }
            _ => bail!("this Redis topology is not supported by the command line"),
        };
        Ok(Target {
            topology,
            shown,
            nodes,
            timeout,
            tls,
        })
    }

    pub fn kind(&self) -> &'static str {
        match self.topology {
            RedisTopology::Single(_) => "single node",
            RedisTopology::Cluster(_) => "cluster",
            RedisTopology::Sentinel { .. } => "sentinel",
            _ => "other",
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.topology, RedisTopology::Cluster(_))
    }

    pub fn masters(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.master)
    }

    /// A connection to `node`, bounded by the timeout.
    pub async fn connect(&self, node: &Node) -> Result<MultiplexedConnection> {
        connect(&node.url, self.timeout, self.tls.as_ref())
            .await
            .with_context(|| format!("cannot connect to {}", node.addr))
    }
}

/// A client for one server, with the certificates given.
pub fn client(url: &str, tls: Option<&TlsFiles>) -> Result<redis::Client> {
    let built = match tls {
        None => redis::Client::open(url),
        #[cfg(feature = "tls")]
        Some(files) => redis::Client::build_with_tls(url, certificates(files)),
        #[cfg(not(feature = "tls"))]
        Some(_) => bail!("this build has no TLS: install with `--features tls`"),
    };
    built.map_err(|e| anyhow!("{}: {e}", redact(url)))
}

/// redis-rs's form of the certificates.
#[cfg(feature = "tls")]
pub fn certificates(files: &TlsFiles) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: files
            .client
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
        root_cert: files.ca.clone(),
    }
}

/// A connection to one server, bounded by `timeout`.
pub async fn connect(
    url: &str,
    timeout: Duration,
    tls: Option<&TlsFiles>,
) -> Result<MultiplexedConnection> {
    let client = client(url, tls)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let conn = tokio::time::timeout(
        timeout,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    .map_err(|_| anyhow!("no answer within {timeout:?}"))??;
    Ok(conn)
}

/// `INFO` (all sections) as field → value.
pub async fn info(conn: &mut MultiplexedConnection) -> Result<HashMap<String, String>> {
    let text: String = redis::cmd("INFO").arg("all").query_async(conn).await?;
    Ok(parse_info(&text))
}

pub fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The masters (and replicas) of a Cluster, from the first seed that answers.
async fn cluster_nodes(
    seeds: &[String],
    timeout: Duration,
    tls: Option<&TlsFiles>,
) -> Result<Vec<Node>> {
    let mut last = None;
    for seed in seeds {
        let mut conn = match connect(seed, timeout, tls).await {
            Ok(conn) => conn,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut conn)
            .await
            .with_context(|| format!("CLUSTER NODES on {}", redact(seed)))?;
        let mut nodes: Vec<Node> = text
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let addr = fields.get(1)?.split('@').next()?.to_string();
                let flags = fields.get(2)?;
                if flags.contains("noaddr") || addr.starts_with(':') {
                    return None;
                }
                Some(Node {
                    url: with_addr(seed, &addr),
                    master: flags.contains("master"),
                    addr,
                })
            })
            .collect();
        nodes.sort_by_key(|n| (!n.master, n.addr.clone()));
        return Ok(nodes);
    }
    Err(last.unwrap_or_else(|| anyhow!("no cluster seed"))).context("no cluster seed node answered")
}

/// The master's address as the first Sentinel that answers knows it.
async fn sentinel_master(sentinels: &[String], name: &str, timeout: Duration) -> Result<String> {
    let mut last = anyhow!("no sentinel");
    for url in sentinels {
        let asked = async {
            let mut conn = connect(url, timeout, None).await?;
            let found: Option<(String, String)> = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(name)
                .query_async(&mut conn)
                .await?;
            found.ok_or_else(|| anyhow!("sentinel {url} does not know master {name:?}"))
        };
        match asked.await {
            Ok((host, port)) => return Ok(format!("{host}:{port}")),
            Err(e) => last = e,
        }
    }
    Err(last).context("no sentinel gave the master's address")
}

/// `host:port` of a node URL.
pub fn addr_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    Some(rest.split('/').next()?.to_string())
}

/// `url` pointing at `addr` instead (scheme, credentials and db kept).
pub fn with_addr(url: &str, addr: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return format!("redis://{addr}");
    };
    let (userinfo, hosts) = match rest.rsplit_once('@') {
        Some((user, hosts)) => (format!("{user}@"), hosts),
        None => (String::new(), rest),
    };
    let path = hosts.split_once('/').map_or("", |(_, p)| p);
    let scheme = scheme.split('+').next().unwrap_or(scheme);
    if path.is_empty() {
        format!("{scheme}://{userinfo}{addr}")
    } else {
        format!("{scheme}://{userinfo}{addr}/{path}")
    }
}

/// The URL with any password replaced.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => format!("{}***{}", &url[..scheme_end + 3], &url[at..]),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls_keep_credentials_and_db() {
        assert_eq!(
            with_addr("redis://u:p@sentinel-master/3", "10.0.0.1:6379"),
            "redis://u:p@10.0.0.1:6379/3"
        );
        assert_eq!(
            with_addr("redis://127.0.0.1:7000", "127.0.0.1:7001"),
            "redis://127.0.0.1:7001"
        );
        assert_eq!(addr_of("redis://u:p@h:1/2").as_deref(), Some("h:1"));
        assert_eq!(redact("redis://u:secret@h:1"), "redis://u:***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
