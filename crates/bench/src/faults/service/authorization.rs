//! Authorization of `market serve`, from outside: every user-scoped write
//! and private read with no session, another user's session and the
//! owner's; every operator route with no token, a wrong token, a user's
//! session and the operator's token; every public route anonymously. Each
//! answer must be the specified status in the API's JSON, a refused write
//! must change nothing, and a user's private fields must reach no one else.

use anyhow::Result;
use reqwest::Method;
use serde_json::{json, Value};

use super::load::{population, sign_in};
use super::Fleet;
use crate::faults::{Group, Row};

/// Who sends a request.
#[derive(Clone, Copy, Debug)]
enum Who {
    Nobody,
    Owner,
    OtherUser,
    WrongToken,
    Operator,
}

pub async fn authorization() -> Result<Row> {
    let fleet = Fleet::start(1).await?;
    let base = fleet.instances[0].base.clone();
    let c = &fleet.client;
    let pop = population(c, std::slice::from_ref(&base), fleet.bearer()).await?;
    let symbol = pop.symbols[1].clone();
    let (owner, other) = (sign_in(c, &base, 7).await?, sign_in(c, &base, 8).await?);
    let send = |who: Who, method: Method, path: String, body: Option<Value>| {
        let mut request = c.request(method, format!("{base}{path}"));
        request = match who {
            Who::Nobody => request,
            Who::Owner => request.header("cookie", &owner),
            Who::OtherUser => request.header("cookie", &other),
            Who::WrongToken => request.header("authorization", "Bearer not-the-token-0123456789"),
            Who::Operator => request.header("authorization", fleet.bearer()),
        };
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            anyhow::Ok((status, body))
        }
    };
    let user_routes: Vec<(Method, String, Option<Value>, u16)> = vec![
        (Method::GET, "/api/portfolios/7".into(), None, 200),
        (Method::GET, "/api/watchlists/7".into(), None, 200),
        (
            Method::PUT,
            "/api/watchlists/7".into(),
            Some(json!({"symbols": [symbol]})),
            200,
        ),
        (
            Method::PUT,
            "/api/users/7/profile".into(),
            Some(json!({"display_name": "Seven"})),
            200,
        ),
        (
            Method::POST,
            "/api/orders".into(),
            Some(json!({"user_id": 7, "symbol": symbol, "side": "buy", "quantity": 1})),
            201,
        ),
    ];
    let operator_routes: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::POST,
            "/admin/invalidate".into(),
            Some(json!({"key": "trending"})),
        ),
        (
            Method::PUT,
            format!("/api/stocks/{symbol}/price"),
            Some(json!({"price": 42.5, "volume": 1})),
        ),
        (
            Method::PUT,
            format!("/api/stocks/{symbol}/depth"),
            Some(json!({"bids": [{"price": 42.0, "quantity": 1}], "asks": []})),
        ),
    ];
    let public: Vec<String> = vec![
        "/api/instruments?sector=TECH".into(),
        format!("/api/instruments/{symbol}"),
        format!("/api/stocks/{symbol}/price"),
        format!("/api/stocks/{symbol}/depth"),
        "/api/trending".into(),
        "/api/market/overview".into(),
        "/api/users/7/profile".into(),
    ];

    let orders_before = fleet.orders_of(7).await?;
    let mut checks = 0;
    let mut wrong = Vec::new();
    let mut expect = |what: String, got: (u16, Value), status: u16| {
        checks += 1;
        let json = got.0 < 400 || got.1["error"].is_string() && got.1["request_id"].is_string();
        if got.0 != status || !json {
            wrong.push(format!(
                "{what}: {} {}",
                got.0,
                got.1.to_string().chars().take(80).collect::<String>()
            ));
        }
    };
    // Refusals first, so that a refused write that changed something shows.
    for (method, path, body, _) in &user_routes {
        for (who, status) in [(Who::Nobody, 401), (Who::OtherUser, 403)] {
            let got = send(who, method.clone(), path.clone(), body.clone()).await?;
            expect(format!("{method} {path} as {who:?}"), got, status);
        }
    }
    for (method, path, body) in &operator_routes {
        for who in [Who::Nobody, Who::WrongToken, Who::Owner] {
            let got = send(who, method.clone(), path.clone(), body.clone()).await?;
            expect(format!("{method} {path} as {who:?}"), got, 401);
        }
    }
    let refused_orders_left = fleet.orders_of(7).await? - orders_before;
    for (method, path, body, status) in &user_routes {
        let got = send(Who::Owner, method.clone(), path.clone(), body.clone()).await?;
        expect(format!("{method} {path} as the owner"), got, *status);
    }
    for (method, path, body) in &operator_routes {
        let got = send(Who::Operator, method.clone(), path.clone(), body.clone()).await?;
        expect(format!("{method} {path} as the operator"), got, 200);
    }
    let mut leaked = 0;
    for path in &public {
        for who in [Who::Nobody, Who::OtherUser] {
            let got = send(who, Method::GET, path.clone(), None).await?;
            if path.contains("/users/") && got.1.get("email").is_some() {
                leaked += 1;
            }
            expect(format!("GET {path} as {who:?}"), got, 200);
        }
    }
    let mut row = Row::new("market-authorization", Group::Security, "market serve");
    row.done = format!(
        "{} user-scoped writes and private reads with no session, another user's and the owner's; {} operator routes with no token, a wrong one, a user's session and the operator's token (`MARKET_ADMIN_TOKEN`); {} public routes anonymously and as another user",
        user_routes.len(),
        operator_routes.len(),
        public.len()
    );
    row.requests = checks as u64;
    row.errors = format!(
        "{} answers other than specified (no session 401, another user's 403, no or a wrong token 401, the owner's and the operator's 2xx, public 200; every refusal the API's JSON with a request id){}",
        wrong.len(),
        if wrong.is_empty() { String::new() } else { format!(": {}", wrong.join("; ")) }
    );
    row.lost = format!(
        "orders placed by refused requests: {refused_orders_left}; private profile fields served to others: {leaked}"
    );
    row.target = "every answer as specified; refused writes change nothing; no private field reaches another".into();
    row.met = wrong.is_empty() && refused_orders_left == 0 && leaked == 0;
    Ok(row)
}
