//! VantageEdge proxy: a multi-tenant API gateway on Pingora.
//!
//! Module map (the request path in order): [`edge`] (connection limits, head deadline) →
//! [`safety`] → tenant and [`router`] lookup in a [`snapshot`] ([`hosts`]) → [`access`]
//! (IP rules, CORS) → [`auth`] ([`jwt`]) → [`limits`] → [`upstream`] selection (or a
//! [`cache`] hit) → [`transform`] and [`forwarding`] → [`telemetry`] (metrics, traces,
//! request and access logs); all joined by the phase methods of [`gateway::Gateway`].
//! [`reload`] swaps snapshots ([`source`], [`bus`]), [`ops`] serves `/metrics` and health,
//! [`server`] runs the process from start to graceful shutdown.

pub mod access;
pub mod auth;
pub mod bus;
pub mod cache;
pub mod decision;
pub mod demo_origin;
pub mod edge;
pub mod errors;
pub mod forwarding;
pub mod gateway;
pub mod hosts;
pub mod ids;
pub mod jwt;
pub mod limits;
pub mod ops;
pub mod redis_conn;
pub mod reload;
pub mod router;
pub mod safety;
pub mod server;
pub mod snapshot;
pub mod source;
pub mod telemetry;
pub mod transform;
pub mod upstream;
pub mod versions;
