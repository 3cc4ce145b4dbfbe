//! Model families and networks, loaded from diffusers-layout folders.

pub mod hub;
