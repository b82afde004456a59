//! The ingress between real clients and real servers on loopback: TLS routed
//! on SNI to rustls servers whose certificates and bytes reach the client
//! untouched, HTTP routed on Host, PROXY v2, refusals, limits, and a contract
//! ending without disturbing its neighbours.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dc_ingress::{EchPolicy, IngressConfig, Route, RouteTable};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

fn route(id: u64, names: &[&str], tls: SocketAddr, http: Option<SocketAddr>) -> Route {
    Route {
        contract_id: id,
        names: names.iter().map(|s| s.to_string()).collect(),
        tls_upstream: tls,
        http_upstream: http,
        proxy_protocol: false,
        max_connections: 100,
    }
}

async fn tls_connect(
    pki: &Pki,
    ingress: SocketAddr,
    name: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(pki.client_config());
    let tcp = TcpStream::connect(ingress).await.unwrap();
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    tokio::time::timeout(WAIT, connector.connect(server_name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_reaches_the_right_vm_with_its_certificate_and_bytes_untouched() {
    let pki = Pki::new();
    let (cert_a, key_a) = pki.leaf(&["a.tenant.example"]);
    let (cert_b, key_b) = pki.leaf(&["b.tenant.example", "*.b-apps.example"]);
    let greeting_a = [b"vm-a:".as_slice(), &pattern(300_000, 1)].concat();
    let greeting_b = [b"vm-b:".as_slice(), &pattern(300_000, 2)].concat();
    let up_a = tls_upstream("127.0.0.2", cert_a.clone(), key_a, greeting_a.clone()).await;
    let up_b = tls_upstream("127.0.0.3", cert_b.clone(), key_b, greeting_b.clone()).await;

    let routes = Arc::new(RouteTable::new());
    routes
        .replace(vec![
            route(1, &["a.tenant.example"], up_a.addr, None),
            route(
                2,
                &["b.tenant.example", "*.b-apps.example"],
                up_b.addr,
                None,
            ),
        ])
        .unwrap();
    let run = start_ingress(IngressConfig::default(), routes).await;

    for (name, cert, greeting, seed) in [
        ("a.tenant.example", &cert_a, &greeting_a, 11u8),
        ("b.tenant.example", &cert_b, &greeting_b, 12),
        ("shop.b-apps.example", &cert_b, &greeting_b, 13),
    ] {
        let mut tls = tls_connect(&pki, run.tls, name).await;
        let presented = tls.get_ref().1.peer_certificates().unwrap();
        assert_eq!(presented.len(), 1);
        assert!(
            presented[0] == *cert,
            "{name}: the VM's own certificate, byte for byte"
        );
        let mut got = vec![0u8; greeting.len()];
        tls.read_exact(&mut got).await.unwrap();
        assert!(got == *greeting, "{name}: the VM's greeting");
        // A megabyte out and back, through splice both ways.
        let payload = pattern(1 << 20, seed);
        let (mut r, mut w) = tokio::io::split(tls);
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w
        });
        let mut echo = vec![0u8; payload.len()];
        r.read_exact(&mut echo).await.unwrap();
        assert!(echo == payload, "{name}: echo intact");
        let mut tls = r.unsplit(writer.await.unwrap());
        tls.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut rest))
            .await
            .unwrap();
    }
    assert_eq!(up_a.accepted.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(up_b.accepted.load(std::sync::atomic::Ordering::Relaxed), 2);

    let m = run.ingress.metrics();
    assert_eq!(m.tls.routed, 3);
    assert_eq!(m.tls.refusals.total(), 0);
    let a = m.routes.iter().find(|r| r.contract_id == 1).unwrap();
    let b = m.routes.iter().find(|r| r.contract_id == 2).unwrap();
    assert_eq!((a.connections_total, b.connections_total), (1, 2));
    assert!(a.bytes_client_to_upstream > 1 << 20 && a.bytes_upstream_to_client > 1_300_000);
    assert!(eventually(WAIT, || run.ingress.metrics().connections_active == 0).await);
    let json = serde_json::to_value(run.ingress.metrics()).unwrap();
    assert_eq!(json["routes"][1]["names"][0], "*.b-apps.example");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_bytes_pass_verbatim_and_proxy_v2_is_exact() {
    let echo = echo_upstream("127.0.0.2").await;
    let routes = Arc::new(RouteTable::new());
    let mut with_proxy = route(1, &["pp.example"], echo, Some(echo));
    with_proxy.proxy_protocol = true;
    routes
        .replace(vec![
            route(2, &["raw.example"], echo, Some(echo)),
            with_proxy,
        ])
        .unwrap();
    let run = start_ingress(IngressConfig::default(), routes).await;

    // Hello plus 5 MB after it: everything comes back as sent, in order.
    let hello = rustls_hello("raw.example", &HelloSpec::default());
    let mut sent = hello.clone();
    sent.extend(pattern(5_000_000, 3));
    let mut client = TcpStream::connect(run.tls).await.unwrap();
    let (mut r, mut w) = client.split();
    let write = async {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let read = r.read_to_end(&mut back);
    let (_, n) = tokio::join!(write, read);
    n.unwrap();
    assert!(
        back == sent,
        "echo of {} bytes, got {}",
        sent.len(),
        back.len()
    );

    // A hello in 7-byte records, dribbled in 3-byte writes: reassembled,
    // routed, and replayed as it came.
    let split = refragment(&rustls_hello("raw.example", &HelloSpec::default()), &[7]);
    assert!(dribble_echoed(run.tls, &split, 3).await == split);
    // The same for a request head on port 80.
    let request = b"GET /slow HTTP/1.1\r\nHost: raw.example\r\n\r\n";
    assert_eq!(dribble_echoed(run.http, request, 5).await, request);

    // PROXY v2 ahead of the hello, byte for byte as the spec lays it out.
    let hello = rustls_hello("pp.example", &HelloSpec::default());
    let mut client = TcpStream::connect(run.tls).await.unwrap();
    client.write_all(&hello).await.unwrap();
    let local = client.local_addr().unwrap();
    let mut want = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    want.extend([0x21, 0x11, 0x00, 0x0c]);
    want.extend([127, 0, 0, 1, 127, 0, 0, 1]);
    want.extend(local.port().to_be_bytes());
    want.extend(run.tls.port().to_be_bytes());
    want.extend(&hello);
    let mut got = vec![0u8; want.len()];
    tokio::time::timeout(WAIT, client.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, want);

    // The same on port 80, ahead of the request head.
    let request = b"GET / HTTP/1.1\r\nHost: pp.example\r\n\r\n";
    let mut client = TcpStream::connect(run.http).await.unwrap();
    client.write_all(request).await.unwrap();
    let local = client.local_addr().unwrap();
    let mut want = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    want.extend([0x21, 0x11, 0x00, 0x0c, 127, 0, 0, 1, 127, 0, 0, 1]);
    want.extend(local.port().to_be_bytes());
    want.extend(run.http.port().to_be_bytes());
    want.extend(request);
    let mut got = vec![0u8; want.len()];
    tokio::time::timeout(WAIT, client.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, want);
}

/// Sends `bytes` to `addr` in pieces of `piece` bytes a millisecond apart
/// and reads back as many (the upstream behind echoes).
async fn dribble_echoed(addr: SocketAddr, bytes: &[u8], piece: usize) -> Vec<u8> {
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.set_nodelay(true).unwrap();
    for p in bytes.chunks(piece) {
        client.write_all(p).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut back = vec![0u8; bytes.len()];
    tokio::time::timeout(WAIT, client.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    back
}

/// A tiny HTTP server answering every request with `tag` and the path.
async fn http_upstream(ip: &str, tag: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(format!("{ip}:0"))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head);
                let path = text.split(' ').nth(1).unwrap_or("").to_string();
                let body = format!("{tag} {path}");
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

async fn http_get(to: SocketAddr, request: &[u8]) -> String {
    let mut client = TcpStream::connect(to).await.unwrap();
    client.write_all(request).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, client.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8(response).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_on_host_for_acme_and_refuses_the_rest() {
    let web_a = http_upstream("127.0.0.2", "vm-a").await;
    let web_b = http_upstream("127.0.0.3", "vm-b").await;
    let routes = Arc::new(RouteTable::new());
    routes
        .replace(vec![
            route(1, &["a.tenant.example"], web_a, Some(web_a)),
            route(2, &["b.tenant.example"], web_b, Some(web_b)),
            route(3, &["tls-only.example"], web_b, None),
        ])
        .unwrap();
    let run = start_ingress(IngressConfig::default(), routes).await;

    let ok = http_get(
        run.http,
        b"GET /.well-known/acme-challenge/tok-a HTTP/1.1\r\nHost: A.Tenant.Example:80\r\n\r\n",
    )
    .await;
    assert!(
        ok.ends_with("vm-a /.well-known/acme-challenge/tok-a"),
        "{ok}"
    );
    let ok = http_get(
        run.http,
        b"GET /x HTTP/1.1\r\nHost: b.tenant.example\r\n\r\n",
    )
    .await;
    assert!(ok.ends_with("vm-b /x"), "{ok}");

    for (request, status) in [
        (
            &b"GET / HTTP/1.1\r\nHost: nobody.example\r\n\r\n"[..],
            "421",
        ),
        (b"GET / HTTP/1.1\r\nHost: tls-only.example\r\n\r\n", "421"),
        (b"GET / HTTP/1.1\r\n\r\n", "400"),
        (
            b"GET / HTTP/1.1\r\nHost: a.tenant.example\r\nHost: b.tenant.example\r\n\r\n",
            "400",
        ),
        (
            b"GET http://b.tenant.example/ HTTP/1.1\r\nHost: a.tenant.example\r\n\r\n",
            "400",
        ),
        (b"\x16\x03\x01\x02\x00\x01", "400"),
    ] {
        let response = http_get(run.http, request).await;
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status} ")),
            "{:?} → {response:?}",
            String::from_utf8_lossy(request)
        );
    }
    let m = run.ingress.metrics().http;
    assert_eq!(m.routed, 2);
    assert_eq!(m.refusals.unknown_name, 2);
    assert_eq!(m.refusals.no_name, 1);
    assert_eq!(m.refusals.malformed, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_close_without_routing_by_guess() {
    let echo = echo_upstream("127.0.0.2").await;
    let routes = Arc::new(RouteTable::new());
    routes
        .replace(vec![
            route(1, &["a.example"], echo, None),
            // Nothing listens there.
            route(2, &["down.example"], "127.0.0.9:9".parse().unwrap(), None),
        ])
        .unwrap();
    let config = IngressConfig {
        max_client_hello_bytes: 4096,
        ..IngressConfig::default()
    };
    let run = start_ingress(config.clone(), routes.clone()).await;

    let grease = rustls_hello(
        "a.example",
        &HelloSpec {
            ech_grease: true,
            ..HelloSpec::default()
        },
    );
    let no_sni = rustls_hello(
        "a.example",
        &HelloSpec {
            no_sni: true,
            ..HelloSpec::default()
        },
    );
    let mut oversized = rustls_hello("a.example", &HelloSpec::default());
    oversized.truncate(5);
    oversized[3..5].copy_from_slice(&8000u16.to_be_bytes());
    let mut sslv2 = vec![0x80, 0x2e, 0x01, 0x00, 0x02];
    sslv2.resize(48, 0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("no SNI", no_sni),
        ("ECH", grease.clone()),
        (
            "unknown name",
            rustls_hello("c.example", &HelloSpec::default()),
        ),
        (
            "HTTP on 443",
            b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n".to_vec(),
        ),
        ("SSLv2", sslv2),
        ("too large", oversized),
        (
            "upstream down",
            rustls_hello("down.example", &HelloSpec::default()),
        ),
    ];
    for (what, bytes) in &cases {
        let mut client = TcpStream::connect(run.tls).await.unwrap();
        client.write_all(bytes).await.unwrap();
        // Closed, and nothing ever came from a VM. A clean close where the
        // whole hello was read; a reset is allowed only when the ingress
        // stopped reading early (an oversized or foreign first record).
        match read_to_close(&mut client, WAIT).await {
            Ok(got) => assert!(got.is_empty(), "{what}: got {got:?}"),
            Err(e) => assert!(
                matches!(*what, "too large" | "SSLv2" | "HTTP on 443"),
                "{what}: {e}"
            ),
        }
    }
    let m = run.ingress.metrics();
    let r = m.tls.refusals;
    assert_eq!(
        (
            r.no_name,
            r.ech,
            r.unknown_name,
            r.malformed,
            r.too_large,
            r.upstream_unreachable
        ),
        (1, 1, 1, 2, 1, 1),
        "{r:?}"
    );
    assert_eq!(m.tls.routed, 0);
    let down = m.routes.iter().find(|r| r.contract_id == 2).unwrap();
    assert_eq!(down.refused_upstream_unreachable, 1);
    assert_eq!(down.connections_total, 0, "a connection the VM never took");

    // The same GREASE hello is routed on its outer name when the policy says so.
    let lenient = start_ingress(
        IngressConfig {
            ech: EchPolicy::RouteOuterName,
            ..config
        },
        routes,
    )
    .await;
    let mut client = TcpStream::connect(lenient.tls).await.unwrap();
    client.write_all(&grease).await.unwrap();
    let mut back = vec![0u8; grease.len()];
    tokio::time::timeout(WAIT, client.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, grease);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_per_source_and_per_route() {
    let echo = echo_upstream("127.0.0.2").await;
    let routes = Arc::new(RouteTable::new());
    let mut small = route(1, &["small.example"], echo, None);
    small.max_connections = 2;
    routes
        .replace(vec![small, route(2, &["other.example"], echo, None)])
        .unwrap();
    let run = start_ingress(
        IngressConfig {
            max_connections_per_source: 3,
            ..IngressConfig::default()
        },
        routes,
    )
    .await;

    let hello = |name: &str| rustls_hello(name, &HelloSpec::default());
    async fn routed(from: &str, to: SocketAddr, hello: &[u8]) -> TcpStream {
        let mut c = connect_from(from, to).await;
        c.write_all(hello).await.unwrap();
        let mut back = vec![0u8; hello.len()];
        tokio::time::timeout(WAIT, c.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        c
    }
    // Route limit: two connections to small.example, the third is refused.
    let _s1 = routed("127.0.0.1", run.tls, &hello("small.example")).await;
    let _s2 = routed("127.0.0.1", run.tls, &hello("small.example")).await;
    let mut s3 = connect_from("127.0.0.4", run.tls).await;
    s3.write_all(&hello("small.example")).await.unwrap();
    assert!(read_to_close(&mut s3, WAIT).await.unwrap().is_empty());
    // Source limit: 127.0.0.1 holds two; one more is allowed, then refused.
    let _o1 = routed("127.0.0.1", run.tls, &hello("other.example")).await;
    let mut o2 = connect_from("127.0.0.1", run.tls).await;
    let _ = o2.write_all(&hello("other.example")).await;
    let _ = read_to_close(&mut o2, WAIT).await;
    // Another source is not affected.
    let _o3 = routed("127.0.0.5", run.tls, &hello("other.example")).await;

    let m = run.ingress.metrics();
    assert_eq!(m.tls.refusals.route_limit, 1);
    assert_eq!(m.tls.refusals.source_limit, 1);
    assert_eq!(m.routes[0].refused_route_limit, 1);
    assert_eq!(m.routes[0].connections_active, 2);
    // s1, s2, o1 and o3; the refused ones are gone.
    assert!(eventually(WAIT, || run.ingress.metrics().connections_active == 4).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_ending_closes_its_connections_only() {
    let pki = Pki::new();
    let (cert_a, key_a) = pki.leaf(&["a.tenant.example"]);
    let (cert_b, key_b) = pki.leaf(&["b.tenant.example"]);
    let up_a = tls_upstream("127.0.0.2", cert_a, key_a, b"a".to_vec()).await;
    let up_b = tls_upstream("127.0.0.3", cert_b, key_b, b"b".to_vec()).await;
    let routes = Arc::new(RouteTable::new());
    routes
        .replace(vec![
            route(1, &["a.tenant.example"], up_a.addr, None),
            route(2, &["b.tenant.example"], up_b.addr, None),
        ])
        .unwrap();
    let run = start_ingress(IngressConfig::default(), routes.clone()).await;

    let mut a = tls_connect(&pki, run.tls, "a.tenant.example").await;
    let mut b = tls_connect(&pki, run.tls, "b.tenant.example").await;
    let mut one = [0u8; 1];
    a.read_exact(&mut one).await.unwrap();
    b.read_exact(&mut one).await.unwrap();

    // Contract 1 ends; contract 2's route is re-sent unchanged.
    let update = routes
        .replace(vec![route(2, &["b.tenant.example"], up_b.addr, None)])
        .unwrap();
    assert_eq!(update.removed, vec![1]);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, a.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(
        closed.is_err() || rest.is_empty(),
        "tenant A's connection ended"
    );

    // Tenant B's connection carries on.
    b.write_all(b"still here").await.unwrap();
    let mut echo = [0u8; 10];
    tokio::time::timeout(WAIT, b.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"still here");

    // And A's name is no longer routed.
    let mut c = TcpStream::connect(run.tls).await.unwrap();
    c.write_all(&rustls_hello("a.tenant.example", &HelloSpec::default()))
        .await
        .unwrap();
    assert!(read_to_close(&mut c, WAIT).await.unwrap().is_empty());
    assert_eq!(run.ingress.metrics().tls.refusals.unknown_name, 1);
}

/// A client that connects and says nothing is cut by the handshake deadline
/// like any slow sender (the first read finds nothing, and the connection
/// waits in the event loop), while a client that speaks at once is routed
/// without waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_accepted_late_and_cut_by_the_deadline() {
    let echo = echo_upstream("127.0.0.1").await;
    let routes = Arc::new(RouteTable::new());
    routes
        .replace(vec![route(1, &["a.example"], echo, None)])
        .unwrap();
    let config = IngressConfig {
        handshake_timeout_ms: 500,
        handshake_grace_ms: 500,
        ..IngressConfig::default()
    };
    let run = start_ingress(config, routes).await;
    let started = tokio::time::Instant::now();
    let mut silent = TcpStream::connect(run.tls).await.unwrap();
    // Meanwhile a client that speaks at once is served.
    let mut talker = TcpStream::connect(run.tls).await.unwrap();
    talker
        .write_all(&rustls_hello("a.example", &HelloSpec::default()))
        .await
        .unwrap();
    let mut first = [0u8; 5];
    talker.read_exact(&mut first).await.unwrap();
    assert_eq!(first[0], 0x16, "the echo upstream returns the hello");
    assert!(started.elapsed() < Duration::from_millis(500));
    let rest = read_to_close(&mut silent, WAIT).await;
    assert!(matches!(rest, Ok(ref got) if got.is_empty()), "{rest:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "silent client closed after {took:?}"
    );
    let m = run.ingress.metrics();
    assert_eq!(m.tls.refusals.too_slow, 1, "{m:?}");
    assert_eq!(m.tls.routed, 1);
}
