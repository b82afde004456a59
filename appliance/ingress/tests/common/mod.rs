//! Shared by the integration tests: certificates, real rustls ClientHellos,
//! TLS and raw upstreams on loopback, and a running ingress.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dc_ingress::{bind_reuseport, Ingress, IngressConfig, RouteTable};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::client::{EchGreaseConfig, EchMode};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::RootCertStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A test CA and the leaf certificates it issues.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki { ca }
    }

    /// A leaf for `names`: its DER and private key.
    pub fn leaf(&self, names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.der().clone(), key)
    }

    /// A client trusting this CA only.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

/// What a ClientHello should carry.
#[derive(Clone, Default)]
pub struct HelloSpec {
    pub alpn: Vec<Vec<u8>>,
    pub ech_grease: bool,
    pub tls12_only: bool,
    pub no_sni: bool,
}

fn hello_config(spec: &HelloSpec) -> rustls::ClientConfig {
    let builder = rustls::ClientConfig::builder_with_provider(provider());
    let builder = if spec.ech_grease {
        let suite = rustls::crypto::aws_lc_rs::hpke::ALL_SUPPORTED_SUITES[0];
        let (public_key, _) = suite.generate_key_pair().unwrap();
        builder
            .with_ech(EchMode::Grease(EchGreaseConfig::new(suite, public_key)))
            .unwrap()
    } else if spec.tls12_only {
        builder
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
    } else {
        builder.with_safe_default_protocol_versions().unwrap()
    };
    let mut config = builder
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = spec.alpn.clone();
    config.enable_sni = !spec.no_sni;
    config
}

/// The first flight of a real rustls client connecting to `name`.
pub fn rustls_hello(name: &str, spec: &HelloSpec) -> Vec<u8> {
    let config = Arc::new(hello_config(spec));
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(config, server_name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// Re-frames the handshake message of a single-record hello into records
/// whose payload sizes cycle through `sizes`.
pub fn refragment(wire: &[u8], sizes: &[usize]) -> Vec<u8> {
    let len = usize::from(u16::from_be_bytes([wire[3], wire[4]]));
    let message = &wire[5..5 + len];
    let mut out = Vec::new();
    let mut offset = 0;
    let mut i = 0;
    while offset < message.len() {
        let n = sizes[i % sizes.len()].clamp(1, message.len() - offset);
        out.extend([22, 3, 1]);
        out.extend((n as u16).to_be_bytes());
        out.extend(&message[offset..offset + n]);
        offset += n;
        i += 1;
    }
    out.extend(&wire[5 + len..]);
    out
}

/// A rustls TLS server on `ip`: per connection, completes the handshake,
/// sends `greeting`, then echoes until the client closes.
pub struct TlsUpstream {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
}

pub async fn tls_upstream(
    ip: &str,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    greeting: Vec<u8>,
) -> TlsUpstream {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(format!("{ip}:0")).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let greeting = Arc::new(greeting);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::Relaxed);
            let acceptor = acceptor.clone();
            let greeting = greeting.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if tls.write_all(&greeting).await.is_err() {
                    return;
                }
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tls.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = tls.shutdown().await;
            });
        }
    });
    TlsUpstream { addr, accepted }
}

/// A plain TCP server on `ip` that echoes what it reads.
pub async fn echo_upstream(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind(format!("{ip}:0")).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// An ingress on 127.0.0.1 with two TLS listeners (SO_REUSEPORT) and one HTTP.
pub struct Running {
    pub ingress: Ingress,
    pub tls: SocketAddr,
    pub http: SocketAddr,
}

pub async fn start_ingress(config: IngressConfig, routes: Arc<RouteTable>) -> Running {
    let ingress = Ingress::new(config, routes).unwrap();
    let tls_listeners = bind_reuseport("127.0.0.1:0".parse().unwrap(), 2).unwrap();
    let tls = tls_listeners[0].local_addr().unwrap();
    for l in tls_listeners {
        let i = ingress.clone();
        tokio::spawn(async move { i.serve_tls(l).await });
    }
    let http_listener = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1)
        .unwrap()
        .remove(0);
    let http = http_listener.local_addr().unwrap();
    let i = ingress.clone();
    tokio::spawn(async move { i.serve_http(http_listener).await });
    Running { ingress, tls, http }
}

/// A TCP connection to `to` from the loopback address `from_ip`.
pub async fn connect_from(from_ip: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(format!("{from_ip}:0").parse().unwrap())
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until EOF or error; `Ok(bytes)` on a clean EOF, `Err` on a reset.
pub async fn read_to_close(stream: &mut TcpStream, within: Duration) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut out)).await {
        Ok(Ok(_)) => Ok(out),
        Ok(Err(e)) => Err(e),
        Err(_) => panic!(
            "connection still open after {within:?} (read {} bytes)",
            out.len()
        ),
    }
}

/// Descriptors open in this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Descriptors open in this process, less the pipes the ingress keeps
/// pooled on purpose (two descriptors each, bounded by `max_idle_pipes`).
pub fn fds_besides_pooled_pipes(ingress: &dc_ingress::Ingress) -> usize {
    open_fds().saturating_sub(2 * ingress.metrics().idle_pipes as usize)
}

/// Resident memory of this process, in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Polls `cond` every 50 ms for up to `within`.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deterministic bytes for payload checks.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u32::from(seed) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}
