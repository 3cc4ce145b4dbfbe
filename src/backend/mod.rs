//! Protocol-neutral generation core: one request type, a bounded queue, one engine thread.

pub mod request;
pub mod rng;
pub mod image_io;
pub mod infotext;
