//! Read-your-writes across instances: a user who writes through one
//! instance and reads at once through another sees the write, in every
//! round — although the other instance held the old value in its L1 and
//! hears of the write only through the backplane, a few milliseconds later
//! (more under load: both instances serve other traffic meanwhile).

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

/// Rounds per kind of write: the race this closes was lost in 2–13 % of
/// rounds without it.
const ROUNDS: usize = 30;

#[tokio::test]
async fn the_writer_reads_its_writes_through_another_instance_at_once() {
    let db = TestDb::seeded().await;
    let namespace = unique("market-ryw");
    let a = serve(&db, true, &namespace).await;
    let b = serve(&db, true, &namespace).await;
    let (ua, ub) = (a.url(), b.url());
    let user = user_client(&ua, 30).await;
    let symbols = [db.symbol(1).await, db.symbol(2).await];
    // Other traffic on both instances, as a service has.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic: Vec<_> = (0..12)
        .map(|i| {
            let (c, stop) = (client(), stop.clone());
            let base = if i % 2 == 0 { ua.clone() } else { ub.clone() };
            let symbol = symbols[i % 2].clone();
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    get(&c, &format!("{base}/api/instruments/{symbol}")).await;
                    get(&c, &format!("{base}/api/users/{}/profile", 40 + i)).await;
                }
            })
        })
        .collect();
    let mut stale = Vec::new();
    for round in 0..ROUNDS {
        // B holds the current values in its L1.
        get(&user, &format!("{ub}/api/users/30/profile")).await;
        get(&user, &format!("{ub}/api/watchlists/30")).await;
        get(&user, &format!("{ub}/api/portfolios/30")).await;

        let name = format!("Round {round}");
        let (status, _) = send(
            &user,
            Method::PUT,
            &format!("{ua}/api/users/30/profile"),
            json!({ "display_name": name }),
        )
        .await;
        assert_eq!(status, 200);
        let (_, profile) = get(&user, &format!("{ub}/api/users/30/profile")).await;
        if profile["display_name"] != name.as_str() {
            stale.push(format!(
                "round {round}: profile {}",
                profile["display_name"]
            ));
        }

        let wanted = json!([symbols[round % 2]]);
        let (status, _) = send(
            &user,
            Method::PUT,
            &format!("{ua}/api/watchlists/30"),
            json!({ "symbols": wanted }),
        )
        .await;
        assert_eq!(status, 200);
        let (_, list) = get(&user, &format!("{ub}/api/watchlists/30")).await;
        if list["symbols"] != wanted {
            stale.push(format!("round {round}: watchlist {}", list["symbols"]));
        }

        let (status, filled) = send(
            &user,
            Method::POST,
            &format!("{ua}/api/orders"),
            json!({"user_id": 30, "symbol": symbols[0], "side": "buy", "quantity": 1}),
        )
        .await;
        assert_eq!(status, 201, "{filled}");
        let (_, portfolio) = get(&user, &format!("{ub}/api/portfolios/30")).await;
        let (_, on_a) = get(&user, &format!("{ua}/api/portfolios/30")).await;
        if portfolio["holdings"] != on_a["holdings"] {
            stale.push(format!("round {round}: portfolio"));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in traffic {
        task.await.unwrap();
    }
    assert!(
        stale.is_empty(),
        "{} of {} reads after a write were stale: {stale:?}",
        stale.len(),
        3 * ROUNDS
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
