//! Tests that start real servers (need `redis-server` and `redis-cli`).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::net::Reply;
use crate::*;

const SHORT: Duration = Duration::from_millis(300);

#[test]
fn free_ports_are_distinct_and_bus_port_is_free() {
    let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
    let mut seen = HashSet::new();
    for &p in &ports {
        assert!(seen.insert(p), "port {p} handed out twice");
        assert!(seen.insert(p + 10000), "bus port of {p} collides");
        assert!(std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
    }
}

#[test]
fn key_slot_matches_redis() {
    assert_eq!(key_slot(b"123456789"), 0x31C3);
    assert_eq!(key_slot(b"foo"), 12182);
    let node = &shared_cluster().nodes()[0];
    for key in [
        "foo",
        "bar",
        "user:{42}:name",
        "{}x",
        "a{b}c{d}",
        "{",
        "x}y{",
    ] {
        let expected: u16 = node.cli(&["CLUSTER", "KEYSLOT", key]).parse().unwrap();
        assert_eq!(key_slot(key.as_bytes()), expected, "key {key:?}");
    }
}

#[test]
fn server_start_kill_restart() {
    let mut s = RedisServer::start();
    assert!(s.url().starts_with("redis://127.0.0.1:"));
    assert!(s.dir().is_dir());
    assert_eq!(s.cli(&["PING"]), "PONG");
    assert_eq!(s.cli(&["SET", "k", "v"]), "OK");
    assert_eq!(s.query(&["GET", "k"], SHORT).unwrap(), "v");
    assert!(s.query(&["NOSUCHCOMMAND"], SHORT).is_err());
    let port = s.port();
    let pid = s.pid().unwrap();
    assert!(s.is_running());

    s.kill();
    s.kill(); // idempotent
    assert!(!s.is_running());
    assert!(!s.ping(SHORT));
    // SIGKILL'd and reaped: the pid is gone.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());

    s.restart();
    assert_eq!(s.port(), port);
    assert!(s.is_running());
    assert_eq!(s.cli(&["GET", "k"]), "", "no persistence by default");
}

#[test]
fn aof_survives_restart() {
    let mut s = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    assert_eq!(s.cli(&["SET", "durable", "yes"]), "OK");
    s.kill();
    s.restart();
    assert_eq!(s.cli(&["GET", "durable"]), "yes");
    assert!(s.log().contains("Ready to accept connections"));
}

#[test]
fn pause_and_resume() {
    let s = RedisServer::start();
    assert!(s.ping(SHORT));
    s.pause();
    assert!(s.is_paused());
    let t = Instant::now();
    assert!(
        !s.ping(Duration::from_millis(200)),
        "paused server answered"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(s.is_alive());
    s.resume();
    assert!(!s.is_paused());
    assert!(s.ping(Duration::from_secs(2)));
}

#[test]
fn drop_kills_and_removes_dir() {
    let s = RedisServer::start();
    let dir = s.dir().to_path_buf();
    let pid = s.pid().unwrap();
    let port = s.port();
    drop(s);
    assert!(!dir.exists());
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(!net::ping(port, SHORT));
}

#[test]
fn servers_have_parent_death_signal() {
    let s = RedisServer::start();
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid().unwrap())).unwrap();
    // The child was forked by this process.
    let ppid = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .map(|v| v.trim().parse::<u32>().unwrap());
    assert_eq!(ppid, Some(std::process::id()));
    // A test thread that exits must not take the server with it.
    let port = s.port();
    std::thread::spawn(move || {
        let t = RedisServer::start();
        t.port()
    })
    .join()
    .unwrap();
    assert!(net::ping(port, SHORT));
}

#[test]
fn cluster_three_masters_ok() {
    let t = Instant::now();
    let mut c = RedisCluster::start();
    eprintln!("cluster started in {:?}", t.elapsed());
    assert_eq!(c.seed_urls().len(), 6);
    let masters = c.master_ports();
    assert_eq!(masters.len(), 3, "{}", c.diagnostics());
    assert_eq!(c.replica_ports().len(), 3);
    assert!(c.wait_ok(Duration::from_secs(5)));
    for n in c.nodes() {
        assert_eq!(
            n.cli(&["CLUSTER", "INFO"]).lines().next(),
            Some("cluster_state:ok")
        );
    }
    let initial: Vec<u16> = c.nodes()[..3].iter().map(|n| n.port()).collect();
    let mut sorted = initial.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, masters, "nodes 0..3 are the initial masters");

    // Write through the owner of the key's slot.
    let owner = c.master_port_for_key(b"hello").unwrap();
    let node = c.node_by_port(owner).unwrap();
    // Replication is asynchronous: make sure the replica has the key before
    // its master dies, or the promoted replica may rightly not have it.
    // `WAIT` counts acknowledgements of its own connection's writes only,
    // so it goes on the connection that wrote (on another it returns at once).
    let replies = net::call_all(
        owner,
        &[&["SET", "hello", "world"], &["WAIT", "1", "5000"]],
        Duration::from_secs(10),
    )
    .expect("SET and WAIT on the key's master");
    assert_eq!(replies, [Reply::Status("OK".into()), Reply::Int(1)]);
    // Which replica acknowledged, at which offset: for the message below,
    // should the promoted node not hold the key.
    let before_kill = node.cli(&["INFO", "replication"]);

    // Kill the master of that key: its replica takes over.
    let t = Instant::now();
    c.node_by_port_mut(owner).unwrap().kill();
    let promoted = crate::process::poll(Duration::from_secs(30), || {
        c.master_port_for_key(b"hello").is_some_and(|p| p != owner)
    });
    assert!(promoted, "no failover\n{}", c.diagnostics());
    assert!(c.wait_ok(Duration::from_secs(30)), "{}", c.diagnostics());
    eprintln!("cluster failover took {:?}", t.elapsed());
    let new_owner = c.master_port_for_key(b"hello").unwrap();
    let new_master = c.node_by_port(new_owner).unwrap();
    let got = new_master.cli(&["GET", "hello"]);
    assert_eq!(
        got,
        "world",
        "the promoted node {new_owner} lost the write acknowledged before the \
         failover\n--- old master {owner} before the kill:\n{before_kill}\n\
         --- promoted node now:\n{}\nDBSIZE {}\n{}",
        new_master.cli(&["INFO", "replication"]),
        new_master.cli(&["DBSIZE"]),
        c.diagnostics()
    );

    // The old master comes back as a replica.
    c.node_by_port_mut(owner).unwrap().restart();
    assert!(c.wait_ready(Duration::from_secs(30)), "{}", c.diagnostics());
    assert_eq!(c.master_ports().len(), 3);
    assert!(!c.master_ports().contains(&owner));
}

#[test]
fn shared_cluster_is_shared() {
    let a = shared_cluster();
    let b = shared_cluster();
    assert!(std::ptr::eq(a, b));
    assert_eq!(a.master_ports().len(), 3);
    assert!(a.wait_ok(Duration::from_secs(5)));
}

#[test]
fn sentinel_group_failover() {
    let t = Instant::now();
    let mut g = RedisSentinelGroup::start();
    eprintln!("sentinel group started in {:?}", t.elapsed());
    assert_eq!(g.master_name(), "stratamaster");
    assert_eq!(g.sentinel_addrs().len(), 3);
    let first = g.current_master_port();
    assert_eq!(first, g.data_nodes()[0].port());
    assert_eq!(g.master().cli(&["SET", "k", "v"]), "OK");

    let t = Instant::now();
    g.failover();
    eprintln!("manual failover took {:?}", t.elapsed());
    let second = g.current_master_port();
    assert_ne!(first, second);
    assert_eq!(second, g.data_nodes()[1].port());
    assert_eq!(g.master().role(SHORT).as_deref(), Some("master"));
    assert_eq!(g.replica().role(SHORT).as_deref(), Some("slave"));
    assert_eq!(g.master().cli(&["GET", "k"]), "v");

    // And back again.
    g.failover();
    assert_eq!(g.current_master_port(), first);

    // Automatic failover after the master dies.
    let t = Instant::now();
    g.master_mut().kill();
    let new = g.wait_for_master_change(first, Duration::from_secs(30));
    assert_eq!(new, Some(second), "{}", g.diagnostics());
    eprintln!("automatic failover took {:?}", t.elapsed());
}

#[test]
fn a_child_process_logs_exits_and_is_killed() {
    let args = |s: &str| vec!["-c".to_string(), s.to_string()];
    let mut quick = ChildProcess::start("sh", &args("echo out; echo err >&2; exit 3")).unwrap();
    let status = quick.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(3));
    assert!(quick.log().contains("out") && quick.log().contains("err"));
    let env = [("TESTKIT_CHILD_VALUE".to_string(), "from-env".to_string())];
    let mut with_env =
        ChildProcess::start_with_env("sh", &args("echo $TESTKIT_CHILD_VALUE"), &env).unwrap();
    with_env.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(with_env.log().contains("from-env"));

    let mut long = ChildProcess::start("sleep", &["30".to_string()]).unwrap();
    let pid = long.pid().unwrap();
    assert!(long.exit_status().is_none(), "still running");
    let dir = long.dir().to_path_buf();
    long.kill();
    assert!(long.exit_status().is_none() && long.pid().is_none());
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(!cmdline.starts_with("sleep"), "killed and reaped");
    drop(long);
    assert!(!dir.exists(), "directory removed");
    assert!(ChildProcess::start("/nonexistent/program", &[]).is_err());
}

#[test]
fn a_tls_server_answers_on_both_ports_and_only_trusting_clients_over_tls() {
    let tls = TlsRedisServer::start();
    assert!(tls.server().ping(SHORT), "plain port");
    assert_ne!(tls.tls_port(), tls.server().port());
    assert!(tls.tls_url().starts_with("rediss://localhost:"));
    // A plain PING on the TLS port gets no PONG.
    assert!(!net::ping(tls.tls_port(), SHORT));
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), tls.ca_pem()).unwrap();
    let ping = |trust: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args([
                "--tls",
                "-h",
                "localhost",
                "-p",
                &tls.tls_port().to_string(),
            ])
            .args(trust)
            .arg("PING")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let ca_path = ca.path().to_string_lossy().to_string();
    assert_eq!(ping(&["--cacert", &ca_path]), "PONG");
    assert_ne!(
        ping(&[]),
        "PONG",
        "the private CA is not trusted by default"
    );
}
