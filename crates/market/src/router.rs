//! Every route of the service, who may call it, and the layers around them.
//!
//! | route | pattern | who |
//! |---|---|---|
//! | `GET /api/instruments?sector=&exchange=` | HTTP response cache | anyone |
//! | `GET /api/instruments/{symbol}` | read-through, negative caching | anyone |
//! | `POST /api/instruments/{symbol}/views` | write-behind | anyone |
//! | `GET /api/stocks/{symbol}/price`, `/depth` | write-through | anyone |
//! | `PUT /api/stocks/{symbol}/price`, `/depth` | write-through | operator |
//! | `GET /api/portfolios/{user_id}` | cache-aside, composed from parts | the user |
//! | `POST /api/orders` | writes, invalidates | the order's user |
//! | `GET`, `PUT /api/watchlists/{user_id}` | cache-aside | the user |
//! | `GET /api/users/{id}/profile` | cache-aside | anyone (private fields: the user) |
//! | `PUT /api/users/{id}/profile` | cache-aside | the user |
//! | `GET /api/trending` | refresh-ahead | anyone |
//! | `GET /api/market/overview` | stale-while-revalidate | anyone |
//! | `POST /login`, `POST /logout`, `GET /api/me` | sessions | anyone, the user |
//! | `POST /admin/invalidate` | invalidation | operator |
//! | `GET /health`, `/metrics`, `/dashboard`, `/dashboard/stats` | operations | anyone |

use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;

use crate::app::Shared;
use crate::error::ApiError;
use crate::middleware::counting::{self, Counting};
use crate::middleware::{around, Around};
use crate::policy::Policy;
use crate::routes::*;
use crate::serve::Limits;

/// The service's router, with every layer ([`crate::middleware`]).
pub fn router(state: Shared, limits: &Limits) -> Router {
    let routes = Router::new()
        .route("/api/instruments", listing(&state))
        .route("/api/instruments/{symbol}", get(instruments::detail))
        .route("/api/instruments/{symbol}/views", post(market::count_view))
        .route(
            "/api/stocks/{symbol}/price",
            get(stocks::price).put(stocks::put_price),
        )
        .route(
            "/api/stocks/{symbol}/depth",
            get(stocks::depth).put(stocks::put_depth),
        )
        .route("/api/portfolios/{user_id}", get(portfolios::portfolio))
        .route("/api/orders", post(portfolios::place_order))
        .route(
            "/api/watchlists/{user_id}",
            get(users::watchlist).put(users::put_watchlist),
        )
        .route(
            "/api/users/{user_id}/profile",
            get(users::profile).put(users::put_profile),
        )
        .route("/api/trending", get(market::trending))
        .route("/api/market/overview", get(market::overview))
        .route("/login", post(sessions::login))
        .route("/logout", post(sessions::logout))
        .route("/api/me", get(sessions::me))
        .route("/admin/invalidate", post(ops::invalidate))
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route("/dashboard", get(ops::dashboard))
        .route("/dashboard/stats", get(ops::stats))
        .fallback(|| async { ApiError::NotFound("no such route".into()) });
    let with = Around {
        sessions: state.sessions.clone(),
        server_names: state.server_names.clone(),
        telemetry: state.telemetry.clone(),
    };
    around(routes, with, limits).with_state(state)
}

/// The listing: the response cache (cache on), with the demo's counts of
/// lookups in front of it and of loads behind it.
fn listing(state: &Shared) -> axum::routing::MethodRouter<Shared> {
    let counting = Counting {
        counters: state.caching.counters().clone(),
        policy: Policy::InstrumentList,
    };
    let handler =
        get(instruments::list).layer(from_fn_with_state(counting.clone(), counting::loads));
    let cached = match &state.listing_cache {
        Some(cache) => handler.layer(cache.clone()),
        None => handler,
    };
    cached.layer(from_fn_with_state(counting, counting::lookups))
}
