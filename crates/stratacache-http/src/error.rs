//! The errors of configuring the layer.

/// A configuration mistake, reported when the layer is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A route pattern cannot be parsed.
    #[error("invalid route pattern {pattern:?}: {reason}")]
    InvalidRoute {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    InvalidSetting(&'static str),
}
