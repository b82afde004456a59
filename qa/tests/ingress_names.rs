//! Every custom domain the ledger accepts is routed by the ingress under
//! exactly that name: the two validators (the ledger core must not depend
//! on the appliance) agree, so a name a tenant paid for is never silently
//! dropped at the node.

use dc_ingress::{HostName, Route, RouteTable};
use proptest::prelude::*;

fn route(names: Vec<String>) -> Route {
    Route {
        contract_id: 1,
        names,
        tls_upstream: "127.0.0.1:443".parse().unwrap(),
        http_upstream: None,
        proxy_protocol: false,
        max_connections: 1,
    }
}

fn check(name: &str) {
    if dc_ledger_core::ingress::validate_domain(name).is_err() {
        return;
    }
    let table = RouteTable::new();
    let update = table.replace(vec![route(vec![name.to_string()])]).unwrap();
    assert!(
        update.rejected_names.is_empty(),
        "the ledger accepts {name:?} but the ingress refuses it: {:?}",
        update.rejected_names
    );
    let probe = match name.strip_prefix("*.") {
        Some(rest) => format!("x.{rest}"),
        None => name.to_string(),
    };
    let host = HostName::parse(&probe).expect("a routed name parses");
    assert_eq!(host.as_str(), probe, "stored as registered");
    assert!(table.lookup(&host).is_some(), "{probe} is routed");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]
    #[test]
    fn ledger_names_are_ingress_names(
        name in "(\\*\\.)?[a-z0-9]([a-z0-9-]{0,12}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,12}[a-z0-9])?){1,4}"
    ) {
        check(&name);
    }

    #[test]
    fn arbitrary_strings_never_disagree(name in "[a-zA-Z0-9.*_-]{0,40}") {
        check(&name);
    }
}

#[test]
fn public_suffixes_are_refused_by_both() {
    for name in ["co.uk", "*.co.uk", "*.github.io", "com.au", "*.kobe.jp"] {
        assert!(
            dc_ledger_core::ingress::validate_domain(name).is_err(),
            "{name}"
        );
        let update = RouteTable::new()
            .replace(vec![route(vec![name.to_string()])])
            .unwrap();
        assert_eq!(update.rejected_names.len(), 1, "the ingress routes {name}");
    }
    for name in ["example.co.uk", "*.apps.example.co.uk", "*.me.github.io"] {
        check(name);
        assert!(
            dc_ledger_core::ingress::validate_domain(name).is_ok(),
            "{name}"
        );
    }
}

#[test]
fn examples_from_the_documentation() {
    for name in ["api.example.com", "*.apps.example.com", "a-b.c0.example"] {
        assert!(
            dc_ledger_core::ingress::validate_domain(name).is_ok(),
            "{name}"
        );
        check(name);
    }
}
