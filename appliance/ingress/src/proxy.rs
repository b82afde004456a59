//! The listeners: port 443 routes on the ClientHello's server name, port 80
//! on the Host header; both then hand the connection to the VM untouched.
//!
//! A connection goes through: admission (ingress-wide and per-source limits,
//! at accept, before any task or buffer exists) → reading the hello or head
//! under a deadline that tightens with a minimum byte rate → route lookup →
//! the route's own limit → connecting to the VM → PROXY v2 header if the
//! route asks → the buffered bytes, replayed → `relay` both
//! ways. Every refusal is counted by reason. A refused TLS connection is just
//! closed (anything else would mean speaking TLS for the tenant); a refused
//! HTTP connection gets a one-line status response, then a lingering close so
//! that the response is not lost to a reset.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::clienthello::{parse_client_hello_with_limit, HelloError};
use crate::config::{ConfigError, EchPolicy, IngressConfig};
use crate::http::{parse_request_head_with_limit, HttpError};
use crate::limits::{Admission, Admitted};
use crate::metrics::{MetricsSnapshot, PortCounters, Refusal};
use crate::name::HostName;
use crate::proxy_protocol::{proxy_v2_header, PROXY_V2_MAX_LEN};
use crate::relay::{relay, PipePool, RelayEnd};
use crate::routes::{AcquireError, RouteTable};

/// Backlog of each listening socket (the kernel caps it at `somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;
/// First allocation for a hello or head; most fit, larger ones grow to their
/// announced size.
const INITIAL_TLS_BUFFER: usize = 2048;
const INITIAL_HTTP_BUFFER: usize = 1024;
/// Most bytes read and discarded in a lingering close.
const LINGER_DRAIN_BYTES: usize = 64 * 1024;
/// Pause after an accept failed for want of descriptors or memory, so that
/// the loop does not spin while the condition lasts. Only then: a failure
/// that concerns one connection must not stall the port for everyone.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Which port a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Tls,
    Http,
}

/// The ingress: listeners share one route table, one set of limits and
/// counters, and one pipe pool. Cheap to clone (one `Arc`).
#[derive(Debug, Clone)]
pub struct Ingress {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: IngressConfig,
    routes: Arc<RouteTable>,
    admission: Arc<Admission>,
    pipes: PipePool,
    tls: PortCounters,
    http: PortCounters,
}

/// What the bytes so far say about the connection. A stack temporary: the
/// inline name is cheaper than boxing it on every connection.
#[allow(clippy::large_enum_variant)]
enum Judgement {
    Route(HostName),
    /// At least this many more bytes before judging again.
    Need(usize),
    Refuse(Refusal),
}

impl Ingress {
    /// An ingress with `config` (validated here) reading routes from `routes`,
    /// which the agent keeps up to date.
    pub fn new(config: IngressConfig, routes: Arc<RouteTable>) -> Result<Ingress, ConfigError> {
        config.validate()?;
        Ok(Ingress {
            shared: Arc::new(Shared {
                admission: Arc::new(Admission::new(
                    config.max_connections,
                    config.max_connections_per_source,
                )),
                pipes: PipePool::new(config.max_idle_pipes),
                routes,
                config,
                tls: PortCounters::default(),
                http: PortCounters::default(),
            }),
        })
    }

    /// The route table the listeners read.
    pub fn routes(&self) -> &Arc<RouteTable> {
        &self.shared.routes
    }

    /// The settings in force.
    pub fn config(&self) -> &IngressConfig {
        &self.shared.config
    }

    /// Every counter, for the remote-control API.
    pub fn metrics(&self) -> MetricsSnapshot {
        let s = &self.shared;
        MetricsSnapshot {
            connections_active: u64::from(s.admission.active()),
            tls: s.tls.snapshot(),
            http: s.http.snapshot(),
            idle_pipes: s.pipes.idle() as u64,
            routes: s.routes.metrics(),
        }
    }

    /// Serves TLS connections (port 443) from `listener` until an
    /// unrecoverable accept error; each connection runs in its own task.
    /// Dropping the future stops accepting; open connections go on.
    pub async fn serve_tls(&self, listener: TcpListener) -> io::Result<()> {
        self.serve(listener, Protocol::Tls).await
    }

    /// Serves plain HTTP connections (port 80) from `listener`, as
    /// [`Ingress::serve_tls`] does TLS.
    pub async fn serve_http(&self, listener: TcpListener) -> io::Result<()> {
        self.serve(listener, Protocol::Http).await
    }

    async fn serve(&self, listener: TcpListener, protocol: Protocol) -> io::Result<()> {
        let shared = &self.shared;
        let port = shared.port(protocol);
        // Accepted sockets inherit TCP_NODELAY from their listener (Linux),
        // which saves a system call per connection: the replayed and relayed
        // bursts must not wait for Nagle.
        socket2::SockRef::from(&listener).set_tcp_nodelay(true)?;
        // Accepted sockets join the event loop only once their first bytes
        // are read (see `handle`), so accepting goes around tokio's listener.
        // SAFETY: the std listener owns its descriptor, which is neither
        // replaced nor closed while the AsyncFd holds it.
        let listener =
            unsafe { AsyncFd::register_with_interest(listener.into_std()?, Interest::READABLE) }?;
        loop {
            let accepted = listener
                .async_io(Interest::READABLE, accept_nonblocking)
                .await;
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    port.accept_errors.fetch_add(1, Ordering::Relaxed);
                    match accept_failure(&e) {
                        AcceptFailure::Fatal => return Err(e),
                        AcceptFailure::OutOfResources => {
                            tracing::warn!(error = %e, "ingress accept failed, backing off");
                            tokio::time::sleep(ACCEPT_BACKOFF).await;
                        }
                        // The next connection in the queue is fine: no pause.
                        AcceptFailure::ThisConnection => {
                            tracing::debug!(error = %e, "ingress accept skipped a connection");
                        }
                    }
                    continue;
                }
            };
            port.accepted.fetch_add(1, Ordering::Relaxed);
            let admitted = match shared.admission.admit(peer.ip()) {
                Ok(admitted) => admitted,
                Err(reason) => {
                    port.refuse(reason);
                    tracing::debug!(%peer, ?reason, "ingress connection refused");
                    continue;
                }
            };
            let shared = shared.clone();
            tokio::spawn(async move { shared.handle(stream, peer, protocol, admitted).await });
        }
    }
}

impl Shared {
    fn port(&self, protocol: Protocol) -> &PortCounters {
        match protocol {
            Protocol::Tls => &self.tls,
            Protocol::Http => &self.http,
        }
    }

    fn limit(&self, protocol: Protocol) -> usize {
        match protocol {
            Protocol::Tls => self.config.max_client_hello_bytes,
            Protocol::Http => self.config.max_http_head_bytes,
        }
    }

    async fn handle(
        &self,
        client: std::net::TcpStream,
        peer: SocketAddr,
        protocol: Protocol,
        admitted: Admitted,
    ) {
        let initial = match protocol {
            Protocol::Tls => INITIAL_TLS_BUFFER,
            Protocol::Http => INITIAL_HTTP_BUFFER,
        };
        // Room in front for a PROXY header, so that header and replayed bytes
        // go to the VM in one write from one buffer.
        let mut buf = Vec::with_capacity(PROXY_V2_MAX_LEN + initial);
        buf.resize(PROXY_V2_MAX_LEN, 0);
        // Under load the hello or head is usually here already by the time
        // the connection is accepted: read it before the socket joins the
        // event loop, which then reports nothing for it until the client
        // sends more, instead of an event for bytes already read. (Not
        // `TCP_DEFER_ACCEPT`, which would make this certain: it saves a
        // wake-up per connection but measurably lengthened the latency tail
        // of a lone connection, whose accept no longer overlaps the client
        // writing its hello.)
        match recv_early(&client, &mut buf) {
            Ok(0) => {
                self.port(protocol).refuse(Refusal::ClosedEarly);
                drop(admitted);
                return;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => {
                self.port(protocol).refuse(Refusal::ClosedEarly);
                drop(admitted);
                return;
            }
        }
        let mut client = match TcpStream::from_std(client) {
            Ok(client) => client,
            Err(e) => {
                // The event loop is out of room (registration failed).
                self.port(protocol)
                    .accept_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, error = %e, "ingress cannot watch a connection");
                drop(admitted);
                return;
            }
        };
        if let Err(reason) = self
            .connect_and_relay(&mut client, &mut buf, peer, protocol)
            .await
        {
            self.port(protocol).refuse(reason);
            tracing::debug!(%peer, ?reason, ?protocol, "ingress connection refused");
            if protocol == Protocol::Http {
                self.answer_http_refusal(&mut client, &mut buf, reason)
                    .await;
            }
        }
        drop(client);
        drop(admitted);
    }

    async fn connect_and_relay(
        &self,
        client: &mut TcpStream,
        buf: &mut Vec<u8>,
        peer: SocketAddr,
        protocol: Protocol,
    ) -> Result<(), Refusal> {
        let name = self.read_name(client, buf, protocol).await?;
        let entry = self.routes.lookup(&name).ok_or(Refusal::UnknownName)?;
        let upstream_addr = match protocol {
            Protocol::Tls => entry.route.tls_upstream,
            Protocol::Http => entry.route.http_upstream.ok_or(Refusal::UnknownName)?,
        };
        let slot = match entry.state.try_acquire(entry.route.max_connections) {
            Ok(slot) => slot,
            Err(AcquireError::Full) => {
                entry
                    .state
                    .refused_route_limit
                    .fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::RouteLimit);
            }
            Err(AcquireError::Closed) => return Err(Refusal::UnknownName),
        };
        let proxy_protocol = entry.route.proxy_protocol;
        drop(entry);
        let route = &slot.state;
        let unreachable = || {
            route
                .refused_upstream_unreachable
                .fetch_add(1, Ordering::Relaxed);
            Refusal::UpstreamUnreachable
        };

        let start = if proxy_protocol {
            let local = client.local_addr().map_err(|_| Refusal::ClosedEarly)?;
            let header = proxy_v2_header(peer, local);
            let header = header.as_bytes();
            let start = PROXY_V2_MAX_LEN - header.len();
            buf[start..PROXY_V2_MAX_LEN].copy_from_slice(header);
            start
        } else {
            PROXY_V2_MAX_LEN
        };
        let upstream = match tokio::time::timeout(
            self.config.connect_timeout(),
            connect_with(upstream_addr, &buf[start..]),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(%peer, upstream = %upstream_addr, error = %e, "VM refused the connection");
                return Err(unreachable());
            }
            Err(_) => {
                tracing::debug!(%peer, upstream = %upstream_addr, "VM did not answer in time");
                return Err(unreachable());
            }
        };
        let replayed = (buf.len() - PROXY_V2_MAX_LEN) as u64;
        route
            .bytes_client_to_upstream
            .fetch_add(replayed, Ordering::Relaxed);
        route.connections_total.fetch_add(1, Ordering::Relaxed);
        self.port(protocol).routed.fetch_add(1, Ordering::Relaxed);
        // The hello is the VM's now; do not hold its buffer for hours.
        *buf = Vec::new();

        let end = relay(
            client,
            &upstream,
            &self.pipes,
            route,
            &self.config.relay_settings(),
        )
        .await;
        match end {
            RelayEnd::Done => {
                tracing::trace!(%peer, contract_id = route.contract_id(), "connection done")
            }
            RelayEnd::Idle => {
                tracing::debug!(%peer, contract_id = route.contract_id(), "idle connection closed")
            }
            RelayEnd::RouteClosed => {
                tracing::debug!(%peer, contract_id = route.contract_id(), "contract ended, connection closed")
            }
            RelayEnd::Failed(e) => {
                tracing::debug!(%peer, contract_id = route.contract_id(), error = %e, "connection failed")
            }
        }
        Ok(())
    }

    /// Reads until the hello or head names a host, under the handshake deadline.
    async fn read_name(
        &self,
        client: &mut TcpStream,
        buf: &mut Vec<u8>,
        protocol: Protocol,
    ) -> Result<HostName, Refusal> {
        let accepted_at = Instant::now();
        let limit = self.limit(protocol);
        let mut want = 1;
        loop {
            let received = buf.len() - PROXY_V2_MAX_LEN;
            if received >= want {
                match self.judge(&buf[PROXY_V2_MAX_LEN..], protocol) {
                    Judgement::Route(name) => return Ok(name),
                    Judgement::Need(more) => want = received + more.max(1),
                    Judgement::Refuse(reason) => return Err(reason),
                }
            }
            // Room for what is announced, growing geometrically otherwise,
            // never past the bound (the parsers refuse before that).
            let goal = want
                .max(received * 2)
                .clamp(received + 1, limit.max(received + 1));
            if buf.capacity() < PROXY_V2_MAX_LEN + goal {
                buf.reserve_exact(PROXY_V2_MAX_LEN + goal - buf.len());
            }
            let deadline = accepted_at + self.config.handshake_deadline_after(received);
            match tokio::time::timeout_at(deadline, client.read_buf(buf)).await {
                Err(_) => return Err(Refusal::TooSlow),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(Refusal::ClosedEarly),
                Ok(Ok(_)) => {}
            }
        }
    }

    fn judge(&self, data: &[u8], protocol: Protocol) -> Judgement {
        match protocol {
            Protocol::Tls => {
                match parse_client_hello_with_limit(data, self.config.max_client_hello_bytes) {
                    Ok(hello) => {
                        if hello.offers_ech() && self.config.ech == EchPolicy::Refuse {
                            return Judgement::Refuse(Refusal::Ech);
                        }
                        match hello.server_name() {
                            Some(name) => Judgement::Route(name.clone()),
                            None => Judgement::Refuse(Refusal::NoName),
                        }
                    }
                    Err(HelloError::Incomplete { needed }) => Judgement::Need(needed),
                    Err(HelloError::TooLarge { .. }) => Judgement::Refuse(Refusal::TooLarge),
                    Err(_) => Judgement::Refuse(Refusal::Malformed),
                }
            }
            Protocol::Http => {
                match parse_request_head_with_limit(data, self.config.max_http_head_bytes) {
                    Ok(head) => Judgement::Route(head.host),
                    Err(HttpError::Incomplete) => Judgement::Need(1),
                    Err(HttpError::TooLarge { .. }) => Judgement::Refuse(Refusal::TooLarge),
                    Err(HttpError::MissingHost) => Judgement::Refuse(Refusal::NoName),
                    Err(_) => Judgement::Refuse(Refusal::Malformed),
                }
            }
        }
    }

    /// A status line for the refused HTTP client, then a lingering close:
    /// what the client still sends is read and dropped for a short while so
    /// that closing with unread data does not reset the connection (and the
    /// response with it).
    async fn answer_http_refusal(
        &self,
        client: &mut TcpStream,
        buf: &mut Vec<u8>,
        reason: Refusal,
    ) {
        let Some(response) = http_response(reason) else {
            return;
        };
        let linger = Duration::from_millis(self.config.lingering_close_ms);
        let _ = tokio::time::timeout(linger, async {
            client.write_all(response.as_bytes()).await?;
            client.shutdown().await?;
            let mut drained = 0;
            while drained < LINGER_DRAIN_BYTES {
                buf.clear();
                if buf.capacity() < 4096 {
                    buf.reserve_exact(4096);
                }
                let n = client.read_buf(buf).await?;
                if n == 0 {
                    break;
                }
                drained += n;
            }
            Ok::<(), io::Error>(())
        })
        .await;
    }
}

/// The response to a refused HTTP request, if the client is still there to read one.
fn http_response(reason: Refusal) -> Option<&'static str> {
    Some(match reason {
        Refusal::ClosedEarly => return None,
        Refusal::NoName | Refusal::Malformed | Refusal::Ech => {
            "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        }
        Refusal::UnknownName => {
            "HTTP/1.1 421 Misdirected Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        }
        Refusal::TooLarge => {
            "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        }
        Refusal::TooSlow => {
            "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        }
        Refusal::GlobalLimit | Refusal::SourceLimit | Refusal::RouteLimit => {
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        }
        Refusal::UpstreamUnreachable => {
            "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        }
    })
}

/// Accepts one connection, non-blocking from the start (one system call on
/// Linux: `accept4` with `SOCK_NONBLOCK`).
fn accept_nonblocking(
    listener: &std::net::TcpListener,
) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: accept4 writes at most `len` bytes of address into the
        // storage try_init provides, and sets `len` to what it wrote.
        let (fd, addr) = unsafe {
            socket2::SockAddr::try_init(|storage, len| {
                let fd = libc::accept4(
                    listener.as_raw_fd(),
                    storage.cast(),
                    len,
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                );
                if fd < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(fd)
                }
            })
        }?;
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
        let peer = addr
            .as_socket()
            .ok_or_else(|| io::Error::other("accepted a connection without an IP address"))?;
        Ok((stream, peer))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let (stream, peer) = listener.accept()?;
        stream.set_nonblocking(true)?;
        Ok((stream, peer))
    }
}

/// One `recv` into `buf`'s spare room, before the socket is registered.
fn recv_early(stream: &std::net::TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    #[cfg(unix)]
    {
        let n = crate::relay::sys::recv(stream, buf.spare_capacity_mut())?;
        // SAFETY: recv initialised the first `n` spare bytes.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }
    #[cfg(not(unix))]
    {
        let _ = (stream, buf);
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// Connects to `addr` and sends `first` (the PROXY header and the replayed
/// hello or head, never empty), with `TCP_NODELAY` set before connecting. To
/// a VM on this host the handshake has usually completed by the time
/// `connect` returns, so `first` leaves at once, before the socket joins the
/// event loop; otherwise it is sent when the connection is up. Either way a
/// refused or failed connection shows as the send's error.
///
/// On Linux the handshake's last ACK goes with `first` instead of alone (one
/// segment less per connection, processed on this CPU): the socket starts
/// in delayed-ACK mode (`TCP_QUICKACK` off, which defers the ACK of the
/// SYN-ACK), and leaves it once `first` is sent, so that the VM's own sends
/// are acknowledged at once as on any new connection (a VM that writes in
/// small pieces with Nagle's algorithm on would otherwise wait for delayed
/// ACKs).
async fn connect_with(addr: SocketAddr, first: &[u8]) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    debug_assert!(!first.is_empty(), "the first bytes prove the connection");
    #[cfg(target_os = "linux")]
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    #[cfg(not(target_os = "linux"))]
    let socket = {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        socket
    };
    socket.set_tcp_nodelay(true)?;
    #[cfg(target_os = "linux")]
    socket.set_tcp_quickack(false)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if connect_in_progress(&e) => {}
        Err(e) => return Err(e),
    }
    // Still connecting, the send fails with `WouldBlock`; socket2 sends with
    // MSG_NOSIGNAL.
    let sent = match socket.send(first) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    let mut stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    if sent < first.len() {
        stream.write_all(&first[sent..]).await?;
    }
    #[cfg(target_os = "linux")]
    socket2::SockRef::from(&stream).set_tcp_quickack(true)?;
    Ok(stream)
}

fn connect_in_progress(e: &io::Error) -> bool {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::EINPROGRESS) {
        return true;
    }
    e.kind() == io::ErrorKind::WouldBlock
}

/// What a failed `accept` means for the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptFailure {
    /// The listener cannot accept again.
    Fatal,
    /// Descriptors or memory are exhausted: pause before trying again.
    OutOfResources,
    /// Only the connection taken off the queue failed (aborted by its
    /// client, refused by a firewall rule, or a network error that accept(2)
    /// passes on, which Linux does): accept the next one at once. Anything
    /// not known to be fatal or about resources counts here, since every
    /// such failure consumes its connection.
    ThisConnection,
}

fn accept_failure(e: &io::Error) -> AcceptFailure {
    #[cfg(unix)]
    match e.raw_os_error() {
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EFAULT) => AcceptFailure::Fatal,
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
            AcceptFailure::OutOfResources
        }
        _ => AcceptFailure::ThisConnection,
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        AcceptFailure::OutOfResources
    }
}

/// Binds `count` listening sockets to `addr` with `SO_REUSEPORT`, so that the
/// kernel spreads new connections over them: give each to its own
/// `serve_*` task and accepts scale with cores ([`Ingress::spawn_workers`]
/// does this with one thread per listener). With port 0, all join the port
/// the first one got. Must be called inside a tokio runtime.
pub fn bind_reuseport(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    bind_std_reuseport(addr, count)?
        .into_iter()
        .map(TcpListener::from_std)
        .collect()
}

/// [`bind_reuseport`] without a runtime: non-blocking std listeners, with
/// TCP_NODELAY set for their accepted sockets to inherit.
pub(crate) fn bind_std_reuseport(
    addr: SocketAddr,
    count: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut listeners = Vec::with_capacity(count.max(1));
    let mut bound = addr;
    for _ in 0..count.max(1) {
        let socket = Socket::new(
            Domain::for_address(bound),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        #[cfg(unix)]
        socket.set_reuse_port(true)?;
        socket.set_tcp_nodelay(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&bound.into())?;
        socket.listen(LISTEN_BACKLOG as i32)?;
        let listener = std::net::TcpListener::from(socket);
        bound = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only exhaustion pauses the accept loop; a failure of one connection
    /// (which a client can cause at will) never does.
    #[cfg(unix)]
    #[test]
    fn only_exhaustion_pauses_accepting() {
        let of = |errno| accept_failure(&io::Error::from_raw_os_error(errno));
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert_eq!(of(errno), AcceptFailure::OutOfResources, "errno {errno}");
        }
        for errno in [libc::EBADF, libc::EINVAL, libc::ENOTSOCK, libc::EFAULT] {
            assert_eq!(of(errno), AcceptFailure::Fatal, "errno {errno}");
        }
        // accept(2): "treat them like EAGAIN by retrying".
        for errno in [
            libc::ECONNABORTED,
            libc::EPROTO,
            libc::EPERM,
            libc::EINTR,
            libc::ENETDOWN,
            libc::ENOPROTOOPT,
            libc::EHOSTDOWN,
            libc::ENONET,
            libc::EHOSTUNREACH,
            libc::EOPNOTSUPP,
            libc::ENETUNREACH,
        ] {
            assert_eq!(of(errno), AcceptFailure::ThisConnection, "errno {errno}");
        }
    }

    /// `serve` sets TCP_NODELAY on the listener only, counting on Linux to
    /// copy it into every accepted socket.
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        socket2::SockRef::from(&listener)
            .set_tcp_nodelay(true)
            .unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    #[tokio::test]
    async fn connect_with_sends_the_first_bytes_or_fails() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = connect_with(addr, b"hello").await.unwrap();
        assert!(stream.nodelay().unwrap());
        let (mut accepted, _) = listener.accept().await.unwrap();
        let mut got = [0u8; 5];
        accepted.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        drop(listener);
        // Nothing listens there now: the connection is refused.
        let e = connect_with(addr, b"hello").await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    }

    /// The handshake's last ACK goes with the first bytes: the VM sees the
    /// SYN and one segment, not a lone ACK first; and the socket is back in
    /// quick-ACK mode afterwards.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn connect_with_sends_the_handshake_ack_with_the_first_bytes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for _ in 0..3 {
            let stream = connect_with(addr, b"hello").await.unwrap();
            let (sent, _) = crate::relay::tcp_segments(&stream);
            assert_eq!(sent, 2, "SYN, then the bytes with the ACK");
            assert!(socket2::SockRef::from(&stream).tcp_quickack().unwrap());
            let (mut accepted, _) = listener.accept().await.unwrap();
            let mut got = [0u8; 5];
            accepted.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"hello");
        }
    }

    #[test]
    fn http_refusals_get_a_status_line() {
        let status = |r| http_response(r).map(|s| &s[9..12]);
        assert_eq!(status(Refusal::ClosedEarly), None);
        assert_eq!(status(Refusal::UnknownName), Some("421"));
        assert_eq!(status(Refusal::UpstreamUnreachable), Some("502"));
        assert_eq!(status(Refusal::TooSlow), Some("408"));
        assert_eq!(status(Refusal::SourceLimit), Some("503"));
        for reason in Refusal::ALL {
            if let Some(r) = http_response(reason) {
                assert!(r.starts_with("HTTP/1.1 ") && r.ends_with("Connection: close\r\n\r\n"));
            }
        }
    }
}
