//! cellctl: take one VMware Cloud Director cell safely out of service, upgrade it, report back.
//!
//! `main.rs` only calls [`run`]; `docs/architecture.md` maps the modules and their rules.

mod adapters;
mod app;
mod cli;
mod commands;
mod config;
mod engine;
pub mod error;
mod model;
mod output;
mod store;

pub use app::run;
