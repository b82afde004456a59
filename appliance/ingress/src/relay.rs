//! Moving bytes both ways between a client and its VM once routed.
//!
//! On Linux each direction moves data with `splice(2)` through a pipe:
//! socket → pipe → socket, in the kernel, without copying into user space.
//! A pipe pair is taken from a pool when data arrives and given back as soon
//! as the direction is idle with its pipe empty, so ten thousand idle
//! connections hold no pipes. Where splice cannot be used (another OS, a
//! socket type splice refuses, no descriptors for a pipe) a direction falls
//! back to a plain read/write copy.
//!
//! EOF on one side is passed on as a half-close (`shutdown(SHUT_WR)`) of the
//! other, and the connection ends when both directions have, when either
//! fails (a reset is not turned into a clean close, the other side is simply
//! closed), when nothing moves for the idle timeout, or when the route closes.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::routes::RouteState;

/// Buffer of the copy fallback, and most bytes spliced per call (the default
/// pipe capacity on Linux).
const CHUNK: usize = 64 * 1024;

/// How a relayed connection ended.
#[derive(Debug)]
pub(crate) enum RelayEnd {
    /// Both sides finished sending.
    Done,
    /// Nothing moved for the idle timeout.
    Idle,
    /// The route's contract ended.
    RouteClosed,
    /// A side failed (reset, broken pipe…).
    Failed(io::Error),
}

/// Relays between `client` and `upstream` until the connection ends,
/// counting bytes into the route's counters.
pub(crate) async fn relay(
    client: &TcpStream,
    upstream: &TcpStream,
    pipes: &PipePool,
    route: &RouteState,
    idle_timeout: Duration,
) -> RelayEnd {
    let activity = Activity::new();
    let to_upstream = pump(
        client,
        upstream,
        pipes,
        &route.bytes_client_to_upstream,
        &activity,
    );
    let to_client = pump(
        upstream,
        client,
        pipes,
        &route.bytes_upstream_to_client,
        &activity,
    );
    let idle = activity.idle_for(idle_timeout);
    let closed = route.closed();
    tokio::pin!(to_upstream, to_client, idle, closed);
    let (mut up_done, mut down_done) = (false, false);
    loop {
        tokio::select! {
            r = &mut to_upstream, if !up_done => match r {
                Ok(()) => up_done = true,
                Err(e) => return RelayEnd::Failed(e),
            },
            r = &mut to_client, if !down_done => match r {
                Ok(()) => down_done = true,
                Err(e) => return RelayEnd::Failed(e),
            },
            () = &mut idle => return RelayEnd::Idle,
            () = &mut closed => return RelayEnd::RouteClosed,
        }
        if up_done && down_done {
            return RelayEnd::Done;
        }
    }
}

/// Time of the last byte moved, for the idle timeout; shared by the two
/// directions of one connection (same task, so no contention).
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    async fn idle_for(&self, timeout: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Moves `src` → `dst` until EOF (then half-closes `dst`) or an error.
async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    pipes: &PipePool,
    counter: &AtomicU64,
    activity: &Activity,
) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        match linux::pump_splice(src, dst, pipes, counter, activity).await {
            Err(linux::SpliceUnavailable) => {}
            Ok(result) => return result,
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = pipes;
    pump_copy(src, dst, counter, activity).await
}

/// The user-space fallback: read into a buffer, write it out.
async fn pump_copy(
    src: &TcpStream,
    dst: &TcpStream,
    counter: &AtomicU64,
    activity: &Activity,
) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        src.readable().await?;
        let n = match src.try_read(&mut buf) {
            Ok(0) => return shutdown_write(dst),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        activity.touch();
        let mut sent = 0;
        while sent < n {
            dst.writable().await?;
            match dst.try_write(&buf[sent..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(m) => sent += m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Passes EOF on: the peer reads EOF, and can still send to us.
fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor belongs to `stream`, alive for this call.
        let rc = unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            // The peer already closed: nothing left to tell it.
            if e.raw_os_error() != Some(libc::ENOTCONN) {
                return Err(e);
            }
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        let _ = stream;
        Ok(())
    }
}

#[cfg(target_os = "linux")]
pub(crate) use linux::PipePool;

#[cfg(not(target_os = "linux"))]
/// No pipes where there is no splice.
#[derive(Debug)]
pub(crate) struct PipePool;

#[cfg(not(target_os = "linux"))]
impl PipePool {
    pub(crate) fn new(_max_idle: usize) -> Self {
        PipePool
    }

    pub(crate) fn idle(&self) -> usize {
        0
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    use tokio::io::Interest;
    use tokio::net::TcpStream;

    use super::{shutdown_write, Activity, CHUNK};

    /// A pipe: what splice moves data through.
    #[derive(Debug)]
    struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
    }

    impl Pipe {
        fn new() -> io::Result<Pipe> {
            let mut fds = [0 as libc::c_int; 2];
            // SAFETY: `fds` has room for the two descriptors pipe2 writes.
            let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: pipe2 succeeded, so both descriptors are open and ours alone.
            let (read, write) =
                unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            Ok(Pipe { read, write })
        }
    }

    /// Empty pipes kept for reuse, so a busy ingress does not create and
    /// close two descriptors per burst.
    #[derive(Debug)]
    pub(crate) struct PipePool {
        idle: Mutex<Vec<Pipe>>,
        max_idle: usize,
    }

    impl PipePool {
        pub(crate) fn new(max_idle: usize) -> Self {
            PipePool {
                idle: Mutex::new(Vec::new()),
                max_idle,
            }
        }

        /// Pipes parked now.
        pub(crate) fn idle(&self) -> usize {
            self.idle.lock().map(|v| v.len()).unwrap_or(0)
        }

        fn take(&self) -> io::Result<Pipe> {
            let parked = self.idle.lock().ok().and_then(|mut v| v.pop());
            match parked {
                Some(pipe) => Ok(pipe),
                None => Pipe::new(),
            }
        }

        /// Parks an empty pipe (a pipe with data in it must be dropped instead).
        fn put(&self, pipe: Pipe) {
            if let Ok(mut idle) = self.idle.lock() {
                if idle.len() < self.max_idle {
                    idle.push(pipe);
                }
            }
        }
    }

    fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
        // SAFETY: plain descriptors and null offsets (both ends are sockets
        // or pipes, which have no file offset).
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Splice cannot serve this direction; nothing was moved yet.
    pub(super) struct SpliceUnavailable;

    /// Moves `src` → `dst` by splice. The pipe is only ever filled when it is
    /// empty, with at most its capacity, so `EAGAIN` on the way in always
    /// means the socket has nothing to read, and on the way out that the
    /// socket cannot take more: tokio's readiness stays truthful.
    pub(super) async fn pump_splice(
        src: &TcpStream,
        dst: &TcpStream,
        pool: &PipePool,
        counter: &AtomicU64,
        activity: &Activity,
    ) -> Result<io::Result<()>, SpliceUnavailable> {
        let (src_fd, dst_fd) = (src.as_raw_fd(), dst.as_raw_fd());
        let mut pipe: Option<Pipe> = None;
        let mut moved_any = false;
        loop {
            if let Err(e) = src.readable().await {
                return Ok(Err(e));
            }
            let p = match pipe.take() {
                Some(p) => p,
                None => match pool.take() {
                    Ok(p) => p,
                    Err(_) if !moved_any => return Err(SpliceUnavailable),
                    Err(e) => return Ok(Err(e)),
                },
            };
            let n = match src.try_io(Interest::READABLE, || {
                splice(src_fd, p.write.as_raw_fd(), CHUNK)
            }) {
                Ok(0) => {
                    pool.put(p);
                    return Ok(shutdown_write(dst));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Idle with an empty pipe: give it back until data comes.
                    pool.put(p);
                    continue;
                }
                Err(e)
                    if !moved_any
                        && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) =>
                {
                    pool.put(p);
                    return Err(SpliceUnavailable);
                }
                Err(e) => return Ok(Err(e)),
            };
            moved_any = true;
            counter.fetch_add(n as u64, Ordering::Relaxed);
            activity.touch();
            let mut left = n;
            while left > 0 {
                if let Err(e) = dst.writable().await {
                    return Ok(Err(e));
                }
                match dst.try_io(Interest::WRITABLE, || {
                    splice(p.read.as_raw_fd(), dst_fd, left)
                }) {
                    Ok(0) => return Ok(Err(io::ErrorKind::WriteZero.into())),
                    Ok(m) => left -= m.min(left),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    // The pipe may still hold data: dropped, not parked.
                    Err(e) => return Ok(Err(e)),
                }
            }
            // Keep the pipe while data keeps coming; parked on the next idle read.
            pipe = Some(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use crate::routes::{Route, RouteTable};

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    fn table() -> (Arc<RouteTable>, Arc<RouteState>) {
        let t = Arc::new(RouteTable::new());
        t.replace(vec![Route {
            contract_id: 1,
            names: vec!["a.example".into()],
            tls_upstream: "127.0.0.1:1".parse().unwrap(),
            http_upstream: None,
            proxy_protocol: false,
            max_connections: 10,
        }])
        .unwrap();
        let state = t.get(1).unwrap().state.clone();
        (t, state)
    }

    /// client ⇄ [a | b] ⇄ upstream, with relay between a and b.
    #[tokio::test]
    async fn relays_both_ways_with_half_close_and_counts_bytes() {
        let (mut client, a) = pair().await;
        let (b, mut upstream) = pair().await;
        let (_t, state) = table();
        let pipes = PipePool::new(4);
        let relay_state = state.clone();
        let relay = tokio::spawn(async move {
            let end = relay(&a, &b, &pipes, &relay_state, Duration::from_secs(10)).await;
            (end, pipes.idle())
        });
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            // Half-close: the upstream sees EOF, and can still answer.
            client.shutdown().await.unwrap();
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            answer
        });
        let mut got = Vec::new();
        upstream.read_to_end(&mut got).await.unwrap();
        assert!(
            got == payload,
            "upstream got {} bytes, not the client's",
            got.len()
        );
        upstream.write_all(b"thanks").await.unwrap();
        drop(upstream);
        assert_eq!(writer.await.unwrap(), b"thanks");
        let (end, idle_pipes) = relay.await.unwrap();
        assert!(matches!(end, RelayEnd::Done), "{end:?}");
        assert_eq!(
            state.bytes_client_to_upstream.load(Ordering::Relaxed),
            3_000_000
        );
        assert_eq!(state.bytes_upstream_to_client.load(Ordering::Relaxed), 6);
        if cfg!(target_os = "linux") {
            assert!(idle_pipes >= 1, "pipes go back to the pool");
        }
    }

    #[tokio::test]
    async fn idle_connections_are_closed() {
        let (mut client, a) = pair().await;
        let (b, mut upstream) = pair().await;
        let (_t, state) = table();
        let pipes = PipePool::new(4);
        let started = Instant::now();
        let relay_state = state.clone();
        let relay = tokio::spawn(async move {
            relay(&a, &b, &pipes, &relay_state, Duration::from_millis(300)).await
        });
        // Traffic postpones the timeout.
        for _ in 0..4 {
            client.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            upstream.read_exact(&mut one).await.unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let end = relay.await.unwrap();
        assert!(matches!(end, RelayEnd::Idle), "{end:?}");
        // Last byte at about 450 ms: without the postponements it would end at 300 ms.
        assert!(started.elapsed() >= Duration::from_millis(700));
        // Both sides see the close.
        let mut rest = Vec::new();
        assert_eq!(upstream.read_to_end(&mut rest).await.unwrap(), 0);
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_reset_upstream_ends_the_relay() {
        let (_client, a) = pair().await;
        let (b, upstream) = pair().await;
        let (_t, state) = table();
        let pipes = PipePool::new(4);
        let relay_state = state.clone();
        let relay = tokio::spawn(async move {
            relay(&a, &b, &pipes, &relay_state, Duration::from_secs(10)).await
        });
        // Linger 0: close sends RST.
        let std_upstream = upstream.into_std().unwrap();
        socket_linger_zero(&std_upstream);
        drop(std_upstream);
        let end = tokio::time::timeout(Duration::from_secs(5), relay)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(end, RelayEnd::Failed(_)), "{end:?}");
    }

    fn socket_linger_zero(s: &std::net::TcpStream) {
        use std::os::fd::AsRawFd;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: valid descriptor and a correctly sized option value.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
    }

    #[tokio::test]
    async fn closing_the_route_ends_the_relay() {
        let (_client, a) = pair().await;
        let (b, _upstream) = pair().await;
        let (t, state) = table();
        let pipes = PipePool::new(4);
        let relay_state = state.clone();
        let relay = tokio::spawn(async move {
            relay(&a, &b, &pipes, &relay_state, Duration::from_secs(10)).await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(t.remove(1));
        let end = tokio::time::timeout(Duration::from_secs(5), relay)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(end, RelayEnd::RouteClosed), "{end:?}");
    }
}
