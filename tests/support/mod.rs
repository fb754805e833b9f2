//! Helpers shared by the integration tests under `tests/`.
//!
//! Each test binary compiles this module and uses only part of it, so
//! unused-item warnings here say nothing about dead code.
#![allow(dead_code)]

pub mod browser;
pub mod disk;
pub mod modbus;
pub mod mosquitto;
pub mod mqtt;
pub mod postgres;
pub mod proc;
pub mod site;
