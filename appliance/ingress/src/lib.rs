//! The appliance's ingress: tenants' TLS reaches their VMs without the
//! provider reading it (SPEC §5).
//!
//! Port 443 reads the TLS ClientHello ([`clienthello`]), routes on its server
//! name through the [`RouteTable`], connects to the VM, replays the bytes it
//! read and then relays both ways (`relay`: small bursts copied, bulk ones
//! spliced); TLS is never terminated. Port 80 does the same on the Host header of plain HTTP ([`http`]), so ACME
//! HTTP-01 works inside the VM. The node agent owns the [`RouteTable`]:
//! it adds a route when a contract's VM is active and removes it when the
//! contract ends; [`Ingress`] serves listeners from it.
//!
//! ```no_run
//! # fn run(routes: std::sync::Arc<dc_ingress::RouteTable>) -> std::io::Result<()> {
//! use dc_ingress::{Ingress, IngressConfig, Listen};
//! let ingress = Ingress::new(IngressConfig::default(), routes).expect("valid config");
//! // One thread per core, each with its own runtime and listeners.
//! let workers = ingress.spawn_workers(Listen {
//!     tls: Some("[::]:443".parse().unwrap()),
//!     http: Some("[::]:80".parse().unwrap()),
//!     threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
//! })?;
//! // ... serves until `workers` is dropped or stopped.
//! # drop(workers); Ok(()) }
//! ```
//!
//! [`Ingress::serve_tls`] and [`Ingress::serve_http`] serve one listener on
//! the caller's runtime instead ([`bind_reuseport`] makes several for one
//! port).
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
//! - **Few system calls per connection** (what a passthrough proxy costs is
//!   mostly the kernel's TCP work, so every call counts): one thread per
//!   core with a current-thread runtime and its own `SO_REUSEPORT` listener
//!   ([`Ingress::spawn_workers`]); `accept4` with `SOCK_NONBLOCK`, and a
//!   hello that is already there is read before the socket joins the event
//!   loop; `TCP_NODELAY` inherited from the listener; the VM's socket
//!   gets the replayed bytes right after `connect`, carrying the
//!   handshake's last ACK (`TCP_QUICKACK` off until they are sent, so that
//!   ACK does not go alone); short reads and writes
//!   clear readiness instead of a failing call; EOF is taken from readiness
//!   when it can be, and the last bytes before a FIN go with `MSG_MORE` so
//!   that the FIN passed on shares their segment; one `shutdown` per
//!   connection. Admission is decided
//!   before any task or buffer exists; a connection costs one task and one
//!   buffer that is freed once the hello is replayed.
//! - **Bulk data is spliced**: a direction copies small bursts through a
//!   stack buffer (cheaper than a pipe for a handshake's few kilobytes) and
//!   switches to `splice(2)` once a read fills that buffer; pipes come from
//!   a pool and are only held during a bulk burst. A bulk direction caps
//!   the bytes waiting unsent in its receiving socket
//!   (`notsent_lowat_bytes`, `TCP_NOTSENT_LOWAT`): the kernel would
//!   otherwise queue megabytes of a stream whose reader is slower, pages
//!   that have left the cache by the time they are read.
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
