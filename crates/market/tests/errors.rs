//! Every error answer of `market serve` is the API's JSON error with the
//! right status and the request's id, whichever layer made it: hyper (a
//! request it cannot parse), the router (no route, a method not allowed),
//! axum's extractors (query, path, JSON body), the response cache's route,
//! tower-http's limits. Sent as raw bytes where a client library would
//! refuse to send them.

mod common;

use std::time::Duration;

use common::*;

/// Send `request` raw; its status and JSON body (Null if not JSON).
async fn answer(port: u16, request: &[u8]) -> (u16, serde_json::Value, String) {
    let (raw, _, _) = raw_exchange(port, request, Duration::from_secs(5)).await;
    let (status, body) = parse_raw(&raw);
    (status, body, String::from_utf8_lossy(&raw).into_owned())
}

fn get_of(target: &[u8]) -> Vec<u8> {
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    request
}

#[tokio::test]
async fn every_layer_answers_errors_in_the_apis_json() {
    let db = TestDb::seeded().await;
    let server = ServeProcess::start(&db, &unique("market-errors"), &[], &[]).await;
    let port = server.port;
    let symbol = db.symbol(2).await;
    let long_header = format!("X-Pad: {}\r\n", "a".repeat(70 * 1024));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        // hyper, before any routing.
        ("raw non-UTF-8 bytes in the path", get_of(b"/api/instruments/\xff\xfe"), 400),
        ("raw non-UTF-8 bytes in the query", get_of(b"/api/instruments?sector=\xff"), 400),
        ("a control character in the path", get_of(b"/api/instru\x01ments"), 400),
        ("not HTTP at all", b"HELLO\r\n\r\n".to_vec(), 400),
        (
            "a 70 KB header",
            format!("GET /health HTTP/1.1\r\nHost: localhost\r\n{long_header}Connection: close\r\n\r\n").into_bytes(),
            431,
        ),
        // The router.
        ("no such route", get_of(b"/no/such/route"), 404),
        (
            "a method the route does not have",
            format!("DELETE /api/stocks/{symbol}/price HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").into_bytes(),
            405,
        ),
        // axum's extractors, on the response cache's route too.
        ("a duplicate query parameter (cached route)", get_of(b"/api/instruments?sector=TECH&sector=FIN"), 400),
        ("an invalid filter (cached route)", get_of(b"/api/instruments?sector=%00"), 400),
        ("a percent-encoded non-UTF-8 path segment", get_of(b"/api/instruments/%FF%FE"), 400),
        (
            "a JSON body that is not JSON",
            b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{\"a\":".to_vec(),
            400,
        ),
        (
            "a body without a JSON content type",
            b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".to_vec(),
            400,
        ),
        (
            "a chunked body over the limit",
            {
                let chunk = "a".repeat(70 * 1024);
                format!("POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n", chunk.len()).into_bytes()
            },
            413,
        ),
    ];
    let mut wrong = Vec::new();
    for (name, request, expected) in &cases {
        let (status, body, raw) = answer(port, request).await;
        let json = body["error"].as_str().is_some_and(|e| !e.is_empty())
            && body["request_id"].as_str().is_some_and(|id| !id.is_empty());
        let header_id = raw
            .lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .map(str::trim);
        if status != *expected || !json || header_id != body["request_id"].as_str() {
            wrong.push(format!(
                "{name}: expected {expected}, got {}",
                raw.chars().take(300).collect::<String>()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // And the service is fine after all of them.
    let (status, _) = get(&client(), &format!("{}/health", server.base)).await;
    assert_eq!(status, 200);
}
