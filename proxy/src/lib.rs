//! VantageEdge proxy: a multi-tenant API gateway on Pingora.
//!
//! Module map (the request path in order): [`safety`] → tenant and [`router`] lookup in a
//! [`snapshot`] → [`access`] (IP rules, CORS) → [`auth`] → [`limits`] → [`upstream`]
//! selection (or a [`cache`] hit) → [`transform`] → [`metrics`] and access log; all
//! joined by the phase methods of [`gateway::Gateway`]. [`reload`] swaps snapshots, [`ops`]
//! serves `/metrics` and health, [`server`] wires Pingora services together.

pub mod access;
pub mod auth;
pub mod bus;
pub mod cache;
pub mod demo_origin;
pub mod edge;
pub mod errors;
pub mod forwarding;
pub mod gateway;
pub mod hosts;
pub mod jwt;
pub mod limits;
pub mod metrics;
pub mod ops;
pub mod otel;
pub mod reload;
pub mod request_log;
pub mod router;
pub mod safety;
pub mod server;
pub mod snapshot;
pub mod source;
pub mod trace;
pub mod transform;
pub mod upstream;
