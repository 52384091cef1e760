//! Deploy-time warming of user data: after `warm::user_data`, profiles and
//! watchlists are answered without a load, with exactly what `--cache off`
//! answers, and an update after the warm-up still reaches readers (the
//! warmed entries carry the user's tag).

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn warmed_user_data_is_what_the_database_says_and_stays_invalidatable() {
    let db = TestDb::seeded().await;
    let on = serve(&db, true, &unique("market-warm")).await;
    let off = serve(&db, false, &unique("market-warm-off")).await;
    let users = [1, 2, 17, 99, 150, 200];
    // Each user signed in on each side (the namespaces differ).
    let mut signed_in = Vec::new();
    for user in users {
        let pair = (
            user_client(&on.url(), user).await,
            user_client(&off.url(), user).await,
        );
        signed_in.push((user, pair));
    }

    let warmed = market::warm::user_data(&on.state).await.unwrap();
    assert_eq!(
        (warmed.entries, warmed.failed),
        (400, 0),
        "200 users: a profile and a watchlist each"
    );
    let loads_before = loads(&on);
    for (user, (c_on, c_off)) in &signed_in {
        for path in [
            format!("/api/users/{user}/profile"),
            format!("/api/watchlists/{user}"),
        ] {
            let cached = get(c_on, &format!("{}{path}", on.url())).await;
            let direct = get(c_off, &format!("{}{path}", off.url())).await;
            assert_eq!(cached, direct, "{path}");
            assert_eq!(cached.0, 200, "{path}");
        }
    }
    assert_eq!(loads(&on), loads_before, "every warmed read is a hit");

    let client_of = |user: i64| &signed_in.iter().find(|(u, _)| *u == user).unwrap().1 .0;
    let c = client_of(17);
    let (status, body) = send(
        c,
        Method::PUT,
        &format!("{}/api/users/17/profile", on.url()),
        json!({"display_name": "Warm Ada"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, profile) = get(c, &format!("{}/api/users/17/profile", on.url())).await;
    assert_eq!(profile["display_name"], "Warm Ada");
    let c = client_of(99);
    let (status, body) = send(
        c,
        Method::PUT,
        &format!("{}/api/watchlists/99", on.url()),
        json!({"symbols": [db.symbol(4).await]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = get(c, &format!("{}/api/watchlists/99", on.url())).await;
    assert_eq!(list["symbols"], json!([db.symbol(4).await]));
    on.stop().await.unwrap();
    off.stop().await.unwrap();
}
