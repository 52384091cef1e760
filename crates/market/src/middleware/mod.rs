//! What wraps every route, outermost first:
//!
//! 1. [`request_id`]: an id per request (kept from a proxy if usable);
//! 2. a `tracing` span per request carrying that id, and one log line per
//!    answer (`DEBUG` for successes, `INFO` for 4xx, `WARN`/`ERROR` for 5xx);
//! 3. [`json_errors`]: every error answer in the API's JSON, with the id;
//! 4. a timeout on the whole request, a caught panic answered 500;
//! 5. the body's limits: a `Content-Length` over the limit refused at once
//!    (413), a body that stalls refused (408);
//! 6. [`server_names`]: the service's own names made one for the response
//!    cache's key;
//! 7. the sessions layer, and the request's latency for the dashboard.
//!
//! The connection-level limits (header read timeout, connections at once)
//! are the server's: [`crate::serve`].

pub mod counting;
pub mod json_errors;
pub mod request_id;
pub mod server_names;
mod stack;

pub use stack::{around, Around};
