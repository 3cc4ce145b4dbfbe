//! Protocol-neutral generation core: one request type, a bounded queue, one engine thread.

pub mod checkpoint;
pub mod engine_observer;
pub mod generation_engine;
pub mod kernels;
pub mod image_io;
pub mod infotext;
pub mod job_progress;
pub mod lora;
pub mod model_library;
pub mod models;
pub mod pipeline;
pub mod preview;
pub mod prompt;
pub mod request;
pub mod request_limits;
pub mod request_queue;
pub mod rng;
pub mod samplers;
