//! sd-worker-rbee: a Stable Diffusion image-generation worker.
//!
//! `backend` holds everything that touches tensors (models, samplers, RNG, the queue and the
//! engine); `http` holds the protocol faces that translate their wire types into the one
//! [`backend::request::GenerationRequest`]; `server` wires config, engine, HTTP and heartbeat.

pub mod backend;
pub mod config;
pub mod device;
pub mod heartbeat;
pub mod http;
pub mod metrics;
pub mod server;
