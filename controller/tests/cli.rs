//! dcctl as a user runs it, against a real dc-ledger: identity new/show,
//! balance, transfer; JSON fields of INTERFACES.md; exit codes; refusals
//! leave balances unchanged.

mod common;

use common::{dcctl, json, start_ledger};

#[test]
fn identity_balance_and_transfer_work_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    let alice = json(&dcctl(&[
        "identity",
        "new",
        "--out",
        &p("alice.pem"),
        "--json",
    ]))["principal"]
        .as_str()
        .unwrap()
        .to_string();
    let bob = json(&dcctl(&[
        "identity",
        "new",
        "--out",
        &p("bob.pem"),
        "--json",
    ]))["principal"]
        .as_str()
        .unwrap()
        .to_string();
    // The key file is private, and never overwritten.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(p("alice.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let again = dcctl(&["identity", "new", "--out", &p("alice.pem")]);
    assert_eq!(again.status.code(), Some(4));
    assert_eq!(
        json(&dcctl(&[
            "--identity",
            &p("alice.pem"),
            "identity",
            "show",
            "--json"
        ]))["principal"],
        alice.as_str()
    );
    assert!(std::fs::read_to_string(p("alice.pem"))
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));

    let genesis = dir.path().join("genesis.toml");
    std::fs::write(
        &genesis,
        format!("treasury = \"{bob}\"\n[params]\ntransfer_fee_e9s = 10000\n[[balances]]\nprincipal = \"{alice}\"\namount_e9s = 5000000000\n"),
    )
    .unwrap();
    let ledger = start_ledger(dir.path(), &genesis);
    let l = ledger.url.as_str();

    let b = json(&dcctl(&[
        "--ledger",
        l,
        "--identity",
        &p("alice.pem"),
        "balance",
        "--json",
    ]));
    assert_eq!(b["principal"], alice.as_str());
    assert_eq!(b["balance_e9s"], 5_000_000_000u64);

    let t = json(&dcctl(&[
        "--ledger",
        l,
        "--identity",
        &p("alice.pem"),
        "transfer",
        "--to",
        &bob,
        "--amount-e9s",
        "1000000000",
        "--json",
    ]));
    assert!(t["block"].as_u64().is_some());
    assert_eq!(
        json(&dcctl(&["--ledger", l, "balance", &alice, "--json"]))["balance_e9s"],
        5_000_000_000u64 - 1_000_000_000 - 10_000
    );
    // Bob is also the treasury here: amount + fee.
    assert_eq!(
        json(&dcctl(&["--ledger", l, "balance", &bob, "--json"]))["balance_e9s"],
        1_000_010_000u64
    );

    // Refusal: exit 1, one line on stderr, nothing on stdout, nothing changed.
    let refused = dcctl(&[
        "--ledger",
        l,
        "--identity",
        &p("alice.pem"),
        "transfer",
        "--to",
        &bob,
        "--amount-e9s",
        "999999999999",
        "--json",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(refused.stdout.is_empty());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("insufficient funds"), "{err}");
    assert_eq!(
        json(&dcctl(&["--ledger", l, "balance", &alice, "--json"]))["balance_e9s"],
        3_999_990_000u64
    );

    // Usage errors and an unreachable ledger have their own codes.
    assert_eq!(
        dcctl(&["--ledger", l, "balance", "not-a-principal"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        dcctl(&[
            "--ledger",
            l,
            "--identity",
            &p("alice.pem"),
            "transfer",
            "--to",
            &bob,
            "--amount-e9s",
            "0"
        ])
        .status
        .code(),
        Some(2)
    );
    assert_eq!(
        dcctl(&["--ledger", "http://127.0.0.1:1", "balance", &bob])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(
        dcctl(&["--ledger", "ftp://x", "balance", &bob])
            .status
            .code(),
        Some(2)
    );
    // No identity: a local problem with a hint.
    let none = dcctl(&[
        "--ledger",
        l,
        "--identity",
        &p("missing.pem"),
        "transfer",
        "--to",
        &bob,
        "--amount-e9s",
        "1",
    ]);
    assert_eq!(none.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&none.stderr).contains("dcctl identity new"));
}

#[test]
fn help_explains_exit_codes_and_examples() {
    let out = dcctl(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Exit codes") && text.contains("ic://CANISTER_ID"),
        "{text}"
    );
}
