//! Marketplace commands: providers, nodes, offerings, search, contracts,
//! reputation, approvals.

use std::path::Path;

use dc_identity::{Delegation, Identity, Permission};
use dc_ledger_core::{
    validate_domains, Account, Confidential, Contract, IngressSettings, LedgerError, OfferMatch,
    ProviderProfile, RegisterNodeArgs, SearchQuery, LAUNCH_MEASUREMENT_LEN,
    TDX_LAUNCH_MEASUREMENT_LEN,
};
use serde_json::{json, Value};

use crate::cli::{ApproveArgs, Filters, RateArgs, RentArgs};
use crate::exit::CliError;
use crate::files;
use crate::output::{format_dct, object, table};
use crate::{parse_principal, Context};

fn read_file(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| CliError::local(format!("{}: {e}", path.display())))
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The query a set of filters describes.
pub fn search_query(
    f: &Filters,
    hours: Option<u32>,
    limit: u32,
    offset: u64,
) -> Result<SearchQuery, CliError> {
    let confidential = match &f.confidential {
        Some(c) => Some(
            c.parse::<Confidential>()
                .map_err(|e| CliError::usage(format!("--confidential: {e}")))?,
        ),
        None => None,
    };
    if limit == 0 || limit > 1_000 {
        return Err(CliError::usage(format!(
            "--limit must be between 1 and 1000, found {limit}"
        )));
    }
    Ok(SearchQuery {
        max_price_e9s_per_hour: f.max_price_e9s_per_hour,
        min_vcpus: f.min_vcpus,
        min_ram_gib: f.min_ram_gib,
        min_storage_gib: f.min_storage_gib,
        min_bandwidth_mbps: f.min_bandwidth_mbps,
        gpu_model: f.gpu.clone(),
        min_gpus: f.gpus,
        confidential,
        region: f.region.clone(),
        min_provider_reputation: f.min_reputation,
        hours,
        offset: Some(offset),
        limit: Some(limit),
    })
}

fn offer_json(o: &OfferMatch) -> Value {
    json!({
        "offering_id": o.offering_id,
        "name": o.name,
        "provider": o.provider.to_text(),
        "node": o.node.to_text(),
        "price_e9s_per_hour": o.price_e9s_per_hour,
        "vcpus": o.vcpus,
        "ram_gib": o.ram_gib,
        "storage_gib": o.storage_gib,
        "bandwidth_mbps": o.bandwidth_mbps,
        "confidential": o.confidential.as_str(),
        "gpus": o.gpu.as_ref().map_or(0, |g| g.count),
        "gpu_model": o.gpu.as_ref().map(|g| g.model.clone()),
        "region": o.region,
        "country": o.country,
        "min_hours": o.min_hours,
        "max_hours": o.max_hours,
        "provider_reputation": o.provider_reputation,
    })
}

/// What a contract's VM must carry to prove which contract it runs: the
/// SEV-SNP HOST_DATA and TDX MRCONFIGID the provider binds into the launch
/// (SPEC §5), derived from the contract id and the developer's and node's
/// principals by `dc_attestation_common`, the same functions the node uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContractBinding {
    pub snp_host_data: [u8; 32],
    pub tdx_mrconfigid: [u8; 48],
}

impl ContractBinding {
    /// The binding of `c`.
    pub fn of(c: &Contract) -> Self {
        let (developer, node) = (c.developer.as_slice(), c.node.as_slice());
        ContractBinding {
            snp_host_data: dc_attestation_common::contract_host_data(c.id, developer, node),
            tdx_mrconfigid: dc_attestation_common::contract_mrconfigid(c.id, developer, node),
        }
    }

    /// `{ "snp_host_data": hex, "tdx_mrconfigid": hex }`, as `contract show` prints it.
    pub fn to_json(&self) -> Value {
        json!({
            "snp_host_data": hex::encode(self.snp_host_data),
            "tdx_mrconfigid": hex::encode(self.tdx_mrconfigid),
        })
    }
}

/// A contract's published launch measurement, by platform (the contract
/// does not name its platform; the length does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishedMeasurement {
    /// 48 bytes: an SEV-SNP MEASUREMENT. (A TDX node before RTMRs were
    /// published also wrote 48 bytes, its MRTD alone: a TDX report never
    /// matches this kind, since MRTD leaves the kernel unmeasured.)
    Snp([u8; LAUNCH_MEASUREMENT_LEN]),
    /// 144 bytes: TDX MRTD, RTMR1 and RTMR2.
    Tdx {
        mrtd: [u8; LAUNCH_MEASUREMENT_LEN],
        rtmr1: [u8; LAUNCH_MEASUREMENT_LEN],
        rtmr2: [u8; LAUNCH_MEASUREMENT_LEN],
    },
}

/// The launch measurement a contract published, checked for length: the
/// ledger only stores well-formed ones, but `dcctl` does not trust the
/// ledger's reply to be. `Ok(None)` when none was published.
pub fn published_measurement(c: &Contract) -> Result<Option<PublishedMeasurement>, String> {
    let Some(m) = &c.launch_measurement else {
        return Ok(None);
    };
    let register = |i: usize| {
        let mut r = [0u8; LAUNCH_MEASUREMENT_LEN];
        r.copy_from_slice(&m[i * LAUNCH_MEASUREMENT_LEN..(i + 1) * LAUNCH_MEASUREMENT_LEN]);
        r
    };
    match m.len() {
        LAUNCH_MEASUREMENT_LEN => Ok(Some(PublishedMeasurement::Snp(register(0)))),
        TDX_LAUNCH_MEASUREMENT_LEN => Ok(Some(PublishedMeasurement::Tdx {
            mrtd: register(0),
            rtmr1: register(1),
            rtmr2: register(2),
        })),
        n => Err(format!(
            "contract {} published a launch measurement of {n} bytes, expected \
             {LAUNCH_MEASUREMENT_LEN} (SEV-SNP) or {TDX_LAUNCH_MEASUREMENT_LEN} (TDX)",
            c.id
        )),
    }
}

fn contract_json(c: &Contract) -> Value {
    let mut v = json!({
        "contract_id": c.id,
        "state": c.state.as_str(),
        "offering_id": c.offering_id,
        "developer": c.developer.to_text(),
        "provider": c.provider.to_text(),
        "node": c.node.to_text(),
        "hours": c.hours,
        "price_e9s_per_hour": c.price_e9s_per_hour,
        "paid_e9s": c.paid_e9s,
        "released_e9s": c.released_e9s,
        "refunded_e9s": c.refunded_e9s,
        "fees_e9s": c.fees_e9s,
        "escrow_e9s": c.escrow_e9s(),
        "created_at_ns": c.created_at_ns,
        "provisioning_deadline_ns": c.provisioning_deadline_ns,
        "active_since_ns": c.active_since_ns,
        "ends_at_ns": c.ends_at_ns,
    });
    if let Some(e) = &c.endpoint {
        v["endpoint"] = json!(e);
    }
    if let Some(h) = &c.evidence_hash {
        v["evidence_hash"] = json!(h.iter().map(|b| format!("{b:02x}")).collect::<String>());
    }
    if let Some(m) = &c.launch_measurement {
        v["launch_measurement"] = json!(hex::encode(m));
    }
    v["binding"] = ContractBinding::of(c).to_json();
    v["ingress"] = ingress_json(&c.ingress);
    v
}

/// `{ "domains": [...], "proxy_protocol": bool }`.
fn ingress_json(i: &IngressSettings) -> Value {
    json!({
        "domains": i.domains,
        "proxy_protocol": i.proxy_protocol,
    })
}

/// One line for humans: the custom domains and the PROXY protocol switch.
fn ingress_text(i: &IngressSettings) -> String {
    format!(
        "custom domains: {}; PROXY protocol v2: {}",
        if i.domains.is_empty() {
            "none".to_string()
        } else {
            i.domains.join(", ")
        },
        if i.proxy_protocol { "on" } else { "off" }
    )
}

fn contract_text(c: &Contract) -> String {
    let mut s = format!(
        "contract {}: {}\n  offering {} on node {}\n  developer {}\n  provider  {}\n  {} hours at {} per hour\n  paid {}, released {} (fees {}), refunded {}, in escrow {}",
        c.id,
        c.state.as_str(),
        c.offering_id,
        c.node,
        c.developer,
        c.provider,
        c.hours,
        format_dct(c.price_e9s_per_hour),
        format_dct(c.paid_e9s),
        format_dct(c.released_e9s),
        format_dct(c.fees_e9s),
        format_dct(c.refunded_e9s),
        format_dct(c.escrow_e9s()),
    );
    if let Some(e) = &c.endpoint {
        s.push_str(&format!("\n  endpoint {e}"));
    }
    if let Some(m) = &c.launch_measurement {
        s.push_str(&format!("\n  launch measurement {}", hex::encode(m)));
    }
    s.push_str(&format!("\n  ingress: {}", ingress_text(&c.ingress)));
    let b = ContractBinding::of(c);
    s.push_str(&format!(
        "\n  binding (what the VM's report must carry)\n    snp host_data  {}\n    tdx mrconfigid {}",
        hex::encode(b.snp_host_data),
        hex::encode(b.tdx_mrconfigid)
    ));
    s
}

/// `dcctl approve`
pub async fn approve(ctx: &Context, a: ApproveArgs) -> Result<(), CliError> {
    let spender = parse_principal("--spender", &a.spender)?;
    let client = ctx.signed_client().await?;
    let expires = a.expires_at_secs.map(|s| s.saturating_mul(1_000_000_000));
    let block = client
        .approve(
            Account::of(spender),
            a.amount_e9s,
            a.expected_allowance_e9s,
            expires,
        )
        .await?;
    ctx.out.print(
        object([
            ("block", json!(block)),
            ("spender", json!(spender.to_text())),
            ("amount_e9s", json!(a.amount_e9s)),
        ]),
        || {
            format!(
                "{spender} may now spend {} from your account (block {block})",
                format_dct(a.amount_e9s)
            )
        },
    );
    Ok(())
}

/// `dcctl provider register`
pub async fn provider_register(
    ctx: &Context,
    name: String,
    jurisdiction: String,
    email: String,
    website: String,
) -> Result<(), CliError> {
    let client = ctx.signed_client().await?;
    let p = client
        .register_provider(ProviderProfile {
            legal_name: name,
            jurisdiction,
            email,
            website,
        })
        .await?;
    ctx.out
        .print(object([("principal", json!(p.to_text()))]), || {
            format!("registered provider {p}")
        });
    Ok(())
}

/// `dcctl provider show [PRINCIPAL]`
pub async fn provider_show(ctx: &Context, who: Option<&str>) -> Result<(), CliError> {
    let p = ctx.principal_or_self("principal", who)?;
    let client = ctx.client().await?;
    let info = client
        .provider(p)
        .await?
        .ok_or_else(|| CliError::refused(format!("{p} is not a registered provider")))?;
    let v = json!({
        "principal": p.to_text(),
        "legal_name": info.profile.legal_name,
        "jurisdiction": info.profile.jurisdiction,
        "email": info.profile.email,
        "website": info.profile.website,
        "registered_at_ns": info.registered_at_ns,
        "reputation": info.reputation,
        "nodes": info.nodes.iter().map(|n| n.to_text()).collect::<Vec<_>>(),
        "offerings": info.offerings,
        "contracts_served": info.contracts_served,
    });
    ctx.out.print(v, || {
        format!(
            "provider {p}\n  {} ({})\n  {} {}\n  reputation {}\n  nodes: {}\n  offerings: {}\n  contracts served: {}",
            info.profile.legal_name,
            info.profile.jurisdiction,
            info.profile.email,
            info.profile.website,
            info.reputation,
            if info.nodes.is_empty() { "none".into() } else { info.nodes.iter().map(|n| n.to_text()).collect::<Vec<_>>().join(", ") },
            if info.offerings.is_empty() { "none".into() } else { info.offerings.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(", ") },
            info.contracts_served
        )
    });
    Ok(())
}

/// `dcctl node register`
pub async fn node_register(
    ctx: &Context,
    node_key: &Path,
    file: &Path,
    valid_days: u64,
) -> Result<(), CliError> {
    let provider = ctx.load_identity()?;
    let node = Identity::load(node_key)
        .map_err(|e| CliError::local(format!("{}: {e}", node_key.display())))?;
    let caps = files::parse_node(&file.display().to_string(), &read_file(file)?)
        .map_err(CliError::usage)?;
    if valid_days == 0 {
        return Err(CliError::usage("--valid-days must be at least 1"));
    }
    let expires = now_ns().saturating_add(valid_days.saturating_mul(86_400_000_000_000));
    let delegation = Delegation::sign(
        &provider,
        node.public_key_der(),
        &[
            Permission::CheckIn,
            Permission::AcceptContracts,
            Permission::ReportStatus,
        ],
        expires,
    );
    let client = ctx.signed_client().await?;
    let n = client
        .register_node(RegisterNodeArgs {
            delegation,
            capabilities: caps,
        })
        .await?;
    ctx.out.print(
        object([
            ("node", json!(n.to_text())),
            ("expires_at_ns", json!(expires)),
        ]),
        || format!("registered node {n}"),
    );
    Ok(())
}

/// `dcctl node revoke NODE`
pub async fn node_revoke(ctx: &Context, node: &str) -> Result<(), CliError> {
    let n = parse_principal("node", node)?;
    ctx.signed_client().await?.revoke_node(n).await?;
    ctx.out.print(
        object([("node", json!(n.to_text())), ("revoked", json!(true))]),
        || format!("revoked node {n}"),
    );
    Ok(())
}

/// `dcctl node show NODE`
pub async fn node_show(ctx: &Context, node: &str) -> Result<(), CliError> {
    let n = parse_principal("node", node)?;
    let info = ctx
        .client()
        .await?
        .node(n)
        .await?
        .ok_or_else(|| CliError::refused(format!("{n} is not a registered node")))?;
    let c = &info.capabilities;
    let v = json!({
        "node": n.to_text(),
        "provider": info.provider.to_text(),
        "revoked": info.revoked,
        "cpu_model": c.cpu_model,
        "vcpus": c.vcpus, "ram_gib": c.ram_gib, "storage_gib": c.storage_gib, "bandwidth_mbps": c.bandwidth_mbps,
        "gpus": c.gpus.iter().map(|g| json!({"model": g.model, "count": g.count, "memory_gib": g.memory_gib})).collect::<Vec<_>>(),
        "confidential": c.confidential.as_str(),
        "region": c.region, "country": c.country,
        "reserved": {"vcpus": info.reserved.vcpus, "ram_gib": info.reserved.ram_gib, "storage_gib": info.reserved.storage_gib, "gpus": info.reserved.gpus},
        "delegation_expires_at_ns": info.delegation.expires_at_ns,
        "last_check_in_block": info.last_check_in_block,
    });
    ctx.out.print(v, || {
        format!(
            "node {n} of provider {}{}\n  {} · {} vCPU · {} GiB RAM · {} GiB storage · {} Mbit/s · {}\n  reserved: {} vCPU, {} GiB RAM",
            info.provider,
            if info.revoked { " (revoked)" } else { "" },
            c.cpu_model, c.vcpus, c.ram_gib, c.storage_gib, c.bandwidth_mbps, c.confidential.as_str(),
            info.reserved.vcpus, info.reserved.ram_gib
        )
    });
    Ok(())
}

/// `dcctl offering add --file OFFERING.toml`
pub async fn offering_add(ctx: &Context, file: &Path) -> Result<(), CliError> {
    let spec = files::parse_offering(&file.display().to_string(), &read_file(file)?)
        .map_err(CliError::usage)?;
    let id = ctx.signed_client().await?.add_offering(spec).await?;
    ctx.out.print(object([("offering_id", json!(id))]), || {
        format!("published offering {id}")
    });
    Ok(())
}

/// `dcctl offering list [--provider P]`
pub async fn offering_list(ctx: &Context, provider: Option<&str>) -> Result<(), CliError> {
    let p = ctx.principal_or_self("--provider", provider)?;
    let client = ctx.client().await?;
    let info = client
        .provider(p)
        .await?
        .ok_or_else(|| CliError::refused(format!("{p} is not a registered provider")))?;
    let mut offerings = Vec::new();
    for id in info.offerings {
        if let Some(o) = client.offering(id).await? {
            offerings.push(o);
        }
    }
    let rows: Vec<Value> = offerings
        .iter()
        .map(|o| {
            let s = &o.spec;
            json!({
                "offering_id": o.id, "name": s.name, "node": s.node.to_text(), "price_e9s_per_hour": s.price_e9s_per_hour,
                "vcpus": s.vcpus, "ram_gib": s.ram_gib, "storage_gib": s.storage_gib, "bandwidth_mbps": s.bandwidth_mbps,
                "confidential": s.confidential.as_str(), "gpus": s.gpu.as_ref().map_or(0, |g| g.count),
                "gpu_model": s.gpu.as_ref().map(|g| g.model.clone()), "region": s.region, "country": s.country,
                "min_hours": s.min_hours, "max_hours": s.max_hours,
            })
        })
        .collect();
    ctx.out.print(
        object([("provider", json!(p.to_text())), ("offerings", json!(rows))]),
        || {
            table(
                &[
                    "ID", "NAME", "PRICE/H", "VCPU", "RAM", "DISK", "CC", "GPU", "REGION", "HOURS",
                ],
                offerings
                    .iter()
                    .map(|o| {
                        let s = &o.spec;
                        vec![
                            o.id.to_string(),
                            s.name.clone(),
                            format_dct(s.price_e9s_per_hour),
                            s.vcpus.to_string(),
                            format!("{} GiB", s.ram_gib),
                            format!("{} GiB", s.storage_gib),
                            s.confidential.as_str().into(),
                            s.gpu
                                .as_ref()
                                .map_or("-".into(), |g| format!("{}×{}", g.count, g.model)),
                            format!("{}/{}", s.region, s.country),
                            format!("{}-{}", s.min_hours, s.max_hours),
                        ]
                    })
                    .collect(),
            )
        },
    );
    Ok(())
}

/// `dcctl offering remove ID`
pub async fn offering_remove(ctx: &Context, id: u64) -> Result<(), CliError> {
    ctx.signed_client().await?.remove_offering(id).await?;
    ctx.out.print(
        object([("offering_id", json!(id)), ("removed", json!(true))]),
        || format!("removed offering {id}"),
    );
    Ok(())
}

fn offers_table(offers: &[OfferMatch]) -> String {
    if offers.is_empty() {
        return "no matching offers".into();
    }
    table(
        &[
            "ID", "PRICE/H", "VCPU", "RAM", "DISK", "CC", "GPU", "REGION", "REP", "PROVIDER",
        ],
        offers
            .iter()
            .map(|o| {
                vec![
                    o.offering_id.to_string(),
                    format_dct(o.price_e9s_per_hour),
                    o.vcpus.to_string(),
                    format!("{} GiB", o.ram_gib),
                    format!("{} GiB", o.storage_gib),
                    o.confidential.as_str().into(),
                    o.gpu
                        .as_ref()
                        .map_or("-".into(), |g| format!("{}×{}", g.count, g.model)),
                    format!("{}/{}", o.region, o.country),
                    o.provider_reputation.to_string(),
                    o.provider.to_text(),
                ]
            })
            .collect(),
    )
}

/// `dcctl offers search …`
pub async fn offers_search(
    ctx: &Context,
    filters: &Filters,
    hours: Option<u32>,
    limit: u32,
    offset: u64,
) -> Result<(), CliError> {
    let q = search_query(filters, hours, limit, offset)?;
    let r = ctx.client().await?.search(q).await?;
    let offers: Vec<Value> = r.offers.iter().map(offer_json).collect();
    ctx.out.print(
        object([
            ("offers", json!(offers)),
            ("next_offset", json!(r.next_offset)),
        ]),
        || {
            let mut s = offers_table(&r.offers);
            if let Some(n) = r.next_offset {
                s.push_str(&format!("\nmore: --offset {n}"));
            }
            s
        },
    );
    Ok(())
}

/// `dcctl rent --offering ID --hours N` or `dcctl rent --best [filters] --hours N`
pub async fn rent(ctx: &Context, r: RentArgs) -> Result<(), CliError> {
    let client = ctx.signed_client().await?;
    let offering_id = match (r.offering, r.best) {
        (Some(id), false) => id,
        (None, true) => {
            let q = search_query(&r.filters, Some(r.hours), 1, 0)?;
            let found = client.search(q).await?;
            found
                .offers
                .first()
                .map(|o| o.offering_id)
                .ok_or_else(|| CliError::refused("no offer matches these requirements"))?
        }
        _ => return Err(CliError::usage("give either --offering ID or --best")),
    };
    let c = client.rent(offering_id, r.hours).await?;
    ctx.out.print(
        object([
            ("contract_id", json!(c.id)),
            ("offering_id", json!(c.offering_id)),
            ("paid_e9s", json!(c.paid_e9s)),
            ("state", json!(c.state.as_str())),
        ]),
        || {
            format!(
                "contract {} on offering {}: paid {} into escrow",
                c.id,
                c.offering_id,
                format_dct(c.paid_e9s)
            )
        },
    );
    Ok(())
}

pub(crate) async fn fetch_contract(ctx: &Context, id: u64) -> Result<Contract, CliError> {
    ctx.client()
        .await?
        .contract(id)
        .await?
        .ok_or_else(|| CliError::refused(format!("contract {id} not found")))
}

/// `dcctl contract show ID`
pub async fn contract_show(ctx: &Context, id: u64) -> Result<(), CliError> {
    let c = fetch_contract(ctx, id).await?;
    ctx.out.print(contract_json(&c), || contract_text(&c));
    Ok(())
}

/// `dcctl contract list`
pub async fn contract_list(ctx: &Context, party: Option<&str>, limit: u32) -> Result<(), CliError> {
    let p = ctx.principal_or_self("--party", party)?;
    if limit == 0 || limit > 1_000 {
        return Err(CliError::usage("--limit must be between 1 and 1000"));
    }
    let list = ctx
        .client()
        .await?
        .list_contracts(Some(p), 0, limit)
        .await?;
    let rows: Vec<Value> = list.iter().map(contract_json).collect();
    ctx.out.print(object([("contracts", json!(rows))]), || {
        if list.is_empty() {
            return "no contracts".into();
        }
        table(
            &[
                "ID", "STATE", "ROLE", "OFFERING", "HOURS", "PAID", "RELEASED", "REFUNDED",
            ],
            list.iter()
                .map(|c| {
                    vec![
                        c.id.to_string(),
                        c.state.as_str().into(),
                        if c.developer == p {
                            "developer".into()
                        } else {
                            "provider".into()
                        },
                        c.offering_id.to_string(),
                        c.hours.to_string(),
                        format_dct(c.paid_e9s),
                        format_dct(c.released_e9s),
                        format_dct(c.refunded_e9s),
                    ]
                })
                .collect(),
        )
    });
    Ok(())
}

/// `dcctl contract ingress ID [--domain NAME]... [--proxy-protocol]`: the
/// names are checked here first with the ledger's own rules, so a bad name is
/// a usage error (exit 2) without a round trip; who holds a name, who may set
/// it and the contract's state are the ledger's to decide (exit 1).
pub async fn contract_ingress(
    ctx: &Context,
    id: u64,
    domains: Vec<String>,
    proxy_protocol: bool,
) -> Result<(), CliError> {
    if let Err(e) = validate_domains(&domains) {
        return Err(CliError::usage(match e {
            LedgerError::InvalidArgument { reason, .. } => format!("--domain: {reason}"),
            other => other.to_string(),
        }));
    }
    let c = ctx
        .signed_client()
        .await?
        .set_contract_ingress(id, domains, proxy_protocol)
        .await?;
    ctx.out.print(
        object([
            ("contract_id", json!(c.id)),
            ("domains", json!(c.ingress.domains)),
            ("proxy_protocol", json!(c.ingress.proxy_protocol)),
        ]),
        || format!("contract {}: {}", c.id, ingress_text(&c.ingress)),
    );
    Ok(())
}

/// `dcctl extend ID --hours N`
pub async fn extend(ctx: &Context, id: u64, hours: u32) -> Result<(), CliError> {
    if hours == 0 {
        return Err(CliError::usage("--hours must be at least 1"));
    }
    let c = ctx.signed_client().await?.extend(id, hours).await?;
    ctx.out.print(
        object([
            ("contract_id", json!(c.id)),
            ("paid_e9s", json!(c.paid_e9s)),
            ("hours", json!(c.hours)),
        ]),
        || {
            format!(
                "contract {} now runs {} hours; paid {} in total",
                c.id,
                c.hours,
                format_dct(c.paid_e9s)
            )
        },
    );
    Ok(())
}

/// `dcctl cancel ID`
pub async fn cancel(ctx: &Context, id: u64) -> Result<(), CliError> {
    let c = ctx.signed_client().await?.cancel(id).await?;
    ctx.out.print(
        object([
            ("contract_id", json!(c.id)),
            ("state", json!(c.state.as_str())),
            ("refunded_e9s", json!(c.refunded_e9s)),
            ("released_e9s", json!(c.released_e9s)),
        ]),
        || {
            format!(
                "contract {} {}: refunded {}, released {}",
                c.id,
                c.state.as_str(),
                format_dct(c.refunded_e9s),
                format_dct(c.released_e9s)
            )
        },
    );
    Ok(())
}

/// `dcctl reputation PRINCIPAL`
pub async fn reputation(ctx: &Context, who: &str) -> Result<(), CliError> {
    let p = parse_principal("principal", who)?;
    let r = ctx.client().await?.reputation(p).await?;
    ctx.out.print(
        object([("principal", json!(p.to_text())), ("reputation", json!(r))]),
        || format!("{p}: reputation {r}"),
    );
    Ok(())
}

/// `dcctl rate PRINCIPAL --spend N --reason TEXT`
pub async fn rate(ctx: &Context, r: RateArgs) -> Result<(), CliError> {
    let target = parse_principal("principal", &r.principal)?;
    if r.spend == 0 {
        return Err(CliError::usage("--spend must be positive"));
    }
    let res = ctx
        .signed_client()
        .await?
        .rate(target, r.spend, r.reason)
        .await?;
    ctx.out.print(
        object([
            ("sender_reputation", json!(res.sender_reputation)),
            ("target_reputation", json!(res.target_reputation)),
        ]),
        || {
            format!(
                "your reputation is now {}; {target}'s is {}",
                res.sender_reputation, res.target_reputation
            )
        },
    );
    Ok(())
}
