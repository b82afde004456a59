//! The canister's interface against `ledger.did` and the core's method table.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use candid::types::subtype::equal;
use candid::types::{FuncMode, Function, Type, TypeInner};
use candid::{CandidType, IDLArgs, Nat, Principal, TypeEnv};
use candid_parser::utils::{service_equal, CandidSource};
use dc_icrc3::{GetArchivesArgs, GetBlocksRequest};
use dc_ledger_core::dispatch::{self, Mode};
use dc_ledger_core::*;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

use crate::init::InitArgs;

const DID_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ledger.did");
const REGENERATE: &str =
    "DC_UPDATE_DID=1 cargo test -p dc-ledger-canister committed_did_is_the_exported_service";
/// Methods the canister has beyond the core's table.
const CANISTER_ONLY: &[&str] = &["icrc3_get_tip_certificate"];

fn committed_did() -> String {
    std::fs::read_to_string(DID_PATH)
        .unwrap_or_else(|e| panic!("cannot read {DID_PATH}: {e}; generate it with `{REGENERATE}`"))
}

/// The committed interface: type environment, init argument types and methods.
fn did() -> (TypeEnv, Vec<Type>, BTreeMap<String, Function>) {
    let did = committed_did();
    let (env, actor) = CandidSource::Text(&did)
        .load()
        .expect("ledger.did parses and type-checks");
    let actor = actor.expect("ledger.did has a service");
    let init = match env.trace_type(&actor).expect("service type").as_ref() {
        TypeInner::Class(args, _) => args.clone(),
        _ => vec![],
    };
    let methods = env
        .as_service(&actor)
        .expect("a service")
        .iter()
        .map(|(name, ty)| (name.clone(), env.as_func(ty).expect("a method").clone()))
        .collect();
    (env, init, methods)
}

fn same_types(env: &TypeEnv, ours: &[Type], theirs: &[Type]) -> Result<(), String> {
    if ours.len() != theirs.len() {
        return Err(format!(
            "{} types vs {} in ledger.did",
            ours.len(),
            theirs.len()
        ));
    }
    for (a, b) in ours.iter().zip(theirs) {
        equal(&mut HashSet::new(), env, a, b).map_err(|e| format!("{a} vs {b}: {e}"))?;
    }
    Ok(())
}

#[test]
fn committed_did_is_the_exported_service() {
    let generated = crate::candid_interface();
    if std::env::var_os("DC_UPDATE_DID").is_some() {
        std::fs::write(DID_PATH, format!("{}\n", generated.trim_end())).expect("write ledger.did");
    }
    let committed = committed_did();
    if let Err(e) = service_equal(
        CandidSource::Text(&committed),
        CandidSource::Text(&generated),
    ) {
        panic!(
            "canister/canister/ledger.did differs from the service the canister exports: {e}\n\
             regenerate it with `{REGENERATE}` and commit it.\n--- generated ---\n{generated}"
        );
    }
}

#[test]
fn did_has_exactly_the_core_methods_with_their_types_and_modes() {
    let (env, init, methods) = did();
    let mut expected: BTreeSet<&str> = CANISTER_ONLY.iter().copied().collect();
    for sig in dispatch::signatures() {
        expected.insert(sig.name);
        let f = methods
            .get(sig.name)
            .unwrap_or_else(|| panic!("{} is missing from ledger.did", sig.name));
        let query = f.modes == [FuncMode::Query];
        let update = f.modes.is_empty();
        match sig.mode {
            Mode::Query => assert!(
                query,
                "{} must be a query in ledger.did, found modes {:?}",
                sig.name, f.modes
            ),
            Mode::Update => assert!(
                update,
                "{} must be an update in ledger.did, found modes {:?}",
                sig.name, f.modes
            ),
        }
        same_types(&env, &sig.args, &f.args)
            .unwrap_or_else(|e| panic!("arguments of {}: {e}", sig.name));
        same_types(&env, &sig.rets, &f.rets)
            .unwrap_or_else(|e| panic!("results of {}: {e}", sig.name));
    }
    let extra: Vec<&String> = methods
        .keys()
        .filter(|m| !expected.contains(m.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "ledger.did has methods the core does not: {extra:?}"
    );
    let tip = &methods["icrc3_get_tip_certificate"];
    assert_eq!(tip.modes, [FuncMode::Query]);
    assert!(tip.args.is_empty());
    same_types(
        &env,
        &[Option::<dc_icrc3::ICRC3DataCertificate>::ty()],
        &tip.rets,
    )
    .expect("tip certificate type");
    same_types(&env, &[InitArgs::ty()], &init).expect("init argument type");
}

/// Checks that `value` encodes, decodes against the did's argument types of
/// `method`, re-encodes with those types, and decodes back to itself.
fn round_trip<T: CandidType + DeserializeOwned + PartialEq + std::fmt::Debug>(
    env: &TypeEnv,
    types: &[Type],
    what: &str,
    value: T,
) {
    let bytes = candid::encode_one(&value).unwrap_or_else(|e| panic!("{what}: encode: {e}"));
    let args = IDLArgs::from_bytes_with_types(&bytes, env, types)
        .unwrap_or_else(|e| panic!("{what}: the encoding does not decode against ledger.did: {e}"));
    let again = args
        .to_bytes_with_types(env, types)
        .unwrap_or_else(|e| panic!("{what}: re-encode: {e}"));
    let back: T = candid::decode_one(&again).unwrap_or_else(|e| panic!("{what}: decode: {e}"));
    assert_eq!(back, value, "{what} changed in the round trip");
}

fn p(n: u8) -> Principal {
    Principal::from_slice(&[n; 29])
}

fn account(n: u8) -> Account {
    Account {
        owner: p(n),
        subaccount: Some([n; 32]),
    }
}

fn memo() -> Option<ByteBuf> {
    Some(ByteBuf::from(b"memo".to_vec()))
}

fn capabilities() -> NodeCapabilities {
    NodeCapabilities {
        cpu_model: "AMD EPYC 9654".into(),
        vcpus: 16,
        ram_gib: 64,
        storage_gib: 2_000,
        bandwidth_mbps: 10_000,
        gpus: vec![GpuSpec {
            model: "H100".into(),
            count: 8,
            memory_gib: 80,
        }],
        confidential: Confidential::Tdx,
        region: "eu-central".into(),
        country: "DE".into(),
        image_hash: "ab".repeat(32),
    }
}

fn delegation() -> dc_identity::Delegation {
    let provider = dc_identity::Identity::from_secret_bytes([1; 32]);
    let node = dc_identity::Identity::from_secret_bytes([2; 32]);
    dc_identity::Delegation::sign(
        &provider,
        node.public_key_der(),
        &[
            dc_identity::Permission::CheckIn,
            dc_identity::Permission::ReportStatus,
        ],
        u64::MAX,
    )
}

#[test]
fn every_argument_round_trips_against_ledger_did() {
    let (env, init, methods) = did();
    let mut covered = BTreeSet::new();
    let mut check = |method: &str| -> Vec<Type> {
        covered.insert(method.to_string());
        methods
            .get(method)
            .unwrap_or_else(|| panic!("{method} missing from ledger.did"))
            .args
            .clone()
    };
    macro_rules! sample {
        ($method:literal, $value:expr) => {{
            let types = check($method);
            round_trip(&env, &types, $method, $value);
        }};
    }
    // Updates.
    sample!(
        "icrc1_transfer",
        TransferArg {
            from_subaccount: Some([9; 32]),
            to: account(2),
            amount: Nat::from(u128::MAX),
            fee: Some(Nat::from(10_000u64)),
            memo: memo(),
            created_at_time: Some(1_700_000_000_000_000_000),
        }
    );
    sample!(
        "icrc1_transfer",
        TransferArg {
            from_subaccount: None,
            to: Account::of(p(3)),
            amount: Nat::from(1u64),
            fee: None,
            memo: None,
            created_at_time: None,
        }
    );
    sample!(
        "icrc2_approve",
        ApproveArgs {
            from_subaccount: None,
            spender: account(4),
            amount: Nat::from(5u64),
            expected_allowance: Some(Nat::from(0u64)),
            expires_at: Some(u64::MAX),
            fee: None,
            memo: memo(),
            created_at_time: Some(1),
        }
    );
    sample!(
        "icrc2_transfer_from",
        TransferFromArgs {
            spender_subaccount: Some([1; 32]),
            from: account(5),
            to: account(6),
            amount: Nat::from(7u64),
            fee: Some(Nat::from(10_000u64)),
            memo: None,
            created_at_time: None,
        }
    );
    sample!(
        "register_provider",
        ProviderProfile {
            legal_name: "Provider GmbH".into(),
            jurisdiction: "DE".into(),
            email: "ops@example.com".into(),
            website: "https://example.com".into(),
        }
    );
    sample!(
        "register_node",
        RegisterNodeArgs {
            delegation: delegation(),
            capabilities: capabilities()
        }
    );
    sample!("revoke_node", p(7));
    let spec = OfferingSpec {
        node: p(7),
        name: "8x H100".into(),
        vcpus: 64,
        ram_gib: 512,
        storage_gib: 4_000,
        bandwidth_mbps: 10_000,
        gpu: Some(GpuSpec {
            model: "H100".into(),
            count: 8,
            memory_gib: 80,
        }),
        confidential: Confidential::SevSnp,
        region: "eu-central".into(),
        country: "DE".into(),
        price_e9s_per_hour: 12 * E9S_PER_TOKEN,
        min_hours: 1,
        max_hours: 720,
    };
    sample!("add_offering", spec.clone());
    sample!("remove_offering", 3u64);
    sample!(
        "rent",
        RentArgs {
            offering_id: 3,
            hours: 24
        }
    );
    sample!("accept_contract", 4u64);
    sample!("reject_contract", 4u64);
    sample!("start_provisioning", 4u64);
    sample!(
        "report_active",
        ReportActiveArgs {
            contract_id: 4,
            endpoint: "vm4.example.com".into(),
            evidence_hash: ByteBuf::from(vec![0xee; 32]),
            launch_measurement: Some(ByteBuf::from(vec![0xab; 48])),
        }
    );
    sample!(
        "extend_contract",
        ExtendArgs {
            contract_id: 4,
            hours: 12
        }
    );
    sample!("cancel_contract", 4u64);
    sample!(
        "set_contract_ingress",
        SetIngressArgs {
            contract_id: 4,
            domains: vec!["api.example.com".into(), "*.apps.example.com".into()],
            proxy_protocol: true,
        }
    );
    sample!(
        "set_contract_ingress",
        SetIngressArgs {
            contract_id: 5,
            domains: vec![],
            proxy_protocol: false,
        }
    );
    sample!(
        "rate",
        RateArgs {
            target: p(8),
            spend: 1_000,
            reason: "never provisioned".into()
        }
    );
    sample!(
        "check_in",
        CheckInArgs {
            block_height: 12,
            previous_block_hash: ByteBuf::from(vec![1; 32]),
            signature: ByteBuf::from(vec![2; 64]),
        }
    );
    // Queries with arguments.
    sample!("icrc1_balance_of", account(1));
    sample!(
        "icrc2_allowance",
        AllowanceArgs {
            account: account(1),
            spender: Account::of(p(2))
        }
    );
    sample!(
        "icrc3_get_blocks",
        vec![
            GetBlocksRequest {
                start: Nat::from(0u64),
                length: Nat::from(10u64)
            },
            GetBlocksRequest {
                start: Nat::from(u128::MAX),
                length: Nat::from(1u64)
            },
        ]
    );
    sample!("icrc3_get_archives", GetArchivesArgs { from: Some(p(1)) });
    sample!("get_provider", p(1));
    sample!("get_node", p(2));
    sample!("get_offering", 1u64);
    sample!(
        "search_offerings",
        SearchQuery {
            max_price_e9s_per_hour: Some(E9S_PER_TOKEN),
            min_vcpus: Some(4),
            gpu_model: Some("h100".into()),
            confidential: Some(Confidential::Tdx),
            hours: Some(24),
            limit: Some(50),
            ..SearchQuery::default()
        }
    );
    sample!("search_offerings", SearchQuery::default());
    sample!("get_contract", 1u64);
    sample!(
        "list_contracts",
        ListContractsArgs {
            party: Some(p(1)),
            offset: Some(20),
            limit: Some(10)
        }
    );
    sample!("get_reputation", p(1));
    sample!("list_ratings", p(1));
    // Every method that takes an argument has a sample.
    let needs_sample: BTreeSet<String> = dispatch::signatures()
        .iter()
        .filter(|s| !s.args.is_empty())
        .map(|s| s.name.to_string())
        .collect();
    let missing: Vec<&String> = needs_sample.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "methods without a sample argument: {missing:?}"
    );
    // And the install argument.
    round_trip(
        &env,
        &init,
        "init",
        InitArgs {
            initial_balances: vec![(account(1), 1_000 * E9S_PER_TOKEN), (Account::of(p(2)), 1)],
            block_interval_secs: Some(60),
            token_symbol: Some("tDCT".into()),
            transfer_fee_e9s: Some(0),
            ..InitArgs::new(p(9))
        },
    );
}

#[test]
fn readme_init_example_type_checks_against_ledger_did() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let example = readme
        .split("```candid\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README.md has a ```candid block with the init argument");
    let (env, init, _) = did();
    let args = candid_parser::parse_idl_args(example)
        .expect("the README's init argument parses")
        .annotate_types(true, &env, &init)
        .expect("the README's init argument has the type of the install argument");
    let bytes = args.to_bytes_with_types(&env, &init).expect("encode");
    let decoded: InitArgs = candid::decode_one(&bytes).expect("decodes as InitArgs");
    assert_eq!(decoded.block_interval_secs, Some(600));
    assert_eq!(decoded.initial_balances.len(), 1);
}

/// A client built before `Contract.ingress` still reads contracts from an
/// upgraded ledger: Candid skips record fields the reader does not know.
/// (The other way round, a new client reading an old ledger, fails on the
/// missing field: upgrade the ledger first.)
#[test]
fn contracts_with_ingress_decode_for_clients_built_before_it() {
    #[derive(candid::CandidType, serde::Deserialize, Debug, PartialEq)]
    struct ContractBeforeIngress {
        id: u64,
        state: ContractState,
        endpoint: Option<String>,
        launch_measurement: Option<ByteBuf>,
        history: Vec<(u64, ContractState)>,
    }
    let (env, _, methods) = did();
    let contract = Contract {
        id: 7,
        offering_id: 1,
        developer: p(1),
        provider: p(2),
        node: p(3),
        resources: Resources::default(),
        gpu_model: None,
        price_e9s_per_hour: 1,
        hours: 2,
        state: ContractState::Active,
        created_at_ns: 1,
        provisioning_deadline_ns: 2,
        active_since_ns: Some(2),
        ends_at_ns: Some(3),
        paid_e9s: 2,
        released_e9s: 0,
        refunded_e9s: 0,
        fees_e9s: 0,
        endpoint: Some("c7.node.example".into()),
        evidence_hash: None,
        launch_measurement: None,
        ingress: IngressSettings {
            domains: vec!["api.example.com".into()],
            proxy_protocol: true,
        },
        history: vec![(1, ContractState::Requested), (2, ContractState::Active)],
    };
    // The reply as the canister sends it, typed by ledger.did.
    let reply: LedgerResult<Contract> = Ok(contract.clone());
    let rets = &methods["set_contract_ingress"].rets;
    round_trip(&env, rets, "set_contract_ingress reply", reply.clone());
    let bytes = candid::encode_one(&reply).unwrap();
    let old: Result<ContractBeforeIngress, LedgerError> =
        candid::decode_one(&bytes).expect("an old reader decodes the new contract");
    assert_eq!(
        old.unwrap(),
        ContractBeforeIngress {
            id: 7,
            state: ContractState::Active,
            endpoint: Some("c7.node.example".into()),
            launch_measurement: None,
            history: contract.history.clone(),
        }
    );
}
