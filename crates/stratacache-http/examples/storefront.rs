//! A small shop: product pages cached by the HTTP layer (shared, tagged,
//! stale-while-revalidate), a per-user page keyed by the session cookie, and
//! sessions in Redis with the id rotated on login.
//!
//! ```sh
//! cargo run -p stratacache-http --example storefront             # serves on 127.0.0.1:3000 (ADDR=...)
//! cargo run -p stratacache-http --example storefront -- --check  # runs a scripted tour against itself and exits
//! ```
//!
//! Then, for example:
//!
//! ```sh
//! curl -i localhost:3000/products/1                         # X-Cache: MISS, then HIT
//! curl -i -X PUT 'localhost:3000/products/1?price=1999'     # invalidates product:1 and products
//! curl -i -c jar 'localhost:3000/login?user=alice' && curl -i -b jar localhost:3000/me
//! ```
//!
//! Uses `REDIS_URL` (default `redis://127.0.0.1:6379`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use stratacache::Cache;
use stratacache_http::{HttpCacheLayer, RedisSessionStore, RouteRule, UserScope};
use tower_sessions::{Expiry, Session, SessionManagerLayer};

#[derive(Clone, Serialize)]
struct Product {
    id: u64,
    name: String,
    price_cents: u64,
}

/// The "database": a map behind a lock, 50 ms per query, counting queries.
#[derive(Clone)]
struct Db {
    products: Arc<RwLock<HashMap<u64, Product>>>,
    queries: Arc<AtomicU64>,
}

impl Db {
    fn seeded() -> Self {
        let products = (1..=3)
            .map(|id| {
                let name = format!("Teapot no. {id}");
                (
                    id,
                    Product {
                        id,
                        name,
                        price_cents: 2_990 + id,
                    },
                )
            })
            .collect();
        Self {
            products: Arc::new(RwLock::new(products)),
            queries: Arc::new(AtomicU64::new(0)),
        }
    }

    async fn query<T>(&self, read: impl FnOnce(&HashMap<u64, Product>) -> T) -> T {
        self.queries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        read(&self.products.read().unwrap())
    }
}

async fn list(State(db): State<Db>) -> Json<Vec<Product>> {
    Json(db.query(|p| p.values().cloned().collect()).await)
}

async fn show(State(db): State<Db>, Path(id): Path<u64>) -> impl IntoResponse {
    match db.query(|p| p.get(&id).cloned()).await {
        Some(product) => Json(product).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[derive(Deserialize)]
struct PriceChange {
    price: u64,
}

async fn update(
    State(db): State<Db>,
    Path(id): Path<u64>,
    Query(change): Query<PriceChange>,
) -> impl IntoResponse {
    let mut products = db.products.write().unwrap();
    match products.get_mut(&id) {
        Some(product) => {
            product.price_cents = change.price;
            Json(product.clone()).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[derive(Deserialize)]
struct Login {
    user: String,
}

async fn login(session: Session, Query(login): Query<Login>) -> Result<&'static str, StatusCode> {
    // A new session id at login: an id planted before login is worthless after it.
    session
        .cycle_id()
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    session
        .insert("user", login.user)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok("logged in")
}

async fn me(session: Session) -> Result<String, StatusCode> {
    let user: Option<String> = session
        .get("user")
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok(match user {
        Some(user) => format!("hello {user}"),
        None => "hello stranger".to_string(),
    })
}

async fn logout(session: Session) -> Result<&'static str, StatusCode> {
    session
        .flush()
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok("logged out")
}

async fn app(redis_url: &str, namespace: &str, db: Db) -> Result<Router> {
    let cache = Cache::builder()
        .namespace(namespace)
        .redis_url(redis_url)
        .build()
        .await?;
    let http_cache = HttpCacheLayer::builder(cache)
        .route(
            "/products",
            RouteRule::new()
                .ttl(Duration::from_secs(30))
                .tag("products"),
        )
        .route(
            "/products/{id}",
            RouteRule::new()
                .ttl(Duration::from_secs(60))
                .stale_for(Duration::from_secs(600))
                .tag("products")
                .tag("product:{id}"),
        )
        .route(
            "/me",
            RouteRule::new()
                .ttl(Duration::from_secs(10))
                .per_user(UserScope::cookie("id")),
        )
        .build()?;
    let connection = redis::aio::ConnectionManager::new(redis::Client::open(redis_url)?).await?;
    let store = RedisSessionStore::new(connection).with_prefix(format!("{namespace}:session:"));
    let sessions = SessionManagerLayer::new(store)
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(time::Duration::hours(1)));
    Ok(Router::new()
        .route("/products", get(list))
        .route("/products/{id}", get(show).put(update))
        .route("/login", get(login))
        .route("/me", get(me))
        .route("/logout", get(logout))
        .with_state(db)
        // The cache inside the sessions layer: the cookie that layer adds to
        // refresh a session is added after the cache has seen the response,
        // so per-user pages can still be stored (keyed by the session id).
        .layer(http_cache)
        .layer(sessions))
}

#[tokio::main]
async fn main() -> Result<()> {
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let check = std::env::args().any(|a| a == "--check");
    let db = Db::seeded();
    let namespace = if check {
        format!("storefront-check-{}", std::process::id())
    } else {
        "storefront".to_string()
    };
    let router = app(&redis_url, &namespace, db.clone()).await?;
    let addr = if check {
        "127.0.0.1:0".to_string()
    } else {
        std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into())
    };
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("bind {addr}"))?;
    let local = listener.local_addr()?;
    if !check {
        println!("storefront on http://{local} (try /products/1, /login?user=alice, /me)");
        axum::serve(listener, router).await?;
        return Ok(());
    }
    tokio::spawn(async move { axum::serve(listener, router).await });
    tour(&format!("http://{local}"), &db).await
}

/// The scripted tour of `--check`: prints each step and fails on a surprise.
async fn tour(base: &str, db: &Db) -> Result<()> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let step = |what: &str, response: &reqwest::Response| {
        let x_cache = response
            .headers()
            .get("x-cache")
            .map_or("-", |v| v.to_str().unwrap_or("?"));
        println!(
            "{what:<40} {} X-Cache: {x_cache:<6} queries so far: {}",
            response.status(),
            db.queries.load(Ordering::Relaxed)
        );
        x_cache.to_string()
    };
    let expect = |got: String, want: &str, what: &str| -> Result<()> {
        if got != want {
            bail!("{what}: X-Cache {got}, expected {want}");
        }
        Ok(())
    };
    let r = http.get(format!("{base}/products/1")).send().await?;
    expect(step("GET /products/1", &r), "MISS", "first read")?;
    let r = http.get(format!("{base}/products/1")).send().await?;
    expect(step("GET /products/1 again", &r), "HIT", "second read")?;
    let r = http
        .put(format!("{base}/products/1?price=1999"))
        .send()
        .await?;
    step("PUT /products/1?price=1999", &r);
    let r = http.get(format!("{base}/products/1")).send().await?;
    expect(
        step("GET /products/1 after the write", &r),
        "MISS",
        "read after write",
    )?;
    let body = r.text().await?;
    if !body.contains("1999") {
        bail!("the write is not visible: {body}");
    }
    let r = http.get(format!("{base}/login?user=alice")).send().await?;
    step("GET /login?user=alice", &r);
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("login sets a session cookie")?
        .to_string();
    for want in ["MISS", "HIT"] {
        let r = http
            .get(format!("{base}/me"))
            .header("cookie", &cookie)
            .send()
            .await?;
        expect(step("GET /me (alice)", &r), want, "alice's page")?;
        let body = r.text().await?;
        if body != "hello alice" {
            bail!("alice got {body:?}");
        }
    }
    let r = http.get(format!("{base}/me")).send().await?;
    step("GET /me (no cookie)", &r);
    let body = r.text().await?;
    if body != "hello stranger" {
        bail!("a stranger got {body:?}");
    }
    let r = http
        .get(format!("{base}/logout"))
        .header("cookie", &cookie)
        .send()
        .await?;
    step("GET /logout", &r);
    println!("tour ok");
    Ok(())
}
