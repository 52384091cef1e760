//! Malformed and hostile requests against one `market serve`, as raw bytes,
//! reaching every layer: hyper's parser (bytes that are not UTF-8, control
//! characters, a request line that is not HTTP, oversized heads), the
//! router (no route, a method the route lacks), axum's extractors (path,
//! query, JSON body), tower-http's body limit (an announced and a chunked
//! body over it), authorization (no session, another user's, no or a wrong
//! operator token), and the handlers' own validation. Each must be a 4xx
//! with the API's JSON error and a request id, none may hang, the service
//! must stay healthy, and the data the requests aimed at must be unchanged.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;

use super::load::{population, sign_in};
use super::Fleet;
use crate::faults::raw_http::exchange;
use crate::faults::{Group, Row};

/// How long an answer may take before the request counts as hung.
const HANG: Duration = Duration::from_secs(5);

/// Who sends a request.
#[derive(Clone, Copy)]
enum As {
    Nobody,
    /// User 1's session.
    User1,
    /// User 2's session (not the owner of user 1's data).
    User2,
    Operator,
    WrongToken,
}

/// One attempt: what it is, who sends it, the request line's method and
/// target (raw bytes), extra header lines, the body.
struct Attempt {
    name: String,
    who: As,
    method: &'static str,
    target: Vec<u8>,
    headers: String,
    body: Vec<u8>,
}

fn attempt(name: &str, who: As, method: &'static str, target: impl Into<Vec<u8>>) -> Attempt {
    Attempt {
        name: name.to_string(),
        who,
        method,
        target: target.into(),
        headers: String::new(),
        body: Vec::new(),
    }
}

impl Attempt {
    fn json(mut self, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        self.headers.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
        self.body = body;
        self
    }

    fn header(mut self, line: &str) -> Self {
        self.headers.push_str(line);
        self.headers.push_str("\r\n");
        self
    }

    fn bytes(&self, port: u16, cookies: &[String; 2], bearer: &str) -> Vec<u8> {
        let credential = match self.who {
            As::Nobody => String::new(),
            As::User1 => format!("Cookie: {}\r\n", cookies[0]),
            As::User2 => format!("Cookie: {}\r\n", cookies[1]),
            As::Operator => format!("Authorization: {bearer}\r\n"),
            As::WrongToken => "Authorization: Bearer not-the-operator-token-000\r\n".into(),
        };
        let mut out = Vec::new();
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(&self.target);
        out.extend_from_slice(
            format!(
                " HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{credential}{}\r\n",
                self.headers
            )
            .as_bytes(),
        );
        out.extend_from_slice(&self.body);
        out
    }
}

fn attempts(symbol: &str) -> Vec<Attempt> {
    use As::*;
    let long = "A".repeat(5_000);
    let big_body = format!("{{\"display_name\": \"{}\"}}", "x".repeat(100 * 1024));
    let many: Vec<String> = (0..5_000).map(|i| format!("S{i}")).collect();
    let j = |v: serde_json::Value| v.to_string();
    let price = format!("/api/stocks/{symbol}/price");
    let chunk = "a".repeat(70 * 1024);
    vec![
        // hyper's parser, before any route.
        attempt(
            "raw non-UTF-8 bytes in the path",
            Nobody,
            "GET",
            b"/api/instruments/\xff\xfe".to_vec(),
        ),
        attempt(
            "raw non-UTF-8 bytes in the query",
            Nobody,
            "GET",
            b"/api/instruments?sector=\xff".to_vec(),
        ),
        attempt(
            "a control character in the path",
            Nobody,
            "GET",
            b"/api/instru\x01ments".to_vec(),
        ),
        attempt(
            "a request line that is not HTTP",
            Nobody,
            "HELLO",
            b"there".to_vec(),
        ),
        attempt("a 70 KB header", Nobody, "GET", "/health")
            .header(&format!("X-Pad: {}", "a".repeat(70 * 1024))),
        // The router.
        attempt("no such route", Nobody, "GET", "/no/such/route"),
        attempt(
            "a method the route lacks",
            Operator,
            "DELETE",
            price.clone(),
        ),
        // axum's extractors: path, query (on the response cache's route), JSON.
        attempt("a non-numeric id", User1, "GET", "/api/portfolios/abc"),
        attempt("a negative id", User1, "GET", "/api/portfolios/-1"),
        attempt("id 0", User1, "GET", "/api/portfolios/0"),
        attempt(
            "an overflowing id",
            User1,
            "GET",
            "/api/portfolios/99999999999999999999999",
        ),
        attempt(
            "an id in exponent form",
            Nobody,
            "GET",
            "/api/users/1e3/profile",
        ),
        attempt(
            "an unknown symbol",
            Nobody,
            "GET",
            "/api/instruments/NOPE12",
        ),
        attempt(
            "a 5,000-character symbol",
            Nobody,
            "GET",
            format!("/api/instruments/{long}"),
        ),
        attempt("NUL in the path", Nobody, "GET", "/api/instruments/%00"),
        attempt(
            "a percent-encoded non-UTF-8 segment",
            Nobody,
            "GET",
            "/api/instruments/%FF%FE",
        ),
        attempt(
            "an emoji symbol",
            Nobody,
            "GET",
            "/api/instruments/%F0%9F%A6%80",
        ),
        attempt(
            "a traversal",
            Nobody,
            "GET",
            "/api/instruments/..%2F..%2Fetc%2Fpasswd",
        ),
        attempt(
            "key syntax in a symbol",
            Nobody,
            "GET",
            "/api/stocks/%7B%7D%3A*/price",
        ),
        attempt(
            "NUL and invalid UTF-8 filters",
            Nobody,
            "GET",
            "/api/instruments?sector=%00&exchange=%FF",
        ),
        attempt(
            "a 5,000-character filter",
            Nobody,
            "GET",
            format!("/api/instruments?sector={long}"),
        ),
        attempt(
            "a duplicate query parameter",
            Nobody,
            "GET",
            "/api/instruments?sector=TECH&sector=FIN",
        ),
        attempt("truncated JSON", Operator, "PUT", price.clone()).json("{\"price\":"),
        attempt("a mistyped price", Operator, "PUT", price.clone())
            .json(j(serde_json::json!({"price": "abc"}))),
        attempt("a negative price", Operator, "PUT", price.clone())
            .json(j(serde_json::json!({"price": -5, "volume": 1}))),
        attempt("an absurd price", Operator, "PUT", price.clone())
            .json(j(serde_json::json!({"price": 1e308, "volume": -1}))),
        attempt(
            "a body without a JSON content type",
            Operator,
            "PUT",
            price.clone(),
        )
        .header("Content-Type: text/plain")
        .header("Content-Length: 13")
        .body(b"{\"price\": 1}\n".to_vec()),
        attempt(
            "a mistyped display name",
            User1,
            "PUT",
            "/api/users/1/profile",
        )
        .json(j(serde_json::json!({"display_name": 7}))),
        attempt(
            "binary garbage as JSON",
            User1,
            "PUT",
            "/api/users/1/profile",
        )
        .json("\u{0}\u{1}binary"),
        attempt("5,000 watchlist symbols", User1, "PUT", "/api/watchlists/1")
            .json(j(serde_json::json!({"symbols": many}))),
        attempt("symbols as a string", User1, "PUT", "/api/watchlists/1")
            .json(j(serde_json::json!({"symbols": "AAPL"}))),
        attempt("an unknown side", User1, "POST", "/api/orders").json(j(
            serde_json::json!({"user_id": 1, "symbol": symbol, "side": "steal", "quantity": 1}),
        )),
        attempt("a negative quantity", User1, "POST", "/api/orders").json(j(
            serde_json::json!({"user_id": 1, "symbol": symbol, "side": "buy", "quantity": -3}),
        )),
        attempt("an overflowing quantity", User1, "POST", "/api/orders").json(j(
            serde_json::json!({"user_id": 1, "symbol": symbol, "side": "buy", "quantity": 1e20}),
        )),
        attempt(
            "an empty invalidation",
            Operator,
            "POST",
            "/admin/invalidate",
        )
        .json("{}"),
        attempt(
            "two invalidations at once",
            Operator,
            "POST",
            "/admin/invalidate",
        )
        .json(j(serde_json::json!({"key": "a", "tag": "b"}))),
        attempt("an empty prefix", Operator, "POST", "/admin/invalidate")
            .json(j(serde_json::json!({"prefix": ""}))),
        attempt(
            "an unknown invalidation",
            Operator,
            "POST",
            "/admin/invalidate",
        )
        .json(j(serde_json::json!({"flush": true}))),
        attempt("a 5,000-character login", Nobody, "POST", "/login")
            .json(j(serde_json::json!({"username": long, "password": ""}))),
        attempt(
            "views of an unknown symbol",
            Nobody,
            "POST",
            "/api/instruments/NOPE12/views",
        ),
        // tower-http's body limit.
        attempt(
            "10 MB announced, nothing sent",
            User1,
            "PUT",
            "/api/users/1/profile",
        )
        .header("Content-Type: application/json")
        .header("Content-Length: 10000000"),
        attempt("a 100 KB body", User1, "PUT", "/api/users/1/profile").json(big_body),
        attempt("a chunked body over the limit", Nobody, "POST", "/login")
            .header("Content-Type: application/json")
            .header("Transfer-Encoding: chunked")
            .body(format!("{:x}\r\n{chunk}\r\n0\r\n\r\n", chunk.len()).into_bytes()),
        // Authorization.
        attempt(
            "a portfolio without a session",
            Nobody,
            "GET",
            "/api/portfolios/1",
        ),
        attempt(
            "another user's portfolio",
            User2,
            "GET",
            "/api/portfolios/1",
        ),
        attempt(
            "another user's watchlist write",
            User2,
            "PUT",
            "/api/watchlists/1",
        )
        .json(j(serde_json::json!({"symbols": []}))),
        attempt("an order for another user", User2, "POST", "/api/orders").json(j(
            serde_json::json!({"user_id": 1, "symbol": symbol, "side": "buy", "quantity": 1}),
        )),
        attempt(
            "a profile write without a session",
            Nobody,
            "PUT",
            "/api/users/1/profile",
        )
        .json(j(serde_json::json!({"display_name": "x"}))),
        attempt("a forged session cookie", Nobody, "GET", "/api/me")
            .header("Cookie: market_session=../../etc"),
        attempt(
            "a price write without a token",
            Nobody,
            "PUT",
            price.clone(),
        )
        .json(j(serde_json::json!({"price": 1.0}))),
        attempt("a price write by a user", User1, "PUT", price.clone())
            .json(j(serde_json::json!({"price": 1.0}))),
        attempt(
            "an invalidation with a wrong token",
            WrongToken,
            "POST",
            "/admin/invalidate",
        )
        .json(j(serde_json::json!({"prefix": "user:"}))),
    ]
}

impl Attempt {
    fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }
}

pub async fn bad_requests() -> Result<Row> {
    let fleet = Fleet::start(1).await?;
    let base = fleet.instances[0].base.clone();
    let port: u16 = base.rsplit(':').next().unwrap_or("0").parse()?;
    let c = &fleet.client;
    let pop = population(c, std::slice::from_ref(&base), fleet.bearer()).await?;
    let symbol = pop.symbols[0].clone();
    let cookies = [sign_in(c, &base, 1).await?, sign_in(c, &base, 2).await?];
    let snapshot = |path: String| {
        let (url, cookie) = (format!("{base}{path}"), cookies[0].clone());
        async move {
            let r = c.get(url).header("cookie", cookie).send().await?;
            anyhow::Ok((r.status().as_u16(), r.text().await?))
        }
    };
    let watched = [
        format!("/api/stocks/{symbol}/price"),
        "/api/users/1/profile".to_string(),
        "/api/portfolios/1".to_string(),
        "/api/watchlists/1".to_string(),
    ];
    let mut before = Vec::new();
    for path in &watched {
        before.push(snapshot(path.clone()).await?);
    }
    let attempts = attempts(&symbol);
    let bearer = fleet.bearer();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let (mut unclear, mut plain_text, mut hangs) = (Vec::new(), Vec::new(), Vec::new());
    for a in &attempts {
        let answer = exchange(port, &a.bytes(port, &cookies, &bearer), false, HANG).await?;
        *statuses.entry(answer.status).or_default() += 1;
        let text = String::from_utf8_lossy(&answer.body);
        let shown = format!(
            "{} → {} {}",
            a.name,
            answer.status,
            text.chars().take(80).collect::<String>()
        );
        if answer.status == 0 || !answer.closed {
            hangs.push(shown);
            continue;
        }
        let api_json = answer.json().is_some_and(|v| {
            v["error"].as_str().is_some_and(|e| !e.is_empty())
                && v["request_id"].as_str().is_some_and(|id| !id.is_empty())
        });
        if !(400..500).contains(&answer.status) || text.trim().is_empty() {
            unclear.push(shown);
        } else if !api_json {
            plain_text.push(shown);
        }
    }
    let healthy = fleet.health(&base).await.0 == 200;
    let mut changed = 0;
    for (path, old) in watched.iter().zip(&before) {
        if snapshot(path.clone()).await? != *old {
            changed += 1;
        }
    }
    let listed = |v: &Vec<String>| {
        if v.is_empty() {
            String::new()
        } else {
            format!(" ({})", v.join("; "))
        }
    };
    let mut row = Row::new("market-bad-requests", Group::Input, "market serve");
    row.done = format!(
        "{} malformed or hostile requests, as raw bytes, reaching every layer: hyper's parser (raw non-UTF-8 bytes in the path and the query, a control character, a request line that is not HTTP, a 70 KB header), the router (no route, a method the route lacks), axum's extractors (non-numeric, negative, overflowing and 5,000-character ids and symbols, NUL/invalid-UTF-8/emoji/traversal segments, a duplicate query parameter, truncated and mistyped JSON, a body without a JSON type), the handlers' validation (5,000 watchlist symbols, out-of-range orders, bad invalidations, a 5,000-character login), the body limit (10 MB announced and not sent, a 100 KB body, a chunked body over the limit) and authorization (no session, another user's, a forged cookie, no or a wrong operator token, a user on an operator route)",
        attempts.len()
    );
    row.requests = attempts.len() as u64;
    row.errors = format!(
        "statuses {}; {} without a 4xx and a message{}; {} answered other than the API's JSON error with a request id{}; {} hung (no answer and close within {} s){}",
        statuses
            .iter()
            .map(|(s, n)| format!("{s}×{n}"))
            .collect::<Vec<_>>()
            .join(", "),
        unclear.len(),
        listed(&unclear),
        plain_text.len(),
        listed(&plain_text),
        hangs.len(),
        HANG.as_secs(),
        listed(&hangs),
    );
    row.lost = format!(
        "{changed} of {} watched resources changed (price, profile, portfolio, watchlist); service healthy after: {healthy}",
        watched.len()
    );
    row.target = "every request a 4xx with the API's JSON error and a request id; 0 plain-text answers; 0 hangs; nothing changed; the service stays up".into();
    row.met =
        unclear.is_empty() && plain_text.is_empty() && hangs.is_empty() && changed == 0 && healthy;
    Ok(row)
}
