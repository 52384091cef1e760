//! Where parts built elsewhere plug in. Each seam is a trait with the
//! implementation the service uses today; the replacement named in each
//! module swaps in without touching the routes.

pub mod listing;
pub mod sessions;
pub mod views;
