//! Custom domains and PROXY protocol on contracts (`set_contract_ingress`):
//! who may set them, when, which names, first come first served, and names
//! freed when the holder's contract becomes final. A refused call changes
//! nothing, the holder index included.

mod common;

use candid::Principal;
use common::*;
use dc_ledger_core::*;
use proptest::prelude::*;
use serde_bytes::ByteBuf;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn args(contract_id: u64, domains: &[&str], proxy_protocol: bool) -> SetIngressArgs {
    SetIngressArgs {
        contract_id,
        domains: names(domains),
        proxy_protocol,
    }
}

/// Developer `dev` rents offering `offering` for `hours`.
fn rent(w: &mut World, dev: usize, offering: usize, hours: u32) -> u64 {
    let p = w.devs[dev].principal();
    w.ledger
        .rent(
            p,
            w.now,
            RentArgs {
                offering_id: w.offerings[offering],
                hours,
            },
        )
        .expect("rent")
        .id
}

/// Walks a contract on node `node` to active.
fn activate(w: &mut World, node: usize, cid: u64) {
    let n = w.nodes[node].principal();
    w.ledger.accept_contract(n, w.now, cid).expect("accept");
    w.ledger
        .start_provisioning(n, w.now, cid)
        .expect("provision");
    w.ledger
        .report_active(
            n,
            w.now,
            ReportActiveArgs {
                contract_id: cid,
                endpoint: format!("c{cid}.node{node}.example"),
                evidence_hash: ByteBuf::from(vec![1; 32]),
                launch_measurement: None,
            },
        )
        .expect("active");
}

/// Sets the ingress as developer `dev`.
fn set(w: &mut World, dev: usize, a: SetIngressArgs) -> LedgerResult<Contract> {
    let p = w.devs[dev].principal();
    w.ledger.set_contract_ingress(p, w.now, a)
}

/// `f` is refused with an error `check` accepts, and the ledger (holder
/// index included: `Ledger`'s `==` compares it) is exactly as before.
fn refused_without_effect(
    w: &mut World,
    f: impl FnOnce(&mut World) -> LedgerResult<Contract>,
    check: impl FnOnce(&LedgerError) -> bool,
) {
    let before = w.ledger.clone();
    let digest = w.ledger.state_digest();
    match f(w) {
        Ok(c) => panic!("expected a refusal, got {c:?}"),
        Err(e) => assert!(check(&e), "unexpected error: {e}"),
    }
    assert_eq!(w.ledger.state_digest(), digest);
    assert!(w.ledger == before, "a refused call changed the ledger");
}

/// The holder index kept up to date equals the one a snapshot rebuilds.
fn assert_index_consistent(w: &World) {
    let back = snapshot::decode(&snapshot::encode(&w.ledger)).expect("decode");
    assert!(
        back == w.ledger,
        "the live ledger differs from its snapshot (holder index out of step)"
    );
}

#[test]
fn the_developer_sets_replaces_and_clears_the_ingress() {
    let mut w = World::new();
    let cid = rent(&mut w, 0, 0, 10);
    let fresh = w.ledger.contract_info(cid).unwrap();
    assert_eq!(fresh.ingress, IngressSettings::default());

    // Through the Candid dispatcher, as the services call it: committed.
    let dev = w.devs[0].principal();
    let blocks = w.ledger.log_length();
    let (r, committed): (LedgerResult<Contract>, bool) = w.call(
        dev,
        "set_contract_ingress",
        &args(cid, &["api.example.com", "*.apps.example.com"], true),
    );
    let c = r.expect("set");
    assert!(committed);
    assert_eq!(
        c.ingress,
        IngressSettings {
            domains: names(&["api.example.com", "*.apps.example.com"]),
            proxy_protocol: true,
        }
    );
    assert_eq!(w.ledger.contract_info(cid).unwrap(), c);
    assert_eq!(w.ledger.domain_holder("api.example.com"), Some(cid));
    assert_eq!(w.ledger.domain_holder("*.apps.example.com"), Some(cid));
    // Names are exact strings: the wildcard reserves nothing under it.
    assert_eq!(w.ledger.domain_holder("x.apps.example.com"), None);
    // Setting is not money: no block, no other field moves.
    assert_eq!(w.ledger.log_length(), blocks);
    assert_eq!(
        Contract {
            ingress: IngressSettings::default(),
            ..c.clone()
        },
        fresh
    );
    assert_index_consistent(&w);

    // The same list again is fine (the contract holds its own names).
    set(
        &mut w,
        0,
        args(cid, &["*.apps.example.com", "api.example.com"], true),
    )
    .expect("same names");

    // Replacing frees what was dropped.
    let c = set(&mut w, 0, args(cid, &["www.example.com"], false)).expect("replace");
    assert_eq!(c.ingress.domains, names(&["www.example.com"]));
    assert!(!c.ingress.proxy_protocol);
    assert_eq!(w.ledger.domain_holder("api.example.com"), None);
    assert_eq!(w.ledger.domain_holder("*.apps.example.com"), None);
    assert_eq!(w.ledger.domain_holder("www.example.com"), Some(cid));
    assert_index_consistent(&w);

    // No domains clears them.
    let c = set(&mut w, 0, args(cid, &[], false)).expect("clear");
    assert_eq!(c.ingress, IngressSettings::default());
    assert_eq!(w.ledger.domain_holder("www.example.com"), None);
    assert_index_consistent(&w);
}

#[test]
fn every_state_before_final_accepts_ingress_settings() {
    let mut w = World::new();
    let cid = rent(&mut w, 0, 0, 10);
    let node = w.nodes[0].principal();
    set(&mut w, 0, args(cid, &["requested.example"], false)).expect("requested");
    w.ledger.accept_contract(node, w.now, cid).unwrap();
    set(&mut w, 0, args(cid, &["accepted.example"], false)).expect("accepted");
    w.ledger.start_provisioning(node, w.now, cid).unwrap();
    set(&mut w, 0, args(cid, &["provisioning.example"], true)).expect("provisioning");
    w.ledger
        .report_active(
            node,
            w.now,
            ReportActiveArgs {
                contract_id: cid,
                endpoint: "c0.example".into(),
                evidence_hash: ByteBuf::from(vec![1; 32]),
                launch_measurement: None,
            },
        )
        .unwrap();
    let c = set(&mut w, 0, args(cid, &["active.example"], true)).expect("active");
    assert_eq!(c.state, ContractState::Active);
    assert_eq!(c.ingress.domains, names(&["active.example"]));
    assert_eq!(w.ledger.domain_holder("provisioning.example"), None);
}

#[test]
fn only_the_contracts_developer_may_set_its_ingress() {
    let mut w = World::new();
    let cid = rent(&mut w, 0, 0, 10);
    activate(&mut w, 0, cid);
    let others = [
        w.devs[1].principal(),
        w.providers[0].principal(),
        w.nodes[0].principal(),
        w.treasury,
        Principal::anonymous(),
    ];
    for caller in others {
        refused_without_effect(
            &mut w,
            |w| {
                w.ledger
                    .set_contract_ingress(caller, w.now, args(cid, &["a.example"], true))
            },
            |e| matches!(e, LedgerError::Unauthorized { caller: c, .. } if *c == caller),
        );
    }
    refused_without_effect(
        &mut w,
        |w| set(w, 0, args(99, &["a.example"], false)),
        |e| matches!(e, LedgerError::NotFound { what, .. } if what == "contract"),
    );
}

#[test]
fn bad_lists_are_refused_with_the_reason_and_change_nothing() {
    let mut w = World::new();
    let cid = rent(&mut w, 0, 0, 10);
    set(&mut w, 0, args(cid, &["kept.example"], true)).unwrap();
    let nine: Vec<String> = (0..9).map(|i| format!("n{i}.example")).collect();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (nine, "9 names, at most 8"),
        (
            names(&["ok.example", "Upper.example"]),
            "\"Upper.example\": uppercase",
        ),
        (names(&["a.example", "a.example"]), "listed twice"),
        (names(&["example.com."]), "root dot"),
        (names(&["192.0.2.1"]), "IP address"),
        (names(&["localhost"]), "at least two"),
        (names(&["*.com"]), "wildcard"),
        (names(&["*.co.uk"]), "public suffix"),
        (
            names(&["ok.example", "com.au"]),
            "\"com.au\": a public suffix",
        ),
        (names(&["*.kobe.jp"]), "a wildcard over public suffixes"),
        (names(&["a.*.example"]), "first label"),
        (names(&["-a.example"]), "starts or ends with '-'"),
        (names(&["a_b.example"]), "'_' is not allowed"),
        (names(&[""]), "empty name"),
    ];
    for (domains, reason_has) in cases {
        refused_without_effect(
            &mut w,
            |w| {
                set(
                    w,
                    0,
                    SetIngressArgs {
                        contract_id: cid,
                        domains: domains.clone(),
                        proxy_protocol: false,
                    },
                )
            },
            |e| match e {
                LedgerError::InvalidArgument { field, reason } => {
                    field == "domains" && reason.contains(reason_has)
                }
                _ => false,
            },
        );
    }
    let c = w.ledger.contract_info(cid).unwrap();
    assert_eq!(c.ingress.domains, names(&["kept.example"]));
    assert!(c.ingress.proxy_protocol);
}

#[test]
fn a_name_belongs_to_the_first_contract_that_registers_it() {
    let mut w = World::new();
    let first = rent(&mut w, 0, 0, 10);
    let second = rent(&mut w, 1, 2, 10);
    let same_dev = rent(&mut w, 0, 1, 10);
    set(
        &mut w,
        0,
        args(first, &["api.example.com", "*.example.com"], false),
    )
    .unwrap();
    for (dev, cid) in [(1, second), (0, same_dev)] {
        refused_without_effect(
            &mut w,
            |w| {
                set(
                    w,
                    dev,
                    args(cid, &["free.example.com", "api.example.com"], true),
                )
            },
            |e| {
                matches!(e, LedgerError::AlreadyRegistered(what)
                    if what.contains("api.example.com") && what.contains(&format!("contract {first}")))
            },
        );
    }
    // A different string is a different name, wildcard or not.
    set(
        &mut w,
        1,
        args(second, &["www.example.com", "example.com"], false),
    )
    .expect("other names are free");
    assert_eq!(w.ledger.domain_holder("api.example.com"), Some(first));
    assert_eq!(w.ledger.domain_holder("www.example.com"), Some(second));
    assert_index_consistent(&w);
}

/// Each way of becoming final frees the holder's names; the final contract
/// keeps its record, can no longer change it, and others may take the names.
#[test]
fn names_are_freed_when_the_holder_becomes_final() {
    #[derive(Debug, Clone, Copy)]
    enum End {
        Cancel,
        Reject,
        DeadlineMissed,
        Expire,
    }
    for end in [End::Cancel, End::Reject, End::DeadlineMissed, End::Expire] {
        let mut w = World::new();
        let holder = rent(&mut w, 0, 0, 2);
        if matches!(end, End::Expire | End::Cancel) {
            activate(&mut w, 0, holder);
        }
        set(&mut w, 0, args(holder, &["shop.example.com"], true)).unwrap();
        // On the other node, active, so that it outlives the holder.
        let waiting = rent(&mut w, 1, 2, 10);
        activate(&mut w, 1, waiting);
        assert!(matches!(
            set(&mut w, 1, args(waiting, &["shop.example.com"], false)),
            Err(LedgerError::AlreadyRegistered(_))
        ));
        let state = match end {
            End::Cancel => {
                let dev = w.devs[0].principal();
                w.ledger.cancel_contract(dev, w.now, holder).unwrap().state
            }
            End::Reject => {
                let node = w.nodes[0].principal();
                w.ledger.reject_contract(node, w.now, holder).unwrap().state
            }
            End::DeadlineMissed => {
                w.now += w.ledger.params().provisioning_timeout_ns;
                w.ledger.tick(w.now);
                w.ledger.contract_info(holder).unwrap().state
            }
            End::Expire => {
                w.now += 2 * HOUR_NS;
                w.ledger.tick(w.now);
                w.ledger.contract_info(holder).unwrap().state
            }
        };
        assert!(state.is_final(), "{end:?}: {state:?}");
        assert_eq!(w.ledger.domain_holder("shop.example.com"), None, "{end:?}");
        assert_index_consistent(&w);
        // The final contract still shows what it had, and cannot change it.
        let old = w.ledger.contract_info(holder).unwrap();
        assert_eq!(old.ingress.domains, names(&["shop.example.com"]));
        refused_without_effect(
            &mut w,
            |w| set(w, 0, args(holder, &["other.example.com"], false)),
            |e| matches!(e, LedgerError::IllegalTransition { contract_id, .. } if *contract_id == holder),
        );
        // The name is free for the next contract.
        let c = set(&mut w, 1, args(waiting, &["shop.example.com"], false))
            .unwrap_or_else(|e| panic!("{end:?}: {e}"));
        assert!(!c.state.is_final());
        assert_eq!(w.ledger.domain_holder("shop.example.com"), Some(waiting));
        // A snapshot, with a final and a live contract naming the same
        // string, rebuilds the index with the live one as holder.
        assert_index_consistent(&w);
    }
}

/// Past its provisioning deadline or at the end of its term, a contract is
/// about to become final: its settings are frozen even before the tick.
#[test]
fn a_contract_about_to_end_cannot_change_its_ingress() {
    let mut w = World::new();
    let late = rent(&mut w, 0, 0, 2);
    let deadline = w
        .ledger
        .contract_info(late)
        .unwrap()
        .provisioning_deadline_ns;
    refused_without_effect(
        &mut w,
        |w| {
            let dev = w.devs[0].principal();
            w.ledger
                .set_contract_ingress(dev, deadline, args(late, &["late.example"], false))
        },
        |e| matches!(e, LedgerError::IllegalTransition { state, .. } if state.contains("deadline")),
    );
    let ending = rent(&mut w, 1, 2, 1);
    activate(&mut w, 1, ending);
    let ends = w.ledger.contract_info(ending).unwrap().ends_at_ns.unwrap();
    refused_without_effect(
        &mut w,
        |w| {
            let dev = w.devs[1].principal();
            w.ledger
                .set_contract_ingress(dev, ends, args(ending, &["end.example"], false))
        },
        |e| matches!(e, LedgerError::IllegalTransition { state, .. } if state.contains("end of its term")),
    );
}

/// A label of the accepted alphabet: starts and ends alphanumeric.
fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?"
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(10_000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Whatever the string, the validator answers without panicking; what
    /// it accepts has the documented shape.
    #[test]
    fn the_name_validator_never_panics(
        raw in any::<String>(),
        dnsish in "[*a-zA-Z0-9._:\\-]{0,300}",
    ) {
        for s in [raw.as_str(), dnsish.as_str()] {
            if validate_domain(s).is_ok() {
                let rest = s.strip_prefix("*.").unwrap_or(s);
                prop_assert!(s.len() <= 253);
                prop_assert!(rest.split('.').count() >= 2);
                prop_assert!(rest.split('.').all(|l| (1..=63).contains(&l.len())
                    && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-') && !l.ends_with('-')));
                prop_assert!(!rest.rsplit('.').next().unwrap_or("").bytes().all(|b| b.is_ascii_digit()));
                prop_assert!(!is_public_suffix(rest));
                prop_assert!(!s.starts_with("*.") || !wildcard_covers_public_suffixes(rest));
            }
        }
    }

    /// Names built by the rules are accepted; uppercasing one letter of them
    /// is refused.
    #[test]
    fn names_of_valid_labels_are_accepted(
        labels in prop::collection::vec(label(), 1..6),
        tld in "[a-z][a-z0-9]{1,10}",
        wildcard in any::<bool>(),
        upper in any::<prop::sample::Index>(),
    ) {
        let mut name = labels.join(".") + "." + &tld;
        // Random labels can spell a public suffix (`a.se`, `co.uk`), which is
        // refused by design (tested with examples).
        prop_assume!(!is_public_suffix(&name));
        if wildcard {
            prop_assume!(!wildcard_covers_public_suffixes(&name));
            name = format!("*.{name}");
        }
        prop_assert_eq!(validate_domain(&name), Ok(()));
        let letters: Vec<usize> = name.char_indices().filter(|(_, c)| c.is_ascii_lowercase()).map(|(i, _)| i).collect();
        let i = letters[upper.index(letters.len())];
        let mut shouted = name.clone();
        shouted.replace_range(i..i + 1, &name[i..i + 1].to_ascii_uppercase());
        prop_assert!(
            matches!(validate_domain(&shouted), Err(DomainError::Uppercase { .. })),
            "{} was accepted", shouted
        );
    }
}
