//! The HTTP routes, one file per resource. Each handler validates its input,
//! reads or writes through [`crate::caching::Caching`] with its policy, and
//! answers JSON or an [`crate::error::ApiError`].

pub mod instruments;
pub mod market;
pub mod ops;
pub mod portfolios;
pub mod sessions;
pub mod stocks;
pub mod users;
