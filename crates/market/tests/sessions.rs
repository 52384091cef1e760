//! Sessions: log in, the session follows the user to another instance
//! (it lives in Redis), log out ends it everywhere; forged cookies are refused.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn sessions_log_in_follow_the_user_across_instances_and_log_out() {
    let db = TestDb::seeded().await;
    let namespace = unique("market-sess");
    let a = serve(&db, true, &namespace).await;
    let b = serve(&db, true, &namespace).await;
    let c = client();
    let (status, _) = send(
        &c,
        Method::POST,
        &format!("{}/login", a.url()),
        json!({"username": "user9", "password": "wrong"}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = get(&c, &format!("{}/api/me", a.url())).await;
    assert_eq!(status, 401);

    let response = c
        .post(format!("{}/login", a.url()))
        .json(&json!({"username": "user9", "password": "password9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("Max-Age=1800"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let me = |url: String| {
        let pair = pair.clone();
        let c = c.clone();
        async move {
            let r = c
                .get(format!("{url}/api/me"))
                .header("cookie", pair)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let (status, body) = me(a.url()).await;
    assert_eq!((status, body["username"].as_str()), (200, Some("user9")));
    let (status, body) = me(b.url()).await;
    assert_eq!(
        (status, body["user_id"].as_i64()),
        (200, Some(9)),
        "the session lives in Redis, shared"
    );

    // Logging in again with the session's cookie rotates the id: the old
    // one no longer names a session, the new one does, on both instances.
    let response = c
        .post(format!("{}/login", b.url()))
        .header("cookie", pair.clone())
        .json(&json!({"username": "user9", "password": "password9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let rotated = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_ne!(rotated, pair, "login must issue a new id");
    assert_eq!(me(a.url()).await.0, 401, "the old id is gone");
    let pair = rotated;
    let me = |url: String| {
        let pair = pair.clone();
        let c = c.clone();
        async move {
            c.get(format!("{url}/api/me"))
                .header("cookie", pair)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(me(a.url()).await, 200);

    let response = c
        .post(format!("{}/logout", b.url()))
        .header("cookie", pair.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        me(a.url()).await,
        401,
        "logout deletes the session everywhere"
    );
    assert_eq!(me(b.url()).await, 401);
    let forged = c
        .get(format!("{}/api/me", a.url()))
        .header("cookie", "market_session=../../etc")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
