//! The reverse proxy example itself: what it forwards, and what it answers
//! when the origin cannot.

mod common;

use common::{get, reply, Origin, Seen};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_answers_502_when_the_origin_cannot_be_reached() {
    // A port that was just free: nothing listens there.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let cache = common::cache(&common::unique("proxy-502")).await;
    let proxy = common::Server::start(common::reverse_proxy::app(
        cache,
        format!("http://{closed}").parse().unwrap(),
    ))
    .await;
    let answer = get(&proxy, "/anything", &[]).await;
    assert_eq!(answer.status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_specific_fields_are_not_forwarded_either_way() {
    let origin = Origin::start(|_: Seen| async move {
        reply(
            200,
            &[
                ("connection", "x-hop".to_string()),
                ("x-hop", "origin side".to_string()),
                ("x-end-to-end", "kept".to_string()),
            ],
            "body",
        )
    })
    .await;
    let proxy = common::proxy(common::cache(&common::unique("proxy-hop")).await, &origin).await;
    let answer = get(
        &proxy,
        "/page",
        &[
            ("connection", "x-client-hop"),
            ("x-client-hop", "client side"),
        ],
    )
    .await;
    assert_eq!(answer.header("x-hop"), "");
    assert_eq!(answer.header("x-end-to-end"), "kept");
    let seen = &origin.requests_for("/page")[0];
    assert_eq!(seen.header("x-client-hop"), None);
}
