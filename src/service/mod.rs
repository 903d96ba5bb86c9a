//! Logic shared by the HTTP handlers and the CLI; it calls `db` and never `http`.

pub mod accounts;
mod answer;
pub mod credits;
pub mod oauth;
pub mod plans;
mod prompt;
pub mod proxy;
mod request;
pub mod stream;
