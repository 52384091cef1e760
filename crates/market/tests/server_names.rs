//! Two `market serve` instances addressed directly (`127.0.0.1:A`,
//! `127.0.0.1:B`) share the listing's response-cache entries: a stampede of
//! identical requests over both costs one database load. A host that is not
//! one of the service's names is keyed apart.

mod common;

use std::time::Duration;

use common::*;
use futures::future::join_all;

#[tokio::test]
async fn instances_addressed_directly_share_listing_entries() {
    let db = TestDb::seeded().await;
    let namespace = unique("market-hosts");
    let a = serve(&db, true, &namespace).await;
    let b = serve(&db, true, &namespace).await;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(200)
        .build()
        .unwrap();
    let loads = || {
        let count = |s: &market::server::RunningServer| {
            s.state
                .caching
                .counters()
                .by_resource()
                .get(&market::policy::Policy::InstrumentList)
                .map_or(0, |r| r.loads)
        };
        count(&a) + count(&b)
    };
    // 200 identical requests at once, half to each instance, on a cold key.
    let requests = (0..200).map(|i| {
        let base = if i % 2 == 0 { a.url() } else { b.url() };
        let c = c.clone();
        async move {
            let response = c
                .get(format!("{base}/api/instruments?sector=TECH"))
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    });
    let answers = join_all(requests).await;
    assert!(answers.iter().all(|(status, _)| *status == 200));
    assert!(
        answers.windows(2).all(|w| w[0].1 == w[1].1),
        "one answer for all"
    );
    assert_eq!(loads(), 1, "one database load for both instances");

    // `localhost` is one of the names too; `elsewhere.example` is not.
    let by_name = c
        .get(format!(
            "http://localhost:{}/api/instruments?sector=TECH",
            a.addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(by_name.headers()["x-cache"], "HIT");
    let other_host = c
        .get(format!("{}/api/instruments?sector=TECH", b.url()))
        .header("host", "elsewhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(other_host.headers()["x-cache"], "MISS", "keyed apart");
    assert_eq!(loads(), 2);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
