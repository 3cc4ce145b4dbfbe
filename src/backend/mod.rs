//! Protocol-neutral generation core: one request type, a bounded queue, one engine thread.

pub mod models;
pub mod preview;
pub mod request;
pub mod rng;
