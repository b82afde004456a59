//! `dc-ledger`: the ledger core served on loopback, the embedded default of
//! the appliance and `dcctl`.
//!
//! Updates arrive as signed envelopes (sender key, method, Candid argument,
//! nonce, expiry) and are answered only once journaled and synced; queries
//! are plain Candid. See [`store`] for durability and [`http`] for the routes.

pub mod genesis;
pub mod http;
pub mod launch;
pub mod nonces;
pub mod service;
pub mod store;

pub use service::{Clock, Service, SystemClock};
