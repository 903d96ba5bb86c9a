//! Upstream providers: who they are (`providers`), where a model name goes
//! (`routing`).

pub mod providers;
pub mod routing;
