//! Everything about running WebAssembly plugins: finding them, compiling
//! them (with a cache), sandboxing and supervising their instances.

pub mod bindings;
pub mod catalog;
mod deadline;
pub mod engine;
mod guest_stderr;
pub mod inspect;
mod log_budget;
pub mod reload;
pub mod runtime;
pub mod state;
pub mod supervisor;
pub mod tag_tables;
pub mod versions;
mod watch;
