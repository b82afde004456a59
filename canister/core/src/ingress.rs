//! Custom domains of a contract's VM, for its node's SNI ingress.
//!
//! A node's ingress routes each TLS connection by the server name in its
//! ClientHello (and each plain HTTP request on port 80 by its Host header) to
//! the VM of an active contract, and passes the bytes through without
//! terminating TLS: the VM holds its own certificate and keys. Every contract
//! answers to a default name under its node's domain; with
//! `set_contract_ingress` its developer adds up to [`MAX_INGRESS_DOMAINS`]
//! custom domains and can ask for a PROXY protocol v2 header, so the VM sees
//! the client's address. The node agent reads both from the contract
//! ([`crate::types::IngressSettings`]).
//!
//! # Names
//!
//! A name is a lowercase DNS name: labels of 1 to 63 characters `a-z`, `0-9`
//! and `-`, no label starting or ending with `-`, at least two labels, at most
//! 253 characters, no trailing dot, not an IP address (the last label is not
//! all digits). A leading `*.` is a single-label wildcard (`*.apps.example.com`
//! matches `a.apps.example.com`, not `apps.example.com` nor
//! `a.b.apps.example.com`), allowed only with two or more labels after it so
//! that nobody claims a whole top-level domain. Neither a name nor a
//! wildcard's parent may be a public suffix of the Public Suffix List (ICANN
//! and private sections, as compiled into the `psl` crate): `co.uk`,
//! `*.co.uk` and `*.github.io` are refused, `example.co.uk` and
//! `*.apps.example.co.uk` are not. Names under a public suffix belong to
//! different owners, so one registration covering them all would capture
//! every such name whose DNS points at the node without being registered by
//! its owner (CAs refuse wildcard certificates over public suffixes for the
//! same reason). These are the names the ingress routes, already in the
//! ingress's normal form (lowercase, no trailing dot), so that one spelling
//! is one name everywhere.
//!
//! # Ownership: first come, first served, not proven
//!
//! A name (its exact string) is held by the first contract that registers it
//! and stays held while that contract is not final (requested, accepted,
//! provisioning or active); another contract asking for it is refused. It is
//! freed when the holder becomes final (expired, cancelled, rejected, deadline
//! missed) or drops it. The ledger does **not** check that the developer
//! controls the name's DNS. What that means:
//!
//! - Registering someone else's name gets its holder no traffic and no
//!   certificate on its own: connections for a name reach a node only when
//!   the name's DNS points at that node, and the ingress only passes TLS
//!   through, so serving the name needs a certificate a CA issues only to
//!   whoever answers its challenge where the name's DNS points.
//! - It can block the real owner: while someone else's contract holds a name,
//!   the owner cannot register it on this ledger, on any node, until that
//!   contract ends (at most its paid term; an unaccepted one is refunded at
//!   its provisioning deadline).
//! - A name whose DNS points at a node is served to whoever holds it on the
//!   ledger with a contract on that node. The holder receives the name's port
//!   80 traffic and TLS connections, so it can pass ACME HTTP-01 (and
//!   TLS-ALPN-01) challenges and obtain a certificate for the name. The
//!   residual risk is for names that point at a node without being held by
//!   their owner: DNS pointed at the node before the name was registered, a
//!   record left in place after the owner's contract ended, or a wildcard
//!   record covering names the owner did not register (`*.example.com` does
//!   not reserve `api.example.com`: they are different strings, and the
//!   ingress prefers an exact name over a wildcard, even another contract's;
//!   refusing names under someone's wildcard would instead let one wildcard
//!   registration block every name under it). Owners should register a
//!   name before pointing DNS at a node, remove the record when the contract
//!   ends, and restrict issuance to their own ACME account with a CAA record
//!   (`accounturi`, RFC 8657).
//! - Names under a node's own domain are its contracts' default names; the
//!   ledger cannot tell them apart from custom ones, so the node must not route
//!   a custom domain under its own domain.
//!
//! # The holder index
//!
//! [`DomainIndex`] maps each held name to its contract, so the uniqueness
//! check costs `O(log n)` per name. It is derived state, like the search
//! index: never serialized, rebuilt from the contracts when a snapshot is
//! loaded, and kept in step by `set_contract_ingress` and by every move to a
//! final state. It holds at most [`MAX_INGRESS_DOMAINS`] names per non-final
//! contract.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::error::LedgerError;
use crate::market::Market;

/// Most custom domains one contract may register.
pub const MAX_INGRESS_DOMAINS: usize = 8;
/// Longest name in its dotted text form (RFC 1035 §2.3.4, less the root dot).
pub const MAX_DOMAIN_LEN: usize = 253;
/// Longest DNS label (RFC 1035 §2.3.4).
pub const MAX_DOMAIN_LABEL_LEN: usize = 63;

/// Why a string is not a name a contract can register.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("empty name")]
    Empty,
    #[error("{len} characters, at most {MAX_DOMAIN_LEN} allowed")]
    TooLong { len: usize },
    #[error("ends with a dot; give the name without the root dot")]
    TrailingDot,
    #[error("an IP address, not a DNS name")]
    IpLiteral,
    #[error("an empty label (a leading dot or two dots in a row)")]
    EmptyLabel,
    #[error("a label of {len} characters, at most {MAX_DOMAIN_LABEL_LEN} allowed")]
    LabelTooLong { len: usize },
    #[error("uppercase {ch:?}: names are registered in lowercase")]
    Uppercase { ch: char },
    #[error("{ch:?} is not allowed: labels are a-z, 0-9 and '-'")]
    BadCharacter { ch: char },
    #[error("label {label:?} starts or ends with '-'")]
    HyphenAtLabelEdge { label: String },
    #[error("a single label: expected at least two, like example.com")]
    SingleLabel,
    #[error("'*' is only allowed as the whole first label, as in *.apps.example.com")]
    MisplacedWildcard,
    #[error("a wildcard needs at least two labels after '*.', as in *.apps.example.com")]
    WildcardTooWide,
    #[error("the last label is all digits, which reads as an address, not a name")]
    NumericTopLabel,
    #[error("a public suffix: names under it belong to different owners; register your own name under it, as in example.{suffix}")]
    PublicSuffix { suffix: String },
    #[error("a wildcard over public suffixes (*.{suffix}), whose names belong to different owners; use a wildcard under your own name, as in *.apps.example.{suffix}")]
    WildcardOverPublicSuffix { suffix: String },
}

/// Whether `name` (lowercase, no trailing dot) is itself a public suffix:
/// a rule of the Public Suffix List matches it whole, as `co.uk`, `com` or
/// `github.io`. A name under an unlisted top-level domain is never one.
pub fn is_public_suffix(name: &str) -> bool {
    psl::suffix(name.as_bytes()).is_some_and(|s| s.is_known() && s.as_bytes() == name.as_bytes())
}

/// Whether `*.parent` would match public suffixes: `parent` is one (`co.uk`),
/// or the names one label under it are, by a wildcard rule of the list
/// (`*.kobe.jp` makes every `x.kobe.jp` a suffix but `kobe.jp` itself not).
pub fn wildcard_covers_public_suffixes(parent: &str) -> bool {
    is_public_suffix(parent) || is_public_suffix(&format!("x.{parent}"))
}

/// Checks that `name` is a registrable name (see the [module docs](self)).
/// Never panics, whatever the input.
pub fn validate_domain(name: &str) -> Result<(), DomainError> {
    if name.is_empty() {
        return Err(DomainError::Empty);
    }
    if name.len() > MAX_DOMAIN_LEN {
        return Err(DomainError::TooLong { len: name.len() });
    }
    if name.ends_with('.') {
        return Err(DomainError::TrailingDot);
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(DomainError::IpLiteral);
    }
    let (wildcard, rest) = match name.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    let mut labels = 0usize;
    let mut last = "";
    for label in rest.split('.') {
        if label.is_empty() {
            return Err(DomainError::EmptyLabel);
        }
        if label.len() > MAX_DOMAIN_LABEL_LEN {
            return Err(DomainError::LabelTooLong { len: label.len() });
        }
        for ch in label.chars() {
            match ch {
                'a'..='z' | '0'..='9' | '-' => {}
                '*' => return Err(DomainError::MisplacedWildcard),
                'A'..='Z' => return Err(DomainError::Uppercase { ch }),
                _ => return Err(DomainError::BadCharacter { ch }),
            }
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(DomainError::HyphenAtLabelEdge {
                label: label.to_string(),
            });
        }
        labels += 1;
        last = label;
    }
    if labels < 2 {
        return Err(if wildcard {
            DomainError::WildcardTooWide
        } else {
            DomainError::SingleLabel
        });
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DomainError::NumericTopLabel);
    }
    if wildcard && wildcard_covers_public_suffixes(rest) {
        return Err(DomainError::WildcardOverPublicSuffix {
            suffix: rest.to_string(),
        });
    }
    if is_public_suffix(rest) {
        return Err(DomainError::PublicSuffix {
            suffix: rest.to_string(),
        });
    }
    Ok(())
}

/// Checks a whole list as `set_contract_ingress` receives it: at most
/// [`MAX_INGRESS_DOMAINS`] names, each valid, none twice. The error names the
/// offending entry.
pub fn validate_domains(domains: &[String]) -> Result<(), LedgerError> {
    if domains.len() > MAX_INGRESS_DOMAINS {
        return Err(LedgerError::invalid(
            "domains",
            format!(
                "{} names, at most {MAX_INGRESS_DOMAINS} allowed per contract",
                domains.len()
            ),
        ));
    }
    for (i, name) in domains.iter().enumerate() {
        validate_domain(name)
            .map_err(|e| LedgerError::invalid("domains", format!("{name:?}: {e}")))?;
        if domains[..i].contains(name) {
            return Err(LedgerError::invalid(
                "domains",
                format!("{name:?} is listed twice"),
            ));
        }
    }
    Ok(())
}

/// Which non-final contract holds each custom domain (see the [module
/// docs](self)). Derived from the contracts; never serialized.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DomainIndex {
    holders: BTreeMap<String, u64>,
}

impl DomainIndex {
    /// The index of every non-final contract's domains. If two contracts
    /// claimed one name (the ledger never lets that happen), the lower id,
    /// the earlier contract, keeps it, as the ingress would.
    pub(crate) fn build(market: &Market) -> Self {
        let mut index = DomainIndex::default();
        for c in market.contracts.values().filter(|c| !c.state.is_final()) {
            for name in &c.ingress.domains {
                index.holders.entry(name.clone()).or_insert(c.id);
            }
        }
        index
    }

    /// The contract holding `name`, if any.
    pub(crate) fn holder(&self, name: &str) -> Option<u64> {
        self.holders.get(name).copied()
    }

    /// Frees the names of `names` that `contract_id` holds.
    pub(crate) fn release(&mut self, contract_id: u64, names: &[String]) {
        for name in names {
            if self.holder(name) == Some(contract_id) {
                self.holders.remove(name);
            }
        }
    }

    /// Records `contract_id` as the holder of `names` (checked free before).
    pub(crate) fn claim(&mut self, contract_id: u64, names: &[String]) {
        for name in names {
            self.holders.insert(name.clone(), contract_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(name: &str) -> DomainError {
        validate_domain(name).expect_err(name)
    }

    #[test]
    fn accepts_lowercase_names_and_deep_wildcards() {
        for name in [
            "example.com",
            "api.example.com",
            "a-b.c0.example",
            "xn--bcher-kva.example",
            "123.example.com",
            "*.apps.example.com",
            "*.example.com",
            "example.co.uk",
            "*.example.co.uk",
            "www.ck",
            "*.www.ck",
            "pages.example.github.io",
            "*.corp.internal",
            "a.b.c.d.e.f.example",
        ] {
            assert_eq!(validate_domain(name), Ok(()), "{name}");
        }
        let long = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        assert_eq!(long.len(), MAX_DOMAIN_LEN);
        assert_eq!(validate_domain(&long), Ok(()));
        assert_eq!(
            err(&format!("e{long}")),
            DomainError::TooLong {
                len: MAX_DOMAIN_LEN + 1
            }
        );
    }

    #[test]
    fn refuses_what_the_ingress_would_not_route_as_one_name() {
        assert_eq!(err(""), DomainError::Empty);
        assert_eq!(err("example.com."), DomainError::TrailingDot);
        assert_eq!(err("."), DomainError::TrailingDot);
        assert_eq!(err("10.0.0.1"), DomainError::IpLiteral);
        assert_eq!(err("::1"), DomainError::IpLiteral);
        assert_eq!(err("1.2.3"), DomainError::NumericTopLabel);
        assert_eq!(err("example.123"), DomainError::NumericTopLabel);
        assert_eq!(err("[::1]"), DomainError::BadCharacter { ch: '[' });
        assert_eq!(err(".example.com"), DomainError::EmptyLabel);
        assert_eq!(err("a..example.com"), DomainError::EmptyLabel);
        assert_eq!(
            err(&format!("{}.com", "a".repeat(64))),
            DomainError::LabelTooLong { len: 64 }
        );
        assert_eq!(err("Example.com"), DomainError::Uppercase { ch: 'E' });
        assert_eq!(err("a_b.example"), DomainError::BadCharacter { ch: '_' });
        assert_eq!(err("a b.example"), DomainError::BadCharacter { ch: ' ' });
        assert_eq!(err("é.example"), DomainError::BadCharacter { ch: 'é' });
        assert_eq!(
            err("example.com:443"),
            DomainError::BadCharacter { ch: ':' }
        );
        assert_eq!(
            err("-a.example"),
            DomainError::HyphenAtLabelEdge { label: "-a".into() }
        );
        assert_eq!(
            err("a.example-"),
            DomainError::HyphenAtLabelEdge {
                label: "example-".into()
            }
        );
        assert_eq!(err("localhost"), DomainError::SingleLabel);
        assert_eq!(err("*"), DomainError::MisplacedWildcard);
        assert_eq!(err("*.com"), DomainError::WildcardTooWide);
        assert_eq!(err("*.*.example.com"), DomainError::MisplacedWildcard);
        assert_eq!(err("a.*.example.com"), DomainError::MisplacedWildcard);
        assert_eq!(err("*a.example.com"), DomainError::MisplacedWildcard);
        assert_eq!(err("*.1.2"), DomainError::NumericTopLabel);
    }

    #[test]
    fn refuses_public_suffixes_and_wildcards_over_them() {
        let suffix = |s: &str| s.to_string();
        assert_eq!(
            err("co.uk"),
            DomainError::PublicSuffix {
                suffix: suffix("co.uk")
            }
        );
        assert_eq!(
            err("github.io"),
            DomainError::PublicSuffix {
                suffix: suffix("github.io")
            }
        );
        for (name, parent) in [
            ("*.co.uk", "co.uk"),
            ("*.com.au", "com.au"),
            // A private-section suffix: every user's pages are under it.
            ("*.github.io", "github.io"),
            ("*.s3.amazonaws.com", "s3.amazonaws.com"),
            // `*.ck` is a wildcard rule, so every `x.ck` is a suffix...
            ("*.foo.ck", "foo.ck"),
            // ...and `*.kobe.jp` one a level down: `kobe.jp` is not a
            // suffix, but every name `*.kobe.jp` matches is.
            ("*.kobe.jp", "kobe.jp"),
        ] {
            assert_eq!(
                err(name),
                DomainError::WildcardOverPublicSuffix {
                    suffix: suffix(parent)
                },
                "{name}"
            );
        }
        // ...except `www.ck`, its exception (accepted above).
        assert!(is_public_suffix("foo.ck"));
        assert!(!is_public_suffix("www.ck"));
        assert!(!is_public_suffix("example.com"));
        assert!(!is_public_suffix("corp.internal"));
        assert!(!is_public_suffix("kobe.jp") && wildcard_covers_public_suffixes("kobe.jp"));
        assert_eq!(
            validate_domain("*.city.kobe.jp"),
            Ok(()),
            "the list's exception"
        );
        let message = err("*.co.uk").to_string();
        assert!(message.contains("*.apps.example.co.uk"), "{message}");
    }

    #[test]
    fn a_list_is_bounded_and_free_of_duplicates() {
        let names = |n: usize| -> Vec<String> { (0..n).map(|i| format!("n{i}.example")).collect() };
        assert_eq!(validate_domains(&[]), Ok(()));
        assert_eq!(validate_domains(&names(MAX_INGRESS_DOMAINS)), Ok(()));
        let too_many = validate_domains(&names(MAX_INGRESS_DOMAINS + 1)).unwrap_err();
        assert!(too_many.to_string().contains("at most 8"), "{too_many}");
        let twice = validate_domains(&["a.example".into(), "b.example".into(), "a.example".into()])
            .unwrap_err();
        assert!(
            twice.to_string().contains("\"a.example\" is listed twice"),
            "{twice}"
        );
        let bad = validate_domains(&["a.example".into(), "B.example".into()]).unwrap_err();
        assert_eq!(
            bad,
            LedgerError::InvalidArgument {
                field: "domains".into(),
                reason: "\"B.example\": uppercase 'B': names are registered in lowercase".into()
            }
        );
    }

    #[test]
    fn the_index_frees_only_what_a_contract_holds() {
        let mut index = DomainIndex::default();
        let a = vec!["a.example".to_string(), "shared.example".to_string()];
        index.claim(1, &a);
        assert_eq!(index.holder("shared.example"), Some(1));
        // Contract 2 never held "shared.example": releasing it is a no-op.
        index.release(2, &["shared.example".to_string()]);
        assert_eq!(index.holder("shared.example"), Some(1));
        index.release(1, &a);
        assert_eq!(index, DomainIndex::default());
    }
}
