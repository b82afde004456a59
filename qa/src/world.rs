//! The marketplace of benchmark 2, built in-process and deterministically:
//! providers with nodes and offerings spread over them, varied reputation,
//! and a set of mixed search queries. Also a brute-force reference of the
//! documented ranking, to prove the fast search returns exactly the right
//! pages.

use std::collections::HashMap;

use candid::Principal;
use dc_identity::{Delegation, Identity, Permission};
use dc_ledger_core::*;

use crate::rng::Rng;

/// `(region, country)` of nodes.
pub const REGIONS: &[(&str, &str)] = &[
    ("eu-central", "DE"),
    ("eu-west", "FR"),
    ("eu-west", "NL"),
    ("eu-north", "SE"),
    ("us-east", "US"),
    ("us-west", "US"),
    ("ca-central", "CA"),
    ("sa-east", "BR"),
    ("ap-south", "IN"),
    ("ap-northeast", "JP"),
    ("ap-southeast", "SG"),
    ("af-south", "ZA"),
];

/// GPU models: (model, memory GiB, price e9s per GPU-hour).
pub const GPUS: &[(&str, u32, u64)] = &[
    ("H100", 80, 2_500_000_000),
    ("A100", 80, 1_500_000_000),
    ("L4", 24, 400_000_000),
];

/// Shape of a generated world.
#[derive(Clone, Debug)]
pub struct WorldConfig {
    pub providers: usize,
    pub nodes_per_provider: usize,
    pub offerings: usize,
    pub seed: u64,
    /// Prices are rounded to multiples of this (ties are ranked by reputation).
    pub price_step_e9s: u64,
    /// Genesis time; also the time of every registration.
    pub time_ns: u64,
}

impl WorldConfig {
    /// `offerings` spread over 1,000 providers with 10 nodes each (fewer
    /// providers when there are fewer than 100 offerings per provider).
    pub fn benchmark(offerings: usize, seed: u64, time_ns: u64) -> Self {
        WorldConfig {
            providers: 1_000.min(offerings.div_ceil(100)).max(1),
            nodes_per_provider: 10,
            offerings,
            seed,
            price_step_e9s: 1_000_000,
            time_ns,
        }
    }
}

/// A built world.
pub struct World {
    pub ledger: Ledger,
    pub config: WorldConfig,
    /// Principals of the providers, by index.
    pub providers: Vec<Principal>,
    /// Offering ids, in creation order (`0..offerings`).
    pub offering_ids: Vec<u64>,
}

/// Deterministic identity number `n` of a kind (`b'p'` provider, `b'n'` node...).
pub fn identity(kind: u8, n: u64) -> Identity {
    let mut secret = [0x5Au8; 32];
    secret[0] = kind;
    secret[1..9].copy_from_slice(&n.to_le_bytes());
    Identity::from_secret_bytes(secret)
}

fn node_caps(rng: &mut Rng) -> NodeCapabilities {
    let (region, country) = *rng.pick(REGIONS);
    let gpus = if rng.chance(35) {
        let (model, mem, _) = *rng.pick(GPUS);
        vec![GpuSpec {
            model: model.into(),
            count: 8,
            memory_gib: mem,
        }]
    } else {
        vec![]
    };
    let confidential = match rng.below(100) {
        0..=14 => Confidential::SevSnp,
        15..=24 => Confidential::Tdx,
        _ => Confidential::None,
    };
    NodeCapabilities {
        cpu_model: "AMD EPYC 9654".into(),
        vcpus: 512,
        ram_gib: 4_096,
        storage_gib: 100_000,
        bandwidth_mbps: 100_000,
        gpus,
        confidential,
        region: region.into(),
        country: country.into(),
        image_hash: "00".repeat(32),
    }
}

fn offering_spec(
    rng: &mut Rng,
    node: Principal,
    caps: &NodeCapabilities,
    n: usize,
    price_step: u64,
) -> OfferingSpec {
    let vcpus = *rng.pick(&[1u32, 2, 4, 8, 16, 32, 64, 128]);
    let ram_gib = (vcpus * *rng.pick(&[1u32, 2, 4, 8])).min(caps.ram_gib);
    let storage_gib = *rng.pick(&[10u32, 25, 50, 100, 200, 500, 1_000, 2_000, 4_000]);
    let bandwidth_mbps = *rng.pick(&[100u32, 250, 500, 1_000, 2_500, 10_000]);
    let gpu = match caps.gpus.first() {
        Some(g) if rng.chance(60) => Some(GpuSpec {
            model: g.model.clone(),
            count: *rng.pick(&[1u32, 2, 4, 8]),
            memory_gib: g.memory_gib,
        }),
        _ => None,
    };
    let confidential = if caps.confidential != Confidential::None && rng.chance(70) {
        caps.confidential
    } else {
        Confidential::None
    };
    let mut base = vcpus as f64 * 4e6
        + ram_gib as f64 * 5e5
        + storage_gib as f64 * 2e4
        + bandwidth_mbps as f64 * 1e3;
    if let Some(g) = &gpu {
        let per_gpu = GPUS
            .iter()
            .find(|(m, _, _)| *m == g.model)
            .map_or(1e9, |(_, _, p)| *p as f64);
        base += g.count as f64 * per_gpu;
    }
    if confidential != Confidential::None {
        base *= 1.2;
    }
    let price = ((base * rng.range_f64(0.6, 1.6)) as u64 / price_step).max(1) * price_step;
    let min_hours = *rng.pick(&[1u32, 1, 1, 24, 168]);
    let max_hours = *rng.pick(&[720u32, 2_160, 8_760, 100_000]);
    OfferingSpec {
        node,
        name: format!("{vcpus}c-{ram_gib}g-{n}"),
        vcpus,
        ram_gib,
        storage_gib,
        bandwidth_mbps,
        gpu,
        confidential,
        region: caps.region.clone(),
        country: caps.country.clone(),
        price_e9s_per_hour: price,
        min_hours,
        max_hours,
    }
}

/// Builds the world: genesis (providers funded, varied reputation), then
/// every provider registers, registers its nodes with signed delegations,
/// and publishes its share of the offerings. `progress` is called with the
/// number of offerings added so far.
pub fn build(config: &WorldConfig, mut progress: impl FnMut(usize)) -> anyhow::Result<World> {
    let mut rng = Rng::new(config.seed);
    let now = config.time_ns;
    let treasury = identity(b't', 0).principal();
    let provider_ids: Vec<Identity> = (0..config.providers as u64)
        .map(|i| identity(b'p', i))
        .collect();
    let providers: Vec<Principal> = provider_ids.iter().map(|p| p.principal()).collect();
    // About one provider in five has no reputation yet; the rest have
    // values in steps of 10, so equal reputations occur too.
    let reputations: Vec<(Principal, u64)> = providers
        .iter()
        .map(|p| {
            (
                *p,
                if rng.chance(20) {
                    0
                } else {
                    10 * (1 + rng.below(100))
                },
            )
        })
        .collect();
    let mut params = Params::with_treasury(treasury, dc_ledger::genesis::local_minting_account());
    params.provider_registration_fee_e9s = 5 * E9S_PER_TOKEN;
    let genesis = Genesis {
        params,
        balances: providers
            .iter()
            .map(|p| (Account::of(*p), 100 * E9S_PER_TOKEN))
            .collect(),
        reputations,
        time_ns: now,
    };
    let mut ledger = Ledger::new(genesis).map_err(|e| anyhow::anyhow!("genesis: {e}"))?;
    let expiry = now + 365 * 24 * HOUR_NS;
    let mut nodes: Vec<Vec<(Principal, NodeCapabilities)>> = Vec::with_capacity(config.providers);
    for (i, provider) in provider_ids.iter().enumerate() {
        let p = provider.principal();
        let (_, country) = *rng.pick(REGIONS);
        let profile = ProviderProfile {
            legal_name: format!("Provider {i}"),
            jurisdiction: country.into(),
            email: format!("ops{i}@provider{i}.example"),
            website: format!("https://provider{i}.example"),
        };
        ledger
            .register_provider(p, now, profile)
            .map_err(|e| anyhow::anyhow!("register provider {i}: {e}"))?;
        let mut mine = Vec::with_capacity(config.nodes_per_provider);
        for j in 0..config.nodes_per_provider {
            let node = identity(b'n', (i * config.nodes_per_provider + j) as u64);
            let delegation = Delegation::sign(
                provider,
                node.public_key_der(),
                &[
                    Permission::CheckIn,
                    Permission::AcceptContracts,
                    Permission::ReportStatus,
                ],
                expiry,
            );
            let capabilities = node_caps(&mut rng);
            let principal = ledger
                .register_node(
                    p,
                    now,
                    RegisterNodeArgs {
                        delegation,
                        capabilities: capabilities.clone(),
                    },
                )
                .map_err(|e| anyhow::anyhow!("register node {j} of provider {i}: {e}"))?;
            mine.push((principal, capabilities));
        }
        nodes.push(mine);
    }
    let mut offering_ids = Vec::with_capacity(config.offerings);
    for n in 0..config.offerings {
        let pi = n % config.providers;
        let (node, caps) = &nodes[pi][rng.below(config.nodes_per_provider as u64) as usize];
        let spec = offering_spec(&mut rng, *node, caps, n, config.price_step_e9s);
        let id = ledger
            .add_offering(providers[pi], now, spec)
            .map_err(|e| anyhow::anyhow!("offering {n}: {e}"))?;
        offering_ids.push(id);
        if (n + 1) % 100_000 == 0 {
            progress(n + 1);
        }
    }
    Ok(World {
        ledger,
        config: config.clone(),
        providers,
        offering_ids,
    })
}

/// `count` mixed queries, seeded: price caps taken from real offerings,
/// resource minimums, GPU model and count, confidential platform, region or
/// country (in varied case), minimum reputation, contract hours, pages of 20
/// or 100 and some offsets.
pub fn queries(world: &World, count: usize, seed: u64) -> Vec<SearchQuery> {
    let mut rng = Rng::new(seed ^ 0x5EA2C4);
    let n = world.offering_ids.len() as u64;
    (0..count)
        .map(|_| {
            let mut q = SearchQuery::default();
            if rng.chance(50) && n > 0 {
                let id = world.offering_ids[rng.below(n) as usize];
                q.max_price_e9s_per_hour =
                    world.ledger.offering(id).map(|o| o.spec.price_e9s_per_hour);
            }
            if rng.chance(40) {
                q.min_vcpus = Some(*rng.pick(&[2, 4, 8, 16, 32, 64]));
            }
            if rng.chance(30) {
                q.min_ram_gib = Some(*rng.pick(&[4, 8, 16, 64, 256]));
            }
            if rng.chance(20) {
                q.min_storage_gib = Some(*rng.pick(&[50, 100, 500, 1_000]));
            }
            if rng.chance(10) {
                q.min_bandwidth_mbps = Some(*rng.pick(&[500, 1_000, 10_000]));
            }
            if rng.chance(25) {
                let (model, _, _) = *rng.pick(GPUS);
                q.gpu_model = Some(if rng.chance(20) {
                    model.to_ascii_lowercase()
                } else {
                    model.to_string()
                });
                if rng.chance(50) {
                    q.min_gpus = Some(*rng.pick(&[1, 2, 4, 8]));
                }
            } else if rng.chance(5) {
                q.min_gpus = Some(*rng.pick(&[1, 2]));
            }
            if rng.chance(20) {
                q.confidential =
                    Some(*rng.pick(&[Confidential::SevSnp, Confidential::Tdx, Confidential::None]));
            }
            if rng.chance(30) {
                let (region, country) = *rng.pick(REGIONS);
                let r = if rng.chance(50) {
                    region.to_string()
                } else {
                    country.to_string()
                };
                // Sometimes in the other case: matching is case-insensitive.
                q.region = Some(match (rng.chance(20), r == r.to_ascii_lowercase()) {
                    (true, true) => r.to_ascii_uppercase(),
                    (true, false) => r.to_ascii_lowercase(),
                    (false, _) => r,
                });
            }
            if rng.chance(25) {
                q.min_provider_reputation = Some(*rng.pick(&[100, 500, 900]));
            }
            if rng.chance(30) {
                q.hours = Some(*rng.pick(&[1, 24, 720, 5_000]));
            }
            q.limit = match rng.below(100) {
                0..=49 => Some(20),
                50..=84 => Some(100),
                _ => None,
            };
            if rng.chance(20) {
                q.offset = Some(*rng.pick(&[20, 100, 500]));
            }
            q
        })
        .collect()
}

/// The documented ranking, by brute force and independent of the ledger's
/// index: every offering filtered (node free capacity included), sorted by
/// price ascending, provider reputation descending, id ascending; then the
/// page at offset/limit.
pub struct Reference {
    rows: Vec<(Offering, u64, NodeInfo)>,
}

impl Reference {
    /// Reads every offering, its provider's reputation and its node through
    /// the ledger's public accessors.
    pub fn new(world: &World) -> Self {
        let mut nodes: HashMap<Principal, NodeInfo> = HashMap::new();
        let rows = world
            .offering_ids
            .iter()
            .filter_map(|&id| world.ledger.offering(id))
            .map(|o| {
                let rep = world.ledger.reputation_of(&o.provider);
                let node = nodes
                    .entry(o.spec.node)
                    .or_insert_with(|| world.ledger.node_info(&o.spec.node).expect("node"))
                    .clone();
                (o, rep, node)
            })
            .collect();
        Reference { rows }
    }

    /// The page `q` asks for.
    pub fn search(&self, q: &SearchQuery) -> SearchResult {
        let limit = q.limit.unwrap_or(20) as usize;
        let offset = q.offset.unwrap_or(0) as usize;
        let lower = |s: &str| s.to_ascii_lowercase();
        let gpu_model = q.gpu_model.as_deref().map(lower);
        let region = q.region.as_deref().map(lower);
        let min_gpus = q
            .min_gpus
            .unwrap_or(if gpu_model.is_some() { 1 } else { 0 });
        let mut hits: Vec<&(Offering, u64, NodeInfo)> = self
            .rows
            .iter()
            .filter(|(o, rep, node)| {
                let s = &o.spec;
                let gpus = s.gpu.as_ref().map_or(0, |g| g.count);
                let model = s.gpu.as_ref().map(|g| lower(&g.model));
                q.max_price_e9s_per_hour
                    .is_none_or(|m| s.price_e9s_per_hour <= m)
                    && q.min_vcpus.is_none_or(|m| s.vcpus >= m)
                    && q.min_ram_gib.is_none_or(|m| s.ram_gib >= m)
                    && q.min_storage_gib.is_none_or(|m| s.storage_gib >= m)
                    && q.min_bandwidth_mbps.is_none_or(|m| s.bandwidth_mbps >= m)
                    && gpus >= min_gpus
                    && gpu_model.as_ref().is_none_or(|m| model.as_ref() == Some(m))
                    && q.confidential.is_none_or(|c| s.confidential == c)
                    && region
                        .as_ref()
                        .is_none_or(|r| lower(&s.region) == *r || lower(&s.country) == *r)
                    && q.hours.is_none_or(|h| s.min_hours <= h && h <= s.max_hours)
                    && q.min_provider_reputation.is_none_or(|m| *rep >= m)
                    && has_room(node, s)
            })
            .collect();
        hits.sort_by(|a, b| {
            a.0.spec
                .price_e9s_per_hour
                .cmp(&b.0.spec.price_e9s_per_hour)
                .then(b.1.cmp(&a.1))
                .then(a.0.id.cmp(&b.0.id))
        });
        let offers: Vec<OfferMatch> = hits
            .iter()
            .skip(offset)
            .take(limit)
            .map(|(o, rep, _)| OfferMatch::new(o, *rep))
            .collect();
        let next_offset = (offers.len() == limit).then_some((offset + offers.len()) as u64);
        SearchResult {
            offers,
            next_offset,
        }
    }
}

/// Free capacity of the node for the offering: capabilities minus reserved.
fn has_room(node: &NodeInfo, s: &OfferingSpec) -> bool {
    let c = &node.capabilities;
    let r = &node.reserved;
    // GPU capacity is per model.
    let (gpus, total, taken) = match &s.gpu {
        Some(g) => (
            g.count,
            c.gpus
                .iter()
                .filter(|n| n.model.eq_ignore_ascii_case(&g.model))
                .map(|n| n.count)
                .sum(),
            node.reserved_gpus(&g.model),
        ),
        None => (0, 0, 0),
    };
    !node.revoked
        && r.vcpus + s.vcpus <= c.vcpus
        && r.ram_gib + s.ram_gib <= c.ram_gib
        && r.storage_gib + s.storage_gib <= c.storage_gib
        && (gpus == 0 || taken + gpus <= total)
}
