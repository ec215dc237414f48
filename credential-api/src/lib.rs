//! geoturn-api: the credential API, the REST service that answers web apps with ICE servers
//! (DESIGN.md §1, §5), and the routing tools around it.
//!
//! A request goes: [`server`] (router, middleware) → [`routes`] (handler, with the [`state`]
//! every handler shares) → [`caller`] ([`auth`]: API key or JWT, and [`rate_limit`];
//! [`client_ip`]) → GeoIP and `geoturn_geo::rank_relays` over the
//! [`snapshot`] → [`ice`] (answer) with a credential from [`secrets`]. [`route`] is
//! `geoturn route`, the same ranking for one address on the command line. [`dashboard`] is the
//! operators' page (`/dashboard`) and its live feed (`/v1/events`), both showing the [`fleet`],
//! and its charts' data, the last hour kept by [`history`] (`/v1/history`).

pub mod answers;
pub mod auth;
pub mod auth_reload;
pub mod caller;
pub mod candidates;
pub mod city_rtts;
pub mod client_ip;
pub mod config;
pub mod ctl;
pub mod dashboard;
pub mod error;
pub mod fleet;
pub mod history;
pub mod http_client;
pub mod ice;
pub mod measured;
pub mod mesh;
pub mod metrics;
pub mod openapi;
pub mod rate_limit;
pub mod rfc3339;
pub mod route;
pub mod routes;
pub mod secrets;
pub mod server;
pub mod snapshot;
pub mod state;

pub use config::{ApiConfig, ApiOptions};
pub use server::{RunningApi, start};
