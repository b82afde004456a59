//! Moving bytes both ways between a client and its VM once routed.
//!
//! Each direction copies small bursts through a stack buffer (`recv` then
//! `send`: for a handshake's few kilobytes that is cheaper than going through
//! a pipe) and switches to `splice(2)` on Linux once a read fills the buffer,
//! that is for bulk transfers: socket → pipe → socket, in the kernel, without
//! copying into user space. It goes back to copying when a read comes back
//! short. A pipe pair is taken from a pool for a bulk burst and given back as
//! soon as the burst ends with the pipe empty, so ten thousand idle
//! connections hold no pipes. Where splice cannot be used (another OS, a
//! socket type splice refuses, no descriptors for a pipe) the direction keeps
//! copying.
//!
//! A direction that turns bulk caps the bytes waiting unsent in the
//! receiving socket (`TCP_NOTSENT_LOWAT`, [`RelaySettings::notsent_lowat`]).
//! Without it the kernel queues megabytes per stream when the reader is
//! slower than the writer; with splice those are the VM's pages, kept out of
//! its reuse, and by the time the reader gets them they have left the cache.
//! Only unsent bytes count, so a long path still gets its whole window in
//! flight. Small exchanges never pay the extra call.
//!
//! A short read or write says the socket's queue is drained (or full), so
//! the socket's readiness is cleared right there instead of by a failing
//! call: most bursts cost one `recv` and one `send`. When the peer's FIN had
//! already arrived before such a read, that read took the last bytes: they
//! are sent with `MSG_MORE`, and the half-close or close that passes the EOF
//! on right after puts the FIN in the same segment (one packet, and one
//! wake-up of the reader, fewer per connection), without a `recv` returning
//! 0 to learn of the EOF.
//!
//! TCP urgent data (`MSG_OOB`) is out of band: as with HAProxy and nginx,
//! the stream goes on without the urgent byte. A read stops short right
//! before it, and splice does not move past it at all, so where a wrong
//! "drained" would end the stream or stall it for good (a short read after
//! the FIN, an empty splice) the relay asks the kernel whether the queue is at
//! an urgent mark, and reads on if so. A short read with no FIN behind it is
//! not checked (that would cost a call per burst): bytes queued behind an
//! urgent byte then wait for the sender's next bytes, or its connection's idle
//! timeout, which resets it, so a sender of urgent data can only hold up its
//! own connection and is never told a cut stream was whole.
//!
//! EOF on one side is passed on as a half-close (`shutdown(SHUT_WR)`) of the
//! other while the other direction is still open; when both have ended the
//! connection is simply closed, which sends the last FIN. The connection also
//! ends when either direction fails (a reset is not turned into a clean
//! close, the other side is simply closed), when nothing moves for the idle
//! timeout, or when the route closes.

use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{Interest, Ready};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::routes::RouteState;

/// Most bytes spliced per call, and the capacity asked for each pipe (the
/// default is 64 KiB; a pipe keeps it where the kernel refuses more). A
/// pipe holds pages only while a burst is in it.
#[cfg(target_os = "linux")]
const CHUNK: usize = 256 * 1024;

/// The copy buffer. A read that fills it starts a bulk transfer, moved by
/// splice until a read comes back short.
const COPY_BUF: usize = 16 * 1024;

/// The settings of every relayed connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RelaySettings {
    /// The connection closes when nothing moves either way for this long.
    pub(crate) idle_timeout: Duration,
    /// `TCP_NOTSENT_LOWAT` set on the receiving socket of a direction that
    /// turns bulk; 0 leaves the kernel's setting.
    pub(crate) notsent_lowat: u32,
}

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
    settings: &RelaySettings,
) -> RelayEnd {
    let activity = Activity::new();
    let to_upstream = pump(
        client,
        upstream,
        pipes,
        &route.bytes_client_to_upstream,
        &activity,
        settings.notsent_lowat,
    );
    let to_client = pump(
        upstream,
        client,
        pipes,
        &route.bytes_upstream_to_client,
        &activity,
        settings.notsent_lowat,
    );
    let idle = activity.idle_for(settings.idle_timeout);
    let closed = route.closed();
    tokio::pin!(to_upstream, to_client, idle, closed);
    let (mut up_done, mut down_done) = (false, false);
    loop {
        // EOF from one side becomes a half-close of the other only while the
        // other direction still runs; otherwise closing both says it all.
        tokio::select! {
            r = &mut to_upstream, if !up_done => match r {
                Ok(()) => {
                    up_done = true;
                    if !down_done {
                        if let Err(e) = shutdown_write(upstream) {
                            return RelayEnd::Failed(e);
                        }
                    }
                }
                Err(e) => return RelayEnd::Failed(e),
            },
            r = &mut to_client, if !down_done => match r {
                Ok(()) => {
                    down_done = true;
                    if !up_done {
                        if let Err(e) = shutdown_write(client) {
                            return RelayEnd::Failed(e);
                        }
                    }
                }
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

/// Moves `src` → `dst` until EOF from `src` (returns `Ok`, the caller passes
/// the EOF on) or an error. `notsent_lowat` is set on `dst` the first time
/// the direction turns bulk (0: never).
async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    pipes: &PipePool,
    counter: &AtomicU64,
    activity: &Activity,
    notsent_lowat: u32,
) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    let mut splicer = linux::Splicer::new(pipes);
    #[cfg(not(target_os = "linux"))]
    let _ = pipes;
    let mut bulk = false;
    let mut capped = notsent_lowat == 0;
    // The queue holds bytes behind an urgent mark that readiness may not
    // show: read at once, until the queue is empty.
    let mut read_on = false;
    loop {
        if bulk && !capped {
            capped = true;
            // Only a bound on buffering: where the kernel refuses it, the
            // relay works the same with the kernel's default.
            if let Err(e) = set_notsent_lowat(dst, notsent_lowat) {
                tracing::debug!(error = %e, "TCP_NOTSENT_LOWAT refused");
            }
        }
        let read = if read_on {
            // No readiness to wait for here: without this a sender that keeps
            // the queue from ever running dry would keep this task from ever
            // yielding, and the other connections of this worker waiting.
            tokio::task::coop::consume_budget().await;
            Read::On
        } else {
            let ready = src.ready(Interest::READABLE | Interest::ERROR).await?;
            if eof_known(ready) {
                return Ok(());
            }
            if ready.is_error() && !ready.is_readable() {
                // An error with nothing left to read (otherwise the reads below
                // pass on what came before it, then meet it): end with it now,
                // since the read would wait for a readiness that never comes.
                return Err(src
                    .take_error()?
                    .unwrap_or_else(|| io::ErrorKind::ConnectionReset.into()));
            }
            #[cfg(target_os = "linux")]
            if bulk && splicer.usable() {
                match splicer.step(src, dst, counter, activity).await? {
                    // Splice stops at an urgent mark: "nothing" or "EOF"
                    // there may have bytes behind them.
                    linux::Spliced::Nothing | linux::Spliced::Eof if at_urgent_mark(src) => {
                        bulk = false;
                        read_on = true;
                        continue;
                    }
                    linux::Spliced::Nothing => continue,
                    linux::Spliced::Eof => return Ok(()),
                    linux::Spliced::Moved(n) => {
                        bulk = n >= COPY_BUF;
                        continue;
                    }
                    // No pipe now, or splice refused: copy this burst.
                    linux::Spliced::Unavailable => {}
                }
            }
            Read::Ready {
                fin_came: fin_came(ready),
            }
        };
        read_on = false;
        match copy_burst(src, dst, counter, activity, read)? {
            Copied::Nothing => {}
            Copied::Eof | Copied::Last => return Ok(()),
            Copied::All(n) => bulk = n == COPY_BUF,
            Copied::Part(rest) => {
                bulk = false;
                write_rest(dst, &rest).await?;
            }
            Copied::More(rest) => {
                bulk = false;
                read_on = true;
                if let Some(rest) = rest {
                    write_rest(dst, &rest).await?;
                }
            }
        }
    }
}

/// How a copy burst reads.
#[derive(Clone, Copy)]
enum Read {
    /// After a readiness event; `fin_came`: `src`'s FIN had arrived before
    /// it (see [`fin_came`]).
    Ready { fin_came: bool },
    /// Right away, whatever the readiness says, after a read that stopped
    /// at an urgent mark: a short read proves nothing, only `EAGAIN` or EOF
    /// end the reading.
    On,
}

/// True when the next byte of `src`'s queue is TCP urgent data
/// (`SIOCATMARK`): a `recv` stops short before it (and passes it the next
/// time), splice does not pass it.
#[cfg(target_os = "linux")]
fn at_urgent_mark(src: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    // asm-generic/sockios.h, which x86, arm and riscv use; alpha, mips,
    // parisc, powerpc and sparc number it otherwise: no check there.
    const SIOCATMARK: libc::c_ulong = 0x8905;
    if !cfg!(any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64"
    )) {
        return false;
    }
    let mut at: libc::c_int = 0;
    // SAFETY: the descriptor belongs to `src`, alive for this call;
    // SIOCATMARK writes one int.
    let rc = unsafe { libc::ioctl(src.as_raw_fd(), SIOCATMARK as _, &mut at) };
    rc == 0 && at != 0
}

/// Elsewhere no splice, and no check: see the Linux version.
#[cfg(not(target_os = "linux"))]
fn at_urgent_mark(_src: &TcpStream) -> bool {
    false
}

/// True when `src`'s readiness alone says EOF: the FIN came before the last
/// read, which found the queue empty (a short read or `EAGAIN` cleared
/// "readable" but never "read closed", and new data would have set
/// "readable" again). Not after an error: a reset is read, so that it ends
/// the relay as a failure. (tokio's `Ready::is_readable` is also true for
/// "read closed", hence the bit test.)
fn eof_known(ready: Ready) -> bool {
    fin_came(ready) && (ready & Ready::READABLE).is_empty()
}

/// True when the peer's FIN had arrived before this readiness was seen, so
/// that a read which drains the queue (a short read) reads the last bytes.
fn fin_came(ready: Ready) -> bool {
    ready.is_read_closed() && !ready.is_error()
}

/// What one copy burst did.
enum Copied {
    /// `src` had nothing after all.
    Nothing,
    /// `src` sent EOF.
    Eof,
    /// Read the last bytes before `src`'s EOF, and sent them all with
    /// `MSG_MORE`: the caller's half-close or close sends them with the FIN.
    Last,
    /// Read this many bytes and sent them all.
    All(usize),
    /// `dst` could not take everything: these bytes are still to send.
    Part(Vec<u8>),
    /// Read up to an urgent mark, or on after one: `src` may hold more,
    /// which readiness will not announce. Sent all, or these bytes are
    /// still to send.
    More(Option<Vec<u8>>),
}

/// One `recv` into a stack buffer and as many `send`s as `dst` takes now;
/// only bytes `dst` cannot take yet are copied to the heap.
fn copy_burst(
    src: &TcpStream,
    dst: &TcpStream,
    counter: &AtomicU64,
    activity: &Activity,
    read: Read,
) -> io::Result<Copied> {
    let mut buf = [MaybeUninit::<u8>::uninit(); COPY_BUF];
    let received = match read {
        Read::Ready { .. } => drained_io(src, Interest::READABLE, COPY_BUF, || {
            sys::recv(src, &mut buf)
        }),
        // Readiness was cleared by the read that stopped at the mark.
        Read::On => sys::recv(src, &mut buf),
    };
    let n = match received {
        Ok(0) => return Ok(Copied::Eof),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Copied::Nothing),
        Err(e) => return Err(e),
    };
    // SAFETY: recv initialised the first `n` bytes.
    let data = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
    counter.fetch_add(n as u64, Ordering::Relaxed);
    activity.touch();
    // A short read after the FIN drained the queue, nothing follows, unless
    // it stopped at an urgent mark.
    let short_after_fin = matches!(read, Read::Ready { fin_came: true }) && n < COPY_BUF;
    let more = matches!(read, Read::On) || (short_after_fin && at_urgent_mark(src));
    let last = short_after_fin && !more;
    let mut sent = 0;
    while sent < n {
        let left = &data[sent..];
        match drained_io(dst, Interest::WRITABLE, left.len(), || {
            sys::send(dst, left, last)
        }) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(m) => sent += m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let rest = left.to_vec();
                return Ok(if more {
                    Copied::More(Some(rest))
                } else {
                    Copied::Part(rest)
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(if more {
        Copied::More(None)
    } else if last {
        Copied::Last
    } else {
        Copied::All(n)
    })
}

/// Sends what `dst` could not take during a burst, waiting as it drains.
async fn write_rest(dst: &TcpStream, mut rest: &[u8]) -> io::Result<()> {
    while !rest.is_empty() {
        dst.writable().await?;
        match drained_io(dst, Interest::WRITABLE, rest.len(), || {
            sys::send(dst, rest, false)
        }) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(m) => rest = &rest[m..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs `op`, a `recv` or `send` of at most `len` bytes on a stream socket,
/// if `stream` is ready for `interest`. A short result means the receive
/// queue is empty (or the send buffer full) right now, so the readiness is
/// cleared as a `WouldBlock` would clear it, and the next attempt waits for
/// the next event instead of failing a system call. Readiness that arrived
/// meanwhile is kept (tokio compares event ticks), and EOF and errors stay
/// visible (tokio never clears its closed bits).
fn drained_io(
    stream: &TcpStream,
    interest: Interest,
    len: usize,
    op: impl FnOnce() -> io::Result<usize>,
) -> io::Result<usize> {
    let mut short = None;
    let result = stream.try_io(interest, || {
        let n = op()?;
        if n > 0 && n < len {
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match (result, short) {
        (Err(_), Some(n)) => Ok(n),
        (result, _) => result,
    }
}

/// Plain `recv`/`send` on the socket's descriptor: inside `try_io`, which
/// owns the readiness bookkeeping.
#[cfg(unix)]
pub(crate) mod sys {
    use std::io;
    use std::mem::MaybeUninit;
    use std::os::fd::AsRawFd;

    use tokio::net::TcpStream;

    pub(crate) fn recv(stream: &impl AsRawFd, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        // SAFETY: `buf` is writable for its length; recv writes at most that.
        let n = unsafe { libc::recv(stream.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// `more`: hold the bytes back for what follows (`MSG_MORE`, Linux), here
    /// always the FIN of a half-close or close, which then goes with them.
    pub(super) fn send(stream: &TcpStream, buf: &[u8], more: bool) -> io::Result<usize> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let flags = {
            let _ = more;
            0
        };
        // SAFETY: `buf` is readable for its length.
        let n = unsafe { libc::send(stream.as_raw_fd(), buf.as_ptr().cast(), buf.len(), flags) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

/// Elsewhere, through tokio's own calls (readiness cleared by `WouldBlock` only).
#[cfg(not(unix))]
mod sys {
    use std::io;
    use std::mem::MaybeUninit;

    use tokio::net::TcpStream;

    pub(super) fn recv(stream: &TcpStream, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        for b in buf.iter_mut() {
            b.write(0);
        }
        // SAFETY: every byte was just initialised.
        let buf = unsafe { &mut *(buf as *mut [MaybeUninit<u8>] as *mut [u8]) };
        stream.try_read(buf)
    }

    pub(super) fn send(stream: &TcpStream, buf: &[u8], _more: bool) -> io::Result<usize> {
        stream.try_write(buf)
    }
}

/// Caps the bytes queued unsent in `stream` (`TCP_NOTSENT_LOWAT`; elsewhere
/// than Linux the kernel's buffering stays as it is).
fn set_notsent_lowat(stream: &TcpStream, bytes: u32) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        socket2::SockRef::from(stream).set_tcp_notsent_lowat(bytes)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (stream, bytes);
        Ok(())
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

    use super::{Activity, CHUNK, COPY_BUF};

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
            // Fewer, larger bursts. Refused past the user's pipe quota: the
            // pipe then keeps its default size, and splice moves what fits.
            // SAFETY: a pipe descriptor of ours, an int argument.
            unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
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

    /// What one splice burst did.
    pub(super) enum Spliced {
        /// `src` had nothing after all.
        Nothing,
        /// `src` sent EOF.
        Eof,
        /// Moved this many bytes, all sent.
        Moved(usize),
        /// Nothing moved: no pipe to be had, or splice refuses these sockets.
        Unavailable,
    }

    /// One direction's splicing: the pipe it holds during a bulk transfer,
    /// and whether splice works for these sockets at all.
    pub(super) struct Splicer<'a> {
        pool: &'a PipePool,
        pipe: Option<Pipe>,
        refused: bool,
    }

    impl<'a> Splicer<'a> {
        pub(super) fn new(pool: &'a PipePool) -> Self {
            Splicer {
                pool,
                pipe: None,
                refused: false,
            }
        }

        /// False once splice refused these sockets: copy from then on.
        pub(super) fn usable(&self) -> bool {
            !self.refused
        }

        /// Moves one burst `src` → pipe → `dst`. The pipe is only ever filled
        /// when it is empty, with at most its capacity, so `EAGAIN` on the way
        /// in always means the socket has nothing to read, and on the way out
        /// that the socket cannot take more: tokio's readiness stays truthful.
        /// (A short splice in proves nothing: the pipe may have run out of
        /// slots before the socket ran out of data.)
        pub(super) async fn step(
            &mut self,
            src: &TcpStream,
            dst: &TcpStream,
            counter: &AtomicU64,
            activity: &Activity,
        ) -> io::Result<Spliced> {
            let p = match self.pipe.take() {
                Some(p) => p,
                None => match self.pool.take() {
                    Ok(p) => p,
                    Err(_) => return Ok(Spliced::Unavailable),
                },
            };
            let src_fd = src.as_raw_fd();
            let n = match src.try_io(Interest::READABLE, || {
                splice(src_fd, p.write.as_raw_fd(), CHUNK)
            }) {
                Ok(0) => {
                    self.pool.put(p);
                    return Ok(Spliced::Eof);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Idle with an empty pipe: give it back until data comes.
                    self.pool.put(p);
                    return Ok(Spliced::Nothing);
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
                    self.pool.put(p);
                    self.refused = true;
                    return Ok(Spliced::Unavailable);
                }
                Err(e) => return Err(e),
            };
            counter.fetch_add(n as u64, Ordering::Relaxed);
            activity.touch();
            let dst_fd = dst.as_raw_fd();
            let mut left = n;
            while left > 0 {
                dst.writable().await?;
                match dst.try_io(Interest::WRITABLE, || {
                    splice(p.read.as_raw_fd(), dst_fd, left)
                }) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(m) => left -= m.min(left),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    // The pipe may still hold data: dropped, not parked.
                    Err(e) => return Err(e),
                }
            }
            if n >= COPY_BUF {
                // Still bulk: keep the pipe for the next burst.
                self.pipe = Some(p);
            } else {
                self.pool.put(p);
            }
            Ok(Spliced::Moved(n))
        }
    }

    impl Drop for Splicer<'_> {
        fn drop(&mut self) {
            // A held pipe is empty (every burst is sent whole before the
            // next), so it can be parked.
            if let Some(p) = self.pipe.take() {
                self.pool.put(p);
            }
        }
    }
}

/// Segments a TCP socket has sent and received so far (`tcpi_segs_out`
/// and `tcpi_segs_in` of Linux's `struct tcp_info`, past the fields libc
/// declares), for tests that count packets.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn tcp_segments(stream: &impl std::os::fd::AsRawFd) -> (u32, u32) {
    const SEGS_OUT: usize = 136;
    let mut info = [0u8; 256];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes; the kernel writes at most
    // that and says how much in `len`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "{}", io::Error::last_os_error());
    assert!(len as usize >= SEGS_OUT + 8, "tcp_info of {len} bytes");
    let field = |at: usize| u32::from_ne_bytes(info[at..at + 4].try_into().unwrap());
    (field(SEGS_OUT), field(SEGS_OUT + 4))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use crate::routes::{test_route, RouteTable};

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    /// A bound on unsent bytes (smaller than the default, so that the
    /// transfers here hit it), with which every test runs.
    fn settings(idle_timeout: Duration) -> RelaySettings {
        RelaySettings {
            idle_timeout,
            notsent_lowat: 65_536,
        }
    }

    /// The relay between `a` and `b` on a task of its own.
    fn spawn_relay(
        a: impl std::borrow::Borrow<TcpStream> + Send + 'static,
        b: impl std::borrow::Borrow<TcpStream> + Send + 'static,
        pipes: &Arc<PipePool>,
        state: &Arc<RouteState>,
        idle_timeout: Duration,
    ) -> tokio::task::JoinHandle<RelayEnd> {
        let (pipes, state) = (pipes.clone(), state.clone());
        tokio::spawn(async move {
            relay(
                a.borrow(),
                b.borrow(),
                &pipes,
                &state,
                &settings(idle_timeout),
            )
            .await
        })
    }

    /// How the relay task ended; it must end within 5 s.
    async fn ended(relay: tokio::task::JoinHandle<RelayEnd>) -> RelayEnd {
        tokio::time::timeout(Duration::from_secs(5), relay)
            .await
            .expect("the relay ends")
            .expect("the relay task does not panic")
    }

    fn table() -> (Arc<RouteTable>, Arc<RouteState>) {
        let t = Arc::new(RouteTable::new());
        t.replace(vec![test_route(1, &["a.example"])]).unwrap();
        let state = t.get(1).unwrap().state.clone();
        (t, state)
    }

    /// client ⇄ [a | b] ⇄ upstream, with relay between a and b.
    #[tokio::test]
    async fn relays_both_ways_with_half_close_and_counts_bytes() {
        let (mut client, a) = pair().await;
        let (b, mut upstream) = pair().await;
        let (_t, state) = table();
        let pipes = Arc::new(PipePool::new(4));
        let relay = spawn_relay(a, b, &pipes, &state, Duration::from_secs(10));
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
        let end = relay.await.unwrap();
        let idle_pipes = pipes.idle();
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

    #[cfg(target_os = "linux")]
    fn notsent_lowat(stream: &TcpStream) -> u32 {
        socket2::SockRef::from(stream).tcp_notsent_lowat().unwrap()
    }

    /// Small exchanges leave the sockets as they are; a bulk direction caps
    /// the unsent bytes of its receiving socket, and only that one.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn bulk_caps_the_unsent_bytes_of_the_receiving_socket_only() {
        let (mut client, a) = pair().await;
        let (b, mut upstream) = pair().await;
        let (a, b) = (Arc::new(a), Arc::new(b));
        let (_t, state) = table();
        let pipes = Arc::new(PipePool::new(4));
        let relay = spawn_relay(
            a.clone(),
            b.clone(),
            &pipes,
            &state,
            Duration::from_secs(10),
        );
        let mut small = [0u8; 10];
        client.write_all(b"0123456789").await.unwrap();
        upstream.read_exact(&mut small).await.unwrap();
        upstream.write_all(b"abcdefghij").await.unwrap();
        client.read_exact(&mut small).await.unwrap();
        assert_eq!((notsent_lowat(&a), notsent_lowat(&b)), (0, 0));

        let bulk: Vec<u8> = (0..1_000_000u32).map(|i| (i % 249) as u8).collect();
        let sent = bulk.clone();
        let writer = tokio::spawn(async move {
            upstream.write_all(&sent).await.unwrap();
            upstream
        });
        let mut got = vec![0u8; bulk.len()];
        client.read_exact(&mut got).await.unwrap();
        assert!(got == bulk);
        // The client's side got the cap, the VM's side (nothing bulk sent
        // to it) did not.
        assert_eq!((notsent_lowat(&a), notsent_lowat(&b)), (65_536, 0));
        drop(writer.await.unwrap());
        drop(client);
        let end = ended(relay).await;
        assert!(matches!(end, RelayEnd::Done), "{end:?}");
    }

    /// Bursts of every size, each followed at once by the sender's close:
    /// whatever order the data, the FIN and the readiness events come in,
    /// every byte arrives before the EOF (short reads and EOF inferred from
    /// readiness must never drop a tail).
    #[tokio::test]
    async fn data_then_close_always_arrives_whole() {
        let (_t, state) = table();
        let pipes = Arc::new(PipePool::new(4));
        for round in 0..200usize {
            let (mut client, a) = pair().await;
            let (b, mut upstream) = pair().await;
            let relay = spawn_relay(a, b, &pipes, &state, Duration::from_secs(10));
            // 1 byte to a bit over four copy buffers, in one or two writes.
            let len = 1 + (round * 331) % (4 * COPY_BUF + 100);
            let payload: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let (head, tail) = payload.split_at(len / 3);
            upstream.write_all(head).await.unwrap();
            if round % 2 == 0 {
                tokio::task::yield_now().await;
            }
            upstream.write_all(tail).await.unwrap();
            drop(upstream);
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            assert!(
                got == payload,
                "round {round}: {} of {len} bytes",
                got.len()
            );
            drop(client);
            let end = ended(relay).await;
            assert!(matches!(end, RelayEnd::Done), "round {round}: {end:?}");
        }
    }

    /// EOF is inferred from readiness only once the queue was drained after
    /// the FIN came, and never over an error (a reset must be read).
    #[test]
    fn eof_and_fin_are_read_from_readiness_bits() {
        let closed = Ready::READ_CLOSED;
        let data_and_fin = Ready::READABLE | Ready::READ_CLOSED;
        assert!(eof_known(closed), "FIN, queue drained");
        assert!(!eof_known(data_and_fin), "bytes may precede the FIN");
        assert!(!eof_known(Ready::READABLE));
        assert!(!eof_known(closed | Ready::ERROR), "a reset is read");
        assert!(fin_came(data_and_fin) && fin_came(closed));
        assert!(!fin_came(Ready::READABLE));
        assert!(!fin_came(data_and_fin | Ready::ERROR));
    }

    /// An answer that comes with its sender's FIN goes on with the FIN in
    /// the same segment, and the EOF costs no extra read.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn last_bytes_and_fin_go_on_in_one_segment() {
        let (_t, state) = table();
        let pipes = Arc::new(PipePool::new(4));
        let (mut client, a) = pair().await;
        let (b, upstream) = pair().await;
        let relay = spawn_relay(a, b, &pipes, &state, Duration::from_secs(10));
        let before = tcp_segments(&client).1;
        // Corked, then the FIN: one segment carries both to the relay.
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        let sent = socket2::SockRef::from(&upstream)
            .send_with_flags(answer, libc::MSG_MORE)
            .unwrap();
        assert_eq!(sent, answer.len());
        socket2::SockRef::from(&upstream)
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, answer);
        assert_eq!(
            tcp_segments(&client).1 - before,
            1,
            "the answer and the FIN in one segment"
        );
        drop(client);
        assert!(matches!(ended(relay).await, RelayEnd::Done));
        drop(upstream);
    }

    /// TCP urgent data (`MSG_OOB`) behind ordinary bytes: a read stops short
    /// before the urgent byte and splice does not pass it, so neither may be
    /// taken for a drained queue. The stream arrives whole, without the
    /// out-of-band byte, and then the EOF: from the copy path and from the
    /// splice path of a bulk transfer, with the FIN queued behind it or sent
    /// later.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn urgent_data_neither_truncates_nor_stalls_a_stream() {
        let (_t, state) = table();
        let pipes = Arc::new(PipePool::new(4));
        for (before, fin_queued) in [(4, true), (3 * COPY_BUF, true), (3 * COPY_BUF, false)] {
            let case = format!("{before} bytes before the urgent byte, FIN queued: {fin_queued}");
            let (mut client, a) = pair().await;
            let (b, mut upstream) = pair().await;
            let mut expected: Vec<u8> = (0..before).map(|i| (i % 251) as u8).collect();
            let tail = b"after the urgent byte";
            // All of it queued at the relay's socket before the relay reads.
            client.write_all(&expected).await.unwrap();
            let oob = socket2::SockRef::from(&client)
                .send_out_of_band(b"!")
                .unwrap();
            assert_eq!(oob, 1);
            client.write_all(tail).await.unwrap();
            if fin_queued {
                client.shutdown().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let relay = spawn_relay(a, b, &pipes, &state, Duration::from_secs(30));
            expected.extend_from_slice(tail);
            let mut got = vec![0u8; expected.len()];
            tokio::time::timeout(Duration::from_secs(5), upstream.read_exact(&mut got))
                .await
                .unwrap_or_else(|_| panic!("{case}: the bytes after the urgent byte stall"))
                .unwrap_or_else(|e| panic!("{case}: stream cut short: {e}"));
            assert!(got == expected, "{case}: other bytes arrived");
            if !fin_queued {
                client.shutdown().await.unwrap();
            }
            let mut rest = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), upstream.read_to_end(&mut rest))
                .await
                .unwrap_or_else(|_| panic!("{case}: no EOF"))
                .unwrap();
            assert!(rest.is_empty(), "{case}: {} bytes more", rest.len());
            drop((client, upstream));
            let end = ended(relay).await;
            assert!(matches!(end, RelayEnd::Done), "{case}: {end:?}");
        }
    }

    #[tokio::test]
    async fn idle_connections_are_closed() {
        let (mut client, a) = pair().await;
        let (b, mut upstream) = pair().await;
        let (_t, state) = table();
        let pipes = Arc::new(PipePool::new(4));
        let started = Instant::now();
        let relay = spawn_relay(a, b, &pipes, &state, Duration::from_millis(300));
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
        let pipes = Arc::new(PipePool::new(4));
        let relay = spawn_relay(a, b, &pipes, &state, Duration::from_secs(10));
        // Linger 0: close sends RST.
        let std_upstream = upstream.into_std().unwrap();
        socket_linger_zero(&std_upstream);
        drop(std_upstream);
        let end = ended(relay).await;
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
        let pipes = Arc::new(PipePool::new(4));
        let relay = spawn_relay(a, b, &pipes, &state, Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(t.remove(1));
        let end = ended(relay).await;
        assert!(matches!(end, RelayEnd::RouteClosed), "{end:?}");
    }
}
