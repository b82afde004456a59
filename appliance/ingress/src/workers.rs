//! The ingress on its own threads, one per core: each thread runs a
//! current-thread tokio runtime with its own `SO_REUSEPORT` listener on every
//! port, so the kernel spreads new connections over the threads and a
//! connection then lives on the thread that accepted it: no work stealing, no
//! wake-up crossing threads, no runtime shared with the agent's own work.
//!
//! The threads share the route table, limits, counters and pipe pool (one
//! [`Ingress`]), so routes and metrics are the same whichever thread serves.

use std::io;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::{bind_std_reuseport, Ingress};

/// Where to listen, and on how many threads.
#[derive(Debug, Clone, Copy)]
pub struct Listen {
    /// Port 443's address (routes on the ClientHello), if served.
    pub tls: Option<SocketAddr>,
    /// Port 80's address (routes on the Host header), if served.
    pub http: Option<SocketAddr>,
    /// Threads, each with one listener per port; at least one.
    pub threads: usize,
}

/// The running worker threads. Dropping it (or [`Workers::stop`]) stops
/// accepting and closes the connections the threads still relay.
#[derive(Debug)]
pub struct Workers {
    tls: Option<SocketAddr>,
    http: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// The bound TLS address (its real port when 0 was asked for).
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// Threads serving.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Stops every thread and waits for them.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        let _ = self.stop.send(true);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shut_down();
    }
}

impl Ingress {
    /// Binds every listener first (so an address in use fails here, with
    /// nothing started), then starts `listen.threads` threads serving them.
    /// With port 0 all threads share the port the first listener got.
    pub fn spawn_workers(&self, listen: Listen) -> io::Result<Workers> {
        let threads = listen.threads.max(1);
        let tls = listen
            .tls
            .map(|addr| bind_std_reuseport(addr, threads))
            .transpose()?;
        let http = listen
            .http
            .map(|addr| bind_std_reuseport(addr, threads))
            .transpose()?;
        let tls_addr = tls.as_ref().map(|l| l[0].local_addr()).transpose()?;
        let http_addr = http.as_ref().map(|l| l[0].local_addr()).transpose()?;
        let mut tls = tls.unwrap_or_default().into_iter();
        let mut http = http.unwrap_or_default().into_iter();
        let (stop, stopped) = watch::channel(false);
        let mut workers = Workers {
            tls: tls_addr,
            http: http_addr,
            stop,
            threads: Vec::with_capacity(threads),
        };
        for n in 0..threads {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (tls, http) = (tls.next(), http.next());
            let ingress = self.clone();
            let mut stopped = stopped.clone();
            let thread = std::thread::Builder::new()
                .name(format!("ingress-{n}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        if let Err(e) = ingress.serve_listeners(tls, http, &mut stopped).await {
                            tracing::error!(error = %e, thread = n, "ingress listener stopped");
                        }
                    });
                })?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// Serves this thread's listeners until `stopped` turns true (or its
    /// sender is gone) or a listener fails for good.
    async fn serve_listeners(
        &self,
        tls: Option<std::net::TcpListener>,
        http: Option<std::net::TcpListener>,
        stopped: &mut watch::Receiver<bool>,
    ) -> io::Result<()> {
        let tls = tls.map(TcpListener::from_std).transpose()?;
        let http = http.map(TcpListener::from_std).transpose()?;
        let serve_tls = async {
            match tls {
                Some(l) => self.serve_tls(l).await,
                None => std::future::pending().await,
            }
        };
        let serve_http = async {
            match http {
                Some(l) => self.serve_http(l).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = serve_tls => r,
            r = serve_http => r,
            _ = stopped.wait_for(|stop| *stop) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::{IngressConfig, RouteTable};

    #[test]
    fn workers_share_one_port_and_stop() {
        let routes = Arc::new(RouteTable::new());
        routes
            .replace(vec![crate::routes::test_route(1, &["a.example"])])
            .unwrap();
        let ingress = Ingress::new(IngressConfig::default(), routes).unwrap();
        let workers = ingress
            .spawn_workers(Listen {
                tls: Some("127.0.0.1:0".parse().unwrap()),
                http: Some("127.0.0.1:0".parse().unwrap()),
                threads: 3,
            })
            .unwrap();
        assert_eq!(workers.threads(), 3);
        let (tls, http) = (workers.tls_addr().unwrap(), workers.http_addr().unwrap());
        assert_ne!(tls.port(), 0);
        // An unknown Host gets 421 from whichever thread accepted it.
        for _ in 0..6 {
            use std::io::{Read, Write};
            let mut c = std::net::TcpStream::connect(http).unwrap();
            c.write_all(b"GET / HTTP/1.1\r\nHost: nobody.example\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            c.read_to_string(&mut answer).unwrap();
            assert!(answer.starts_with("HTTP/1.1 421 "), "{answer}");
        }
        assert_eq!(ingress.metrics().http.refusals.unknown_name, 6);
        workers.stop();
        // Nothing listens any more.
        assert!(std::net::TcpStream::connect(tls).is_err());
        // The port is free again: binding it works.
        let again = ingress
            .spawn_workers(Listen {
                tls: Some(tls),
                http: None,
                threads: 1,
            })
            .unwrap();
        assert_eq!(again.tls_addr(), Some(tls));
    }
}
