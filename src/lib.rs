//! provisiond: an IoT device provisioning server.
//!
//! A device asks [`api`] for a single-use provisioning token ([`token`]), kept in a
//! [`store`] (Redis, or memory by policy); it then trades the token and a CSR for a
//! certificate signed by the [`ca`], whose revocation list [`crl`] publishes. [`auth`]
//! decides who may onboard, [`ratelimit`]
//! how often; [`metrics`] and [`audit`] say what happened. [`startup`] wires the parts
//! from [`config`]. The fleet side ([`cli`], [`client`], [`device`]) lives in the same
//! crate.

pub mod activity;
pub mod api;
pub mod audit;
pub mod auth;
pub mod ca;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod crl;
pub mod crypto;
pub mod device;
pub mod domain;
pub mod enrollment_code;
pub mod error;
pub mod fsutil;
pub mod groups;
pub mod history;
pub mod hook;
pub mod lifecycle;
pub mod metrics;
pub mod mqtt;
pub mod net;
pub mod ratelimit;
pub mod registry;
pub mod request_facts;
pub mod secret;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod timefmt;
pub mod token;
