//! Upstream providers: who they are (`providers`), where a model name goes
//! (`routing`), the shared HTTP client (`client`), their model lists (`models`,
//! `catalog`), their errors (`errors`), their streams (`sse`) and their health.

pub mod catalog;
pub mod client;
pub mod conn;
pub mod errors;
pub mod health;
pub mod models;
pub mod providers;
pub mod routing;
pub mod sse;
