//! Who may do what, against `market serve` (the binary): a user's writes
//! and private reads need that user's session (none: 401, another user's:
//! 403), operator routes need the operator token (from `MARKET_ADMIN_TOKEN`
//! or `--admin-token-file`), public market data needs nothing, answers for
//! one user are marked private, and a refused request changes nothing.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

/// Status and body of `method url` with `body` (none for GET) by `c`.
async fn call(c: &reqwest::Client, method: &Method, url: &str, body: &Value) -> (u16, Value) {
    if *method == Method::GET {
        get(c, url).await
    } else {
        send(c, method.clone(), url, body.clone()).await
    }
}

#[tokio::test]
async fn a_users_data_needs_that_users_session() {
    let db = TestDb::seeded().await;
    let server = ServeProcess::start(&db, &unique("market-auth"), &[], &[]).await;
    let base = &server.base;
    let (nobody, owner, other) = (
        client(),
        user_client(base, 5).await,
        user_client(base, 6).await,
    );
    let symbol = db.symbol(3).await;
    let pool = db.pool().await;
    let orders = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM orders WHERE user_id = 5")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let orders_before = orders().await;
    let guarded = [
        (
            Method::GET,
            "/api/portfolios/5".to_string(),
            json!(null),
            200,
        ),
        (
            Method::GET,
            "/api/watchlists/5".to_string(),
            json!(null),
            200,
        ),
        (
            Method::PUT,
            "/api/watchlists/5".to_string(),
            json!({"symbols": [symbol]}),
            200,
        ),
        (
            Method::PUT,
            "/api/users/5/profile".to_string(),
            json!({"display_name": "Five"}),
            200,
        ),
        (
            Method::POST,
            "/api/orders".to_string(),
            json!({"user_id": 5, "symbol": symbol, "side": "buy", "quantity": 1}),
            201,
        ),
    ];
    for (method, path, body, _) in &guarded {
        let url = format!("{base}{path}");
        let (status, answer) = call(&nobody, method, &url, body).await;
        assert_eq!(status, 401, "{method} {path} without a session: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
        let (status, answer) = call(&other, method, &url, body).await;
        assert_eq!(status, 403, "{method} {path} as another user: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    assert_eq!(orders().await, orders_before, "refused orders left nothing");
    for (method, path, body, ok) in &guarded {
        let url = format!("{base}{path}");
        let mut request = owner.request(method.clone(), &url);
        if *method != Method::GET {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status().as_u16(),
            *ok,
            "{method} {path} as its user"
        );
        assert_eq!(
            response
                .headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap()),
            Some("private"),
            "{method} {path}: an answer for one user"
        );
    }
    assert_eq!(orders().await, orders_before + 1);

    // The profile: its public part for anyone, all of it for its user.
    for (who, c) in [("nobody", &nobody), ("another user", &other)] {
        let (status, profile) = get(c, &format!("{base}/api/users/5/profile")).await;
        assert_eq!(
            (status, profile["display_name"].as_str()),
            (200, Some("Five"))
        );
        for private in ["email", "country", "risk_level"] {
            assert!(
                profile.get(private).is_none(),
                "{who} read {private}: {profile}"
            );
        }
    }
    let (_, own) = get(&owner, &format!("{base}/api/users/5/profile")).await;
    assert!(
        own["email"].is_string() && own["risk_level"].is_string(),
        "{own}"
    );
    pool.close().await;
}

#[tokio::test]
async fn operator_routes_need_the_token_and_market_data_stays_public() {
    let db = TestDb::seeded().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let from_file = "token-from-a-file-0123456789";
    std::fs::write(&file, format!("{from_file}\n")).unwrap();
    let namespace = unique("market-op");
    let by_env = ServeProcess::start(&db, &namespace, &[], &[]).await;
    let by_file = ServeProcess::start(
        &db,
        &namespace,
        &["--admin-token-file", file.to_str().unwrap()],
        &[],
    )
    .await;
    let none = ServeProcess::start(&db, &namespace, &[], &[("MARKET_ADMIN_TOKEN", "")]).await;
    let symbol = db.symbol(4).await;
    let routes = [
        (
            Method::POST,
            "/admin/invalidate".to_string(),
            json!({"key": "trending"}),
        ),
        (
            Method::PUT,
            format!("/api/stocks/{symbol}/price"),
            json!({"price": 12.5, "volume": 3}),
        ),
        (
            Method::PUT,
            format!("/api/stocks/{symbol}/depth"),
            json!({"bids": [{"price": 12.0, "quantity": 1}], "asks": []}),
        ),
    ];
    let bearer = |token: &str| {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap()
    };
    let user = user_client(&by_env.base, 5).await;
    for (method, path, body) in &routes {
        for (server, token) in [(&by_env, TOKEN), (&by_file, from_file)] {
            let url = format!("{}{path}", server.base);
            let response = client()
                .request(method.clone(), &url)
                .json(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 401, "{method} {path} without a token");
            assert!(response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"));
            for refused in [&bearer("not-the-token-at-all-00000"), &user] {
                let (status, answer) = send(refused, method.clone(), &url, body.clone()).await;
                assert_eq!(status, 401, "{method} {path}: {answer}");
            }
            let (status, answer) = send(&bearer(token), method.clone(), &url, body.clone()).await;
            assert_eq!(status, 200, "{method} {path} with the token: {answer}");
        }
        // The file's token is that instance's only one.
        let url = format!("{}{path}", by_file.base);
        let (status, _) = send(&bearer(TOKEN), method.clone(), &url, body.clone()).await;
        assert_eq!(status, 401);
        // No token configured: nobody may.
        let url = format!("{}{path}", none.base);
        let (status, answer) = send(&bearer(TOKEN), method.clone(), &url, body.clone()).await;
        assert_eq!(status, 403, "{answer}");
    }

    let public = [
        (Method::GET, "/api/instruments?sector=TECH".to_string()),
        (Method::GET, format!("/api/instruments/{symbol}")),
        (Method::GET, format!("/api/stocks/{symbol}/price")),
        (Method::GET, format!("/api/stocks/{symbol}/depth")),
        (Method::GET, "/api/trending".to_string()),
        (Method::GET, "/api/market/overview".to_string()),
        (Method::POST, format!("/api/instruments/{symbol}/views")),
        (Method::GET, "/api/users/5/profile".to_string()),
    ];
    for (method, path) in &public {
        let (status, answer) = call(
            &client(),
            method,
            &format!("{}{path}", by_env.base),
            &json!(null),
        )
        .await;
        assert_eq!(status, 200, "{method} {path}: {answer}");
    }
}

#[tokio::test]
async fn a_signed_in_client_still_gets_the_shared_listing_from_the_cache() {
    let db = TestDb::seeded().await;
    let server = ServeProcess::start(&db, &unique("market-auth-list"), &[], &[]).await;
    let user = user_client(&server.base, 8).await;
    let url = format!("{}/api/instruments?exchange=NYSE", server.base);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let response = user.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("set-cookie").is_none());
        seen.push(response.headers()["x-cache"].to_str().unwrap().to_string());
    }
    assert_eq!(
        seen,
        ["MISS", "HIT"],
        "the session cookie does not bypass the shared cache"
    );
}
