//! A1111's prompt language, protocol-neutral: attention weights, `BREAK`, prompt editing and
//! alternation schedules, extra-network tags (`<lora:…>`), textual-inversion embeddings, 75-token chunking, and the weighted
//! text encoding that puts them together.

pub mod chunking;
pub mod embeddings;
pub mod lora_tags;
pub mod parser;
pub mod schedule;
pub mod weighted;
