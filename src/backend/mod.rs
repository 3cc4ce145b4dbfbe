//! Protocol-neutral generation core: one request type, a bounded queue, one engine thread.

pub mod request;
pub mod request_limits;
pub mod rng;
pub mod request_queue;
pub mod generation_engine;
pub mod models;
