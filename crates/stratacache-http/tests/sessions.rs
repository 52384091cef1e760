//! The Redis session store under tower-sessions, against real axum servers
//! and the machine's Redis: login, rotation, logout, expiry, two instances.

mod common;

use std::str::FromStr;

use axum::extract::Query;
use axum::routing::get;
use axum::Router;
use common::{client, header, Server};
use redis::AsyncCommands;
use stratacache_http::RedisSessionStore;
use tower_sessions::session::{Id, Record};
use tower_sessions::{Expiry, Session, SessionManagerLayer, SessionStore};

type Store = RedisSessionStore<redis::aio::ConnectionManager>;

async fn store(prefix: &str) -> Store {
    let client = redis::Client::open(common::redis_url()).unwrap();
    let connection = redis::aio::ConnectionManager::new(client).await.unwrap();
    RedisSessionStore::new(connection).with_prefix(prefix)
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(common::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[derive(serde::Deserialize)]
struct Login {
    user: String,
}

async fn start(store: Store, expiry: Expiry) -> Server {
    let sessions = SessionManagerLayer::new(store)
        .with_secure(false)
        .with_expiry(expiry);
    let app = Router::new()
        .route(
            "/visit",
            get(|session: Session| async move {
                let visits: u32 = session.get("visits").await.unwrap().unwrap_or(0);
                session.insert("visits", visits + 1).await.unwrap();
                format!("visits {}", visits + 1)
            }),
        )
        .route(
            "/login",
            get(|session: Session, Query(login): Query<Login>| async move {
                // A new id on login: a session id seen before login (fixation) is worthless after.
                session.cycle_id().await.unwrap();
                session.insert("user", login.user).await.unwrap();
                "logged in"
            }),
        )
        .route(
            "/whoami",
            get(|session: Session| async move {
                let user: Option<String> = session.get("user").await.unwrap();
                user.unwrap_or_else(|| "anonymous".into())
            }),
        )
        .route(
            "/logout",
            get(|session: Session| async move {
                session.flush().await.unwrap();
                "logged out"
            }),
        )
        .layer(sessions);
    Server::start(app).await
}

/// GET `path` with session cookie `id`; returns (body, the id a `Set-Cookie` gave, if any).
async fn call(server: &Server, path: &str, id: Option<&str>) -> (String, Option<String>) {
    let mut request = client().get(server.url(path));
    if let Some(id) = id {
        request = request.header("cookie", format!("id={id}"));
    }
    let response = request.send().await.unwrap();
    let set_cookie = header(&response, "set-cookie");
    let new_id = set_cookie
        .strip_prefix("id=")
        .map(|rest| rest.split(';').next().unwrap().to_string())
        .filter(|id| !id.is_empty());
    (response.text().await.unwrap(), new_id)
}

fn key(store: &Store, id: &str) -> String {
    store.key(&Id::from_str(id).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_rotates_the_id_and_logout_deletes_the_session() {
    let prefix = format!("{}:", common::unique("sessions"));
    let store = store(&prefix).await;
    let server = start(
        store.clone(),
        Expiry::OnInactivity(time::Duration::minutes(5)),
    )
    .await;
    let mut redis = redis().await;

    let (body, before) = call(&server, "/visit", None).await;
    assert_eq!(body, "visits 1");
    let before = before.expect("a session cookie");
    assert!(redis.exists::<_, bool>(key(&store, &before)).await.unwrap());

    let (_, after) = call(&server, "/login?user=alice", Some(&before)).await;
    let after = after.expect("a new session cookie on login");
    assert_ne!(after, before, "login rotates the session id");
    assert!(!redis.exists::<_, bool>(key(&store, &before)).await.unwrap());
    assert_eq!(call(&server, "/whoami", Some(&after)).await.0, "alice");
    assert_eq!(call(&server, "/whoami", Some(&before)).await.0, "anonymous");
    assert_eq!(
        call(&server, "/visit", Some(&after)).await.0,
        "visits 2",
        "data survives rotation"
    );

    assert_eq!(call(&server, "/logout", Some(&after)).await.0, "logged out");
    assert!(!redis.exists::<_, bool>(key(&store, &after)).await.unwrap());
    assert_eq!(call(&server, "/whoami", Some(&after)).await.0, "anonymous");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_the_redis_ttl() {
    let prefix = format!("{}:", common::unique("sessions"));
    let store = store(&prefix).await;
    let server = start(
        store.clone(),
        Expiry::OnInactivity(time::Duration::seconds(1)),
    )
    .await;
    let mut redis = redis().await;
    let (_, id) = call(&server, "/login?user=bob", None).await;
    let id = id.unwrap();
    let ttl_ms: i64 = redis.pttl(key(&store, &id)).await.unwrap();
    assert!((1..=1_000).contains(&ttl_ms), "PTTL {ttl_ms}");
    assert_eq!(call(&server, "/whoami", Some(&id)).await.0, "bob");
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    assert!(
        !redis.exists::<_, bool>(key(&store, &id)).await.unwrap(),
        "Redis expired it"
    );
    assert_eq!(call(&server, "/whoami", Some(&id)).await.0, "anonymous");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_sessions() {
    let prefix = format!("{}:", common::unique("sessions"));
    let expiry = Expiry::OnInactivity(time::Duration::minutes(5));
    let a = start(store(&prefix).await, expiry).await;
    let b = start(store(&prefix).await, expiry).await;
    let (_, id) = call(&a, "/login?user=carol", None).await;
    let id = id.unwrap();
    assert_eq!(call(&b, "/whoami", Some(&id)).await.0, "carol");
    assert_eq!(call(&b, "/visit", Some(&id)).await.0, "visits 1");
    assert_eq!(call(&a, "/visit", Some(&id)).await.0, "visits 2");
    call(&b, "/logout", Some(&id)).await;
    assert_eq!(call(&a, "/whoami", Some(&id)).await.0, "anonymous");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_never_overwrites_an_existing_session() {
    let prefix = format!("{}:", common::unique("sessions"));
    let store = store(&prefix).await;
    let expiry_date = time::OffsetDateTime::now_utc() + time::Duration::minutes(1);
    let mut first = Record {
        id: Id::default(),
        data: Default::default(),
        expiry_date,
    };
    first.data.insert("owner".into(), "first".into());
    store.create(&mut first).await.unwrap();
    let mut second = Record {
        id: first.id,
        data: Default::default(),
        expiry_date,
    };
    second.data.insert("owner".into(), "second".into());
    store.create(&mut second).await.unwrap();
    assert_ne!(second.id, first.id, "a colliding id is replaced");
    let loaded = store.load(&first.id).await.unwrap().unwrap();
    assert_eq!(loaded.data["owner"], "first");
    assert_eq!(
        store.load(&second.id).await.unwrap().unwrap().data["owner"],
        "second"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_session_is_a_typed_error() {
    let prefix = format!("{}:", common::unique("sessions"));
    let store = store(&prefix).await;
    let id = Id::default();
    let mut redis = redis().await;
    let _: () = redis.set_ex(store.key(&id), "{not json", 60).await.unwrap();
    let err = store.load(&id).await.unwrap_err();
    assert!(
        matches!(err, tower_sessions::session_store::Error::Decode(_)),
        "{err}"
    );
    let _: () = redis.del(store.key(&id)).await.unwrap();
}
