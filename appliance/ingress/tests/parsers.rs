//! The parsers against real rustls ClientHellos, and property tests: random
//! bytes and mutations of real hellos and requests never panic, and
//! fragmenting a hello over records never changes what it says.

mod common;

use common::{refragment, rustls_hello, HelloSpec};
use dc_ingress::clienthello::{parse_client_hello_with_limit, HelloError};
use dc_ingress::{fuzz_client_hello, fuzz_http_host, parse_client_hello, parse_request_head};
use proptest::prelude::*;
use std::sync::OnceLock;

#[test]
fn reads_real_rustls_hellos() {
    let spec = HelloSpec {
        alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        ..HelloSpec::default()
    };
    let wire = rustls_hello("Tenant-A.Node.Example", &spec);
    let hello = parse_client_hello(&wire).unwrap();
    assert_eq!(
        hello.server_name().unwrap().as_str(),
        "tenant-a.node.example"
    );
    let alpn: Vec<&[u8]> = hello.alpn_protocols().collect();
    assert_eq!(alpn, vec![&b"h2"[..], &b"http/1.1"[..]]);
    assert!(!hello.offers_ech());
    assert_eq!(hello.wire_len(), wire.len());

    let tls12 = rustls_hello(
        "old.example",
        &HelloSpec {
            tls12_only: true,
            ..HelloSpec::default()
        },
    );
    assert_eq!(
        parse_client_hello(&tls12)
            .unwrap()
            .server_name()
            .unwrap()
            .as_str(),
        "old.example"
    );

    // An IP address is not sent as SNI, and a client can turn SNI off.
    let by_ip = rustls_hello("192.0.2.7", &HelloSpec::default());
    assert!(parse_client_hello(&by_ip).unwrap().server_name().is_none());
    let no_sni = rustls_hello(
        "a.example",
        &HelloSpec {
            no_sni: true,
            ..HelloSpec::default()
        },
    );
    assert!(parse_client_hello(&no_sni).unwrap().server_name().is_none());
}

#[test]
fn sees_ech_in_a_real_grease_hello() {
    let wire = rustls_hello(
        "a.example",
        &HelloSpec {
            ech_grease: true,
            ..HelloSpec::default()
        },
    );
    let hello = parse_client_hello(&wire).unwrap();
    assert!(hello.offers_ech());
    // GREASE keeps the real name outside: exactly why the policy is a choice.
    assert_eq!(hello.server_name().unwrap().as_str(), "a.example");
}

#[test]
fn real_hellos_obey_the_size_limit() {
    let wire = rustls_hello("a.example", &HelloSpec::default());
    assert!(parse_client_hello_with_limit(&wire, wire.len()).is_ok());
    assert!(matches!(
        parse_client_hello_with_limit(&wire, wire.len() - 1),
        Err(HelloError::TooLarge { .. })
    ));
}

fn corpus() -> &'static Vec<Vec<u8>> {
    static CORPUS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let alpn = vec![b"h2".to_vec(), b"acme-tls/1".to_vec()];
        vec![
            rustls_hello("a.example", &HelloSpec::default()),
            rustls_hello(
                "shop.tenant.example",
                &HelloSpec {
                    alpn: alpn.clone(),
                    ..HelloSpec::default()
                },
            ),
            rustls_hello(
                "b.example",
                &HelloSpec {
                    ech_grease: true,
                    alpn,
                    ..HelloSpec::default()
                },
            ),
            rustls_hello(
                "c.example",
                &HelloSpec {
                    tls12_only: true,
                    ..HelloSpec::default()
                },
            ),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 4000,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        fuzz_client_hello(&data);
        fuzz_http_host(&data);
    }

    #[test]
    fn random_bytes_after_a_handshake_header_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..600),
        len in 0u16..700,
    ) {
        let mut data = vec![22, 3, 1];
        data.extend(len.to_be_bytes());
        data.push(1);
        data.extend(&((tail.len() as u32).to_be_bytes()[1..]));
        data.extend(tail);
        fuzz_client_hello(&data);
    }

    #[test]
    fn mutated_real_hellos_never_panic(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
    ) {
        let mut data = corpus()[which].clone();
        for (at, byte, kind) in edits {
            if data.is_empty() {
                break;
            }
            let i = at.index(data.len());
            match kind {
                0 => data[i] = byte,
                1 => data[i] ^= 1 << (byte % 8),
                2 => data.truncate(i),
                _ => data.insert(i, byte),
            }
        }
        fuzz_client_hello(&data);
    }

    #[test]
    fn fragmenting_a_real_hello_changes_nothing(
        which in 0usize..4,
        sizes in proptest::collection::vec(1usize..300, 1..6),
    ) {
        let wire = &corpus()[which];
        let whole = parse_client_hello(wire).unwrap();
        let split = refragment(wire, &sizes);
        fuzz_client_hello(&split);
        let parsed = parse_client_hello(&split).unwrap();
        prop_assert_eq!(parsed.server_name(), whole.server_name());
        prop_assert_eq!(parsed.offers_ech(), whole.offers_ech());
        prop_assert!(parsed.alpn_protocols().eq(whole.alpn_protocols()));
        prop_assert_eq!(parsed.wire_len(), split.len());
    }

    #[test]
    fn mutated_requests_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..6),
    ) {
        let mut data =
            b"GET http://a.example/x HTTP/1.1\r\nHost: a.example:80\r\nAccept: */*\r\n\r\nbody".to_vec();
        for (at, byte, kind) in edits {
            let i = at.index(data.len().max(1)).min(data.len().saturating_sub(1));
            if data.is_empty() {
                break;
            }
            match kind {
                0 => data[i] = byte,
                1 => data.truncate(i),
                _ => data.insert(i, byte),
            }
        }
        fuzz_http_host(&data);
    }

    #[test]
    fn any_valid_host_is_read_back_normalised(
        labels in proptest::collection::vec("[a-zA-Z]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?", 1..5),
        port in proptest::option::of(0u16..),
    ) {
        let name = labels.join(".");
        let host = match port {
            Some(p) => format!("{name}:{p}"),
            None => name.clone(),
        };
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let head = parse_request_head(req.as_bytes()).unwrap();
        prop_assert_eq!(head.host.as_str(), name.to_ascii_lowercase());
        prop_assert_eq!(head.head_len, req.len());
    }
}
