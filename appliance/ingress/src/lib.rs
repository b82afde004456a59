//! The appliance's ingress: tenants' TLS reaches their VMs without the
//! provider reading it (SPEC §5).
//!
//! Port 443 reads the TLS ClientHello ([`clienthello`]), routes on its server
//! name through the [`RouteTable`], connects to the VM, replays the bytes it
//! read and then splices both ways (`relay`); TLS is never terminated. Port
//! 80 does the same on the Host header of plain HTTP ([`http`]), so ACME
//! HTTP-01 works inside the VM. The node agent owns the [`RouteTable`]:
//! it adds a route when a contract's VM is active and removes it when the
//! contract ends; [`Ingress`] serves listeners from it.
//!
//! ```no_run
//! # async fn run(routes: std::sync::Arc<dc_ingress::RouteTable>) -> std::io::Result<()> {
//! use dc_ingress::{bind_reuseport, Ingress, IngressConfig};
//! let ingress = Ingress::new(IngressConfig::default(), routes).expect("valid config");
//! let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
//! for listener in bind_reuseport("[::]:443".parse().unwrap(), cores)? {
//!     let ingress = ingress.clone();
//!     tokio::spawn(async move { ingress.serve_tls(listener).await });
//! }
//! for listener in bind_reuseport("[::]:80".parse().unwrap(), 1)? {
//!     let ingress = ingress.clone();
//!     tokio::spawn(async move { ingress.serve_http(listener).await });
//! }
//! # Ok(()) }
//! ```
//!
//! Decisions:
//! - **Never route by guess.** No SNI, no Host, an unknown name, a malformed,
//!   oversized or SSLv2-style hello, duplicate extensions, two host names, a
//!   Host that two parsers could read differently: refused and counted.
//!   Names are normalised one way everywhere ([`HostName`]: lowercase, no
//!   trailing dot, DNS syntax, no IP literals).
//! - **ECH** is refused by default as the SPEC says ([`EchPolicy::Refuse`]).
//!   Current Chrome sends GREASE ECH to servers without an ECH configuration,
//!   and a proxy cannot tell GREASE from real ECH, so this default refuses
//!   those browsers; [`EchPolicy::RouteOuterName`] routes on the outer name
//!   instead (the real name under GREASE, the deployment's public name under
//!   real ECH, never a guess). Whoever owns the SPEC should choose.
//! - **Slow senders**: the hello or head must arrive within
//!   `handshake_timeout_ms` and, after `handshake_grace_ms`, at a minimum
//!   average byte rate; per-source (IPv4 address or IPv6 /64), per-route and
//!   ingress-wide connection limits bound what one party can hold.
//! - **Refusals** close a TLS connection without a word (an alert would be
//!   the ingress speaking TLS for the tenant); an HTTP refusal gets a status
//!   line (400, 408, 421, 431, 502, 503) and a lingering close. A VM that does
//!   not answer in `connect_timeout_ms` is an `upstream_unreachable` refusal.
//! - **Route changes never drop other tenants' connections**: the table is an
//!   atomically swapped snapshot; a contract that leaves the table has its
//!   live connections closed (its access ended with the contract), others are
//!   untouched. Contested names stay with their holder ([`routes`]).
//! - **Cheap accept path**: the runtime is the caller's (multi-threaded
//!   tokio), listeners can be one per core on one port with `SO_REUSEPORT`
//!   ([`bind_reuseport`]); admission is decided before any task or buffer
//!   exists; a connection costs one task and one buffer that is freed once
//!   the hello is replayed; pipes for splice come from a pool and are only
//!   held while data moves.
//! - **PROXY protocol v2** ([`proxy_protocol`]) is written before the
//!   replayed bytes, in the same write, when the route asks for it.
//! - **Metrics** ([`MetricsSnapshot`], serde) count per port (accepted,
//!   routed, refusals by reason) and per route (connections, bytes each way,
//!   refusals).

pub mod clienthello;
pub mod config;
pub mod http;
mod limits;
pub mod metrics;
pub mod name;
pub mod proxy;
pub mod proxy_protocol;
mod relay;
pub mod routes;
mod workers;

pub use clienthello::{fuzz_client_hello, parse_client_hello, ClientHello, HelloError};
pub use config::{ConfigError, EchPolicy, IngressConfig};
pub use http::{fuzz_http_host, parse_request_head, HttpError, RequestHead};
pub use metrics::{MetricsSnapshot, PortMetrics, Refusal, Refusals};
pub use name::{HostName, NameError};
pub use proxy::{bind_reuseport, Ingress};
pub use proxy_protocol::{proxy_v2_header, ProxyV2Header};
pub use routes::{Route, RouteError, RouteMetrics, RouteTable, RouteUpdate};
pub use workers::{Listen, Workers};
