//! (in progress)

pub mod auth;
