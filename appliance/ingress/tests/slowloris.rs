//! Slow senders: clients trickling their ClientHello are cut by the
//! handshake deadline (minimum rate first, total time for the patient ones),
//! a normal client is served all the while, per-source limits keep one
//! source from taking everyone's room, and no descriptor is left behind.
//!
//! One test function, because it counts this process's descriptors.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dc_ingress::{IngressConfig, Route, RouteTable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Sends `bytes` `chunk` at a time every `every` until the ingress closes
/// the connection; returns how long that took.
async fn trickle(
    from: &str,
    to: SocketAddr,
    bytes: Arc<Vec<u8>>,
    chunk: usize,
    every: Duration,
) -> Duration {
    let start = Instant::now();
    let mut c = connect_from(from, to).await;
    let mut sent = 0;
    loop {
        if sent < bytes.len() {
            let end = (sent + chunk).min(bytes.len());
            if c.write_all(&bytes[sent..end]).await.is_err() {
                break;
            }
            sent = end;
        }
        let mut b = [0u8; 1];
        match tokio::time::timeout(every, c.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => panic!("a slow sender got data from a VM"),
            Err(_) => {}
        }
        assert!(start.elapsed() < Duration::from_secs(20), "never closed");
    }
    start.elapsed()
}

/// A normal client: whole hello at once, echo back; returns the round trip.
async fn normal(from: &str, to: SocketAddr, hello: &[u8]) -> Duration {
    let start = Instant::now();
    let mut c = connect_from(from, to).await;
    c.write_all(hello).await.unwrap();
    let mut back = vec![0u8; hello.len()];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut back))
        .await
        .expect("normal client served in time")
        .unwrap();
    assert_eq!(back, hello);
    start.elapsed()
}

async fn serve_normal_clients_until(
    stop: Instant,
    from: &'static str,
    to: SocketAddr,
    hello: Arc<Vec<u8>>,
) -> (usize, Duration) {
    let (mut served, mut worst) = (0, Duration::ZERO);
    while Instant::now() < stop {
        worst = worst.max(normal(from, to, &hello).await);
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (served, worst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_senders_are_cut_and_others_are_served() {
    let echo = echo_upstream("127.0.0.2").await;
    let routes = Arc::new(RouteTable::new());
    routes
        .replace(vec![Route {
            contract_id: 1,
            names: vec!["ok.example".into()],
            tls_upstream: echo,
            http_upstream: None,
            proxy_protocol: false,
            max_connections: 10_000,
        }])
        .unwrap();
    let config = IngressConfig {
        handshake_timeout_ms: 3_000,
        handshake_grace_ms: 1_000,
        handshake_min_bytes_per_s: 32,
        max_connections_per_source: 1_000,
        ..IngressConfig::default()
    };
    let run = start_ingress(config.clone(), routes.clone()).await;
    let hello = Arc::new(rustls_hello("ok.example", &HelloSpec::default()));
    assert!(
        hello.len() > 150,
        "the patient senders must not finish in 3 s"
    );
    // Warm up (runtime threads, pools) before taking the baseline.
    normal("127.0.0.1", run.tls, &hello).await;
    let fds_before = fds_besides_pooled_pipes(&run.ingress);

    // 200 clients at one byte a second, 20 at 40 bytes a second (above the
    // minimum rate, but too slow to finish within the total time).
    let started = Instant::now();
    let mut crawlers = Vec::new();
    for _ in 0..200 {
        crawlers.push(tokio::spawn(trickle(
            "127.0.0.1",
            run.tls,
            hello.clone(),
            1,
            Duration::from_secs(1),
        )));
    }
    let mut patient = Vec::new();
    for _ in 0..20 {
        patient.push(tokio::spawn(trickle(
            "127.0.0.1",
            run.tls,
            hello.clone(),
            4,
            Duration::from_millis(100),
        )));
    }
    let (served, worst) = serve_normal_clients_until(
        started + Duration::from_millis(3_500),
        "127.0.0.1",
        run.tls,
        hello.clone(),
    )
    .await;
    for c in crawlers {
        let took = c.await.unwrap();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(2_500),
            "one byte a second: cut after the grace time, took {took:?}"
        );
    }
    for c in patient {
        let took = c.await.unwrap();
        assert!(
            took >= Duration::from_millis(2_900) && took < Duration::from_millis(4_500),
            "cut at the total deadline, took {took:?}"
        );
    }
    assert!(served >= 20, "normal clients served meanwhile: {served}");
    println!("slowloris: {served} normal clients served meanwhile, worst round trip {worst:?}");
    let m = run.ingress.metrics();
    assert_eq!(m.tls.refusals.too_slow, 220);
    assert_eq!(m.tls.routed as usize, served + 1);
    assert!(
        eventually(Duration::from_secs(10), || fds_besides_pooled_pipes(
            &run.ingress
        ) <= fds_before
            && run.ingress.metrics().connections_active == 0)
        .await,
        "descriptors back to {fds_before}: {} open besides pooled pipes, {} active",
        fds_besides_pooled_pipes(&run.ingress),
        run.ingress.metrics().connections_active
    );

    // One source may hold only its share: 200 slow connections from
    // 127.0.0.1 against a limit of 50, while 127.0.0.5 is served.
    let strict = start_ingress(
        IngressConfig {
            max_connections_per_source: 50,
            handshake_timeout_ms: 1_500,
            ..config
        },
        routes,
    )
    .await;
    let started = Instant::now();
    let mut crawlers = Vec::new();
    for _ in 0..200 {
        crawlers.push(tokio::spawn(trickle(
            "127.0.0.1",
            strict.tls,
            hello.clone(),
            1,
            Duration::from_millis(200),
        )));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (served, _) = serve_normal_clients_until(
        started + Duration::from_millis(1_200),
        "127.0.0.5",
        strict.tls,
        hello.clone(),
    )
    .await;
    assert!(served >= 5, "the other source is served: {served}");
    let mut quick = 0;
    for c in crawlers {
        if c.await.unwrap() < Duration::from_millis(500) {
            quick += 1;
        }
    }
    let m = strict.ingress.metrics();
    assert_eq!(m.tls.refusals.source_limit, 150);
    assert_eq!(quick, 150, "refused at accept, not after the deadline");
    assert_eq!(m.tls.refusals.too_slow, 50);
    assert!(
        eventually(Duration::from_secs(10), || strict
            .ingress
            .metrics()
            .connections_active
            == 0)
        .await
    );
}
