//! The state of invalidations in this process: what an entry is checked
//! against before it is served or put into L1.
//!
//! - [`log`]: the order of invalidations, so that a read that began before
//!   one cannot fill L1 after it;
//! - [`stamps`]: tag, prefix and namespace invalidations, and since when L1
//!   is trusted;
//! - [`trust`]: whether invalidations are heard at all (the backplane);
//! - [`message`]: what the backplane carries between instances.
//!
//! The write pipeline (`write`) changes this state; the tiers (`tiers`) read it.

pub(crate) mod log;
pub(crate) mod message;
pub(crate) mod stamps;
pub(crate) mod trust;
