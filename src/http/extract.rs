//! Extractors whose rejections are our OpenAI-shaped [`ApiError`], and the
//! client-address rule (`X-Forwarded-For` only from `trusted_proxies`).

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use std::net::{IpAddr, SocketAddr};

#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct AppJson<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct AppQuery<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct AppPath<T>(pub T);

/// A JSON body (`application/json`) or a form body (`application/x-www-form-urlencoded`).
pub struct JsonOrForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonOrForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            let axum::Form(v) = axum::Form::<T>::from_request(req, state).await?;
            Ok(JsonOrForm(v))
        } else {
            let axum::Json(v) = axum::Json::<T>::from_request(req, state).await?;
            Ok(JsonOrForm(v))
        }
    }
}

/// `[server] trusted_proxies`: addresses and ranges (`10.0.0.0/8`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// One entry: an address (`127.0.0.1`, `::1`) or a range in CIDR
    /// notation (`172.16.0.0/12`, `fd00::/8`).
    pub fn entry(s: &str) -> Option<ipnet::IpNet> {
        let s = s.trim();
        s.parse::<ipnet::IpNet>()
            .ok()
            .or_else(|| s.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
    }

    /// The entries that parse ([`crate::config::Config::validate`] refuses
    /// the others at start).
    pub fn parse(entries: &[String]) -> TrustedProxies {
        TrustedProxies(entries.iter().filter_map(|e| Self::entry(e)).collect())
    }

    /// Whether `a` is a trusted proxy. An IPv4 client of a dual-stack
    /// listener (`::ffff:10.0.0.1`) is matched as its IPv4 address.
    pub fn contains(&self, a: &IpAddr) -> bool {
        let a = a.to_canonical();
        self.0.iter().any(|n| n.contains(&a))
    }
}

/// The client's address: the peer, or the right-most `X-Forwarded-For` entry
/// that is not itself a trusted proxy when the peer is one.
pub fn client_addr(state: &AppState, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !state.trusted_proxies.contains(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .map(|a| a.to_canonical())
        .collect::<Vec<_>>();
    forwarded
        .iter()
        .rev()
        .find(|a| !state.trusted_proxies.contains(a))
        .or(forwarded.first())
        .copied()
        .unwrap_or(peer)
}

/// The TCP peer address (127.0.0.1 when the server runs without connect info).
pub struct Peer(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Ok(Peer(ip))
    }
}

/// For PATCH bodies: distinguishes a field left out (`None`) from one set to
/// null (`Some(None)`).
pub fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::TrustedProxies;
    use std::net::IpAddr;

    #[test]
    fn trusted_proxies_are_addresses_and_ranges() {
        let t = TrustedProxies::parse(&[
            "127.0.0.1".into(),
            "172.16.0.0/12".into(),
            "fd00::/8".into(),
            " ::1 ".into(),
        ]);
        let has = |a: &str| t.contains(&a.parse::<IpAddr>().unwrap());
        for yes in [
            "127.0.0.1",
            "172.16.0.1",
            "172.31.255.254",
            "fd12::7",
            "::1",
            // An IPv4 peer of a dual-stack listener.
            "::ffff:172.20.0.3",
            "::ffff:127.0.0.1",
        ] {
            assert!(has(yes), "{yes}");
        }
        for no in ["127.0.0.2", "172.32.0.1", "10.0.0.1", "fe80::1", "::2"] {
            assert!(!has(no), "{no}");
        }
        for bad in ["10.0.0.0/33", "localhost", "10.0.0.0/8/8", ""] {
            assert!(TrustedProxies::entry(bad).is_none(), "{bad}");
        }
    }
}
