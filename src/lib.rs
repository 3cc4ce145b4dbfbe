//! sd-worker-rbee: a Stable Diffusion image-generation worker.
//!
//! `backend` holds everything that touches tensors (models, samplers, RNG, the queue and the
//! engine); `http` holds the protocol faces that translate their wire types into the one
//! [`backend::request::GenerationRequest`].

pub mod backend;
