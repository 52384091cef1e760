//! Slow and oversized clients against `market serve` (the binary, its
//! flags), over raw TCP: an announced body over the limit is refused at
//! once, a head that never ends and an idle connection are closed after the
//! header timeout, a stalled body is answered 408 after the body timeout, a
//! body trickled in byte by byte is cut at the request timeout, and
//! connections beyond the limit wait without taking the service down.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;

/// What the tests configure, short enough to wait for.
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
const BODY_TIMEOUT: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Scheduling on a loaded machine.
const SLACK: Duration = Duration::from_millis(1500);

async fn start(db: &TestDb, extra: &[&str]) -> ServeProcess {
    let mut args = vec![
        "--header-timeout",
        "1s",
        "--body-timeout",
        "1s",
        "--request-timeout",
        "3s",
    ];
    args.extend_from_slice(extra);
    ServeProcess::start(db, &unique("market-limits"), &args, &[]).await
}

#[tokio::test]
async fn an_announced_body_over_the_limit_is_refused_at_once_with_json() {
    let db = TestDb::seeded().await;
    let server = start(&db, &[]).await;
    // 10 MB announced, nothing sent: no reason to wait for it.
    let request = b"PUT /api/watchlists/1 HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n";
    let (answer, took, closed) = raw_exchange(server.port, request, Duration::from_secs(5)).await;
    let (status, body) = parse_raw(&answer);
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&answer));
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("too large")),
        "{body}"
    );
    assert!(body["request_id"].is_string(), "{body}");
    assert!(
        closed && took < Duration::from_secs(1),
        "answered and closed in {took:?}"
    );
}

#[tokio::test]
async fn a_head_that_never_ends_and_an_idle_connection_are_closed_after_the_header_timeout() {
    let db = TestDb::seeded().await;
    let server = start(&db, &[]).await;
    for request in [
        &b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: "[..],
        b"",
    ] {
        let (answer, took, closed) =
            raw_exchange(server.port, request, Duration::from_secs(20)).await;
        assert!(closed, "still open after 20 s");
        assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
        assert!(
            took >= HEADER_TIMEOUT && took < HEADER_TIMEOUT + SLACK,
            "closed after {took:?}"
        );
    }
}

#[tokio::test]
async fn a_stalled_body_is_answered_408_after_the_body_timeout() {
    let db = TestDb::seeded().await;
    let server = start(&db, &[]).await;
    let request = b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user";
    let (answer, took, closed) = raw_exchange(server.port, request, Duration::from_secs(20)).await;
    let (status, body) = parse_raw(&answer);
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&answer));
    assert!(
        body["error"].is_string() && body["request_id"].is_string(),
        "{body}"
    );
    assert!(
        closed && took >= BODY_TIMEOUT && took < BODY_TIMEOUT + SLACK,
        "{took:?}"
    );
}

#[tokio::test]
async fn a_body_trickled_byte_by_byte_is_cut_at_the_request_timeout() {
    use tokio::io::AsyncReadExt;
    let db = TestDb::seeded().await;
    let server = start(&db, &[]).await;
    let started = tokio::time::Instant::now();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    stream
        .write_all(b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    // A byte every half body timeout: never idle long enough for that one.
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(20) {
        if stream.write_all(b" ").await.is_err() {
            break;
        }
        match tokio::time::timeout(BODY_TIMEOUT / 2, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let took = started.elapsed();
    let (status, body) = parse_raw(&answer);
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&answer));
    assert!(body["request_id"].is_string(), "{body}");
    assert!(
        took >= REQUEST_TIMEOUT && took < REQUEST_TIMEOUT + SLACK,
        "cut after {took:?}"
    );
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_and_slow_ones_are_closed_in_time() {
    let db = TestDb::seeded().await;
    let server = start(&db, &["--max-connections", "8"]).await;
    // Eight connections that send nothing hold every slot...
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", server.port))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ...so a ninth waits to be accepted, and is served once the header
    // timeout has closed them.
    let started = tokio::time::Instant::now();
    let (status, _) = get(&client(), &format!("{}/health", server.base)).await;
    let waited = started.elapsed();
    assert_eq!(status, 200);
    assert!(
        waited >= HEADER_TIMEOUT / 2 && waited < HEADER_TIMEOUT + SLACK,
        "served after {waited:?}"
    );
    drop(idle);
}

#[tokio::test]
async fn two_hundred_slow_clients_do_not_slow_the_others() {
    let db = TestDb::seeded().await;
    let server = start(&db, &[]).await;
    let mut slow = Vec::new();
    for i in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        let head = format!("GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow-{i}: ");
        stream.write_all(head.as_bytes()).await.unwrap();
        slow.push(stream);
    }
    let c = client();
    for _ in 0..20 {
        let started = tokio::time::Instant::now();
        let (status, _) = get(&c, &format!("{}/api/market/overview", server.base)).await;
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }
    // Every slow one is closed by the header timeout.
    tokio::time::sleep(HEADER_TIMEOUT + SLACK).await;
    let mut open = 0;
    for stream in &mut slow {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(10), stream.peek(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            _ => open += 1,
        }
    }
    assert_eq!(open, 0, "{open} slow connections still open");
}
