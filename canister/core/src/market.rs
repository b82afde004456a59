//! Providers, nodes, offerings and matching.
//!
//! Matching walks a price-ordered index of compact entries, so a query with a
//! price cap or a small page stops early even among a million offerings; ties
//! on price are ranked by provider reputation (higher first), then offering id.

use std::collections::{BTreeMap, BTreeSet};

use candid::Principal;
use dc_identity::Permission;
use serde::{Deserialize, Serialize};

use crate::error::{LedgerError, LedgerResult};
use crate::ledger::Ledger;
use crate::types::*;

/// Longest text field in a profile or offering.
pub const MAX_TEXT_LEN: usize = 256;
/// Largest page a search returns.
pub const MAX_SEARCH_LIMIT: u32 = 1_000;
/// Page size when a search names none.
pub const DEFAULT_SEARCH_LIMIT: u32 = 20;
/// Most offerings one provider may publish.
pub const MAX_OFFERINGS_PER_PROVIDER: usize = 100_000;

/// A registered provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Provider {
    pub profile: ProviderProfile,
    pub registered_at_ns: u64,
    pub nodes: BTreeSet<Principal>,
    pub offerings: BTreeSet<u64>,
    pub contracts_served: u64,
}

/// The marketplace part of the ledger state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Market {
    pub providers: BTreeMap<Principal, Provider>,
    pub nodes: BTreeMap<Principal, NodeInfo>,
    pub offerings: BTreeMap<u64, Offering>,
    pub next_offering_id: u64,
    pub contracts: BTreeMap<u64, Contract>,
    pub next_contract_id: u64,
    /// Contracts by party (developer, provider and node), for listing.
    pub contracts_by_party: BTreeMap<Principal, BTreeSet<u64>>,
    /// Contracts not yet final, keyed by the time something happens to them
    /// next (provisioning deadline or end of term).
    pub timeline: BTreeSet<(u64, u64)>,
    /// Active contracts, whose escrow is released as time passes.
    pub active: BTreeSet<u64>,
}

/// Compact copy of what a search filters on, kept in price order.
#[derive(Clone, Debug, PartialEq, Eq)]
struct IndexEntry {
    vcpus: u32,
    ram_gib: u32,
    storage_gib: u32,
    bandwidth_mbps: u32,
    gpus: u32,
    confidential: Confidential,
    /// Lower-cased GPU model, region and country, interned.
    gpu_model: u32,
    region: u32,
    country: u32,
    min_hours: u32,
    max_hours: u32,
    provider: Principal,
    node: Principal,
}

/// Derived search index; never serialized, rebuilt from the market.
#[derive(Clone, Debug, Default)]
pub struct SearchIndex {
    by_price: BTreeMap<(u64, u64), IndexEntry>,
    symbols: BTreeMap<String, u32>,
}

// The index is derived state: equal markets have equal indexes.
impl PartialEq for SearchIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for SearchIndex {}

const NO_SYMBOL: u32 = 0;

impl SearchIndex {
    /// Builds the index of every offering in the market.
    pub fn build(market: &Market) -> Self {
        let mut index = SearchIndex::default();
        for o in market.offerings.values() {
            index.insert(o);
        }
        index
    }

    fn intern(&mut self, s: &str) -> u32 {
        let key = s.to_ascii_lowercase();
        let next = self.symbols.len() as u32 + 1;
        *self.symbols.entry(key).or_insert(next)
    }

    fn lookup(&self, s: &str) -> Option<u32> {
        self.symbols.get(&s.to_ascii_lowercase()).copied()
    }

    fn insert(&mut self, o: &Offering) {
        let s = &o.spec;
        let (gpus, gpu_model) = match &s.gpu {
            Some(g) => (g.count, self.intern(&g.model)),
            None => (0, NO_SYMBOL),
        };
        let entry = IndexEntry {
            vcpus: s.vcpus,
            ram_gib: s.ram_gib,
            storage_gib: s.storage_gib,
            bandwidth_mbps: s.bandwidth_mbps,
            gpus,
            confidential: s.confidential,
            gpu_model,
            region: self.intern(&s.region),
            country: self.intern(&s.country),
            min_hours: s.min_hours,
            max_hours: s.max_hours,
            provider: o.provider,
            node: s.node,
        };
        self.by_price.insert((s.price_e9s_per_hour, o.id), entry);
    }

    fn remove(&mut self, o: &Offering) {
        self.by_price.remove(&(o.spec.price_e9s_per_hour, o.id));
    }
}

fn check_text(field: &str, value: &str, required: bool) -> LedgerResult<()> {
    if required && value.trim().is_empty() {
        return Err(LedgerError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_TEXT_LEN {
        return Err(LedgerError::invalid(
            field,
            format!("{} bytes, at most {MAX_TEXT_LEN}", value.len()),
        ));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(LedgerError::invalid(field, "contains control characters"));
    }
    Ok(())
}

fn check_country(value: &str) -> LedgerResult<()> {
    if value.len() != 2 || !value.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(LedgerError::invalid(
            "country",
            format!("expected an ISO 3166-1 alpha-2 code like \"DE\", found {value:?}"),
        ));
    }
    Ok(())
}

fn validate_profile(p: &ProviderProfile) -> LedgerResult<()> {
    check_text("legal_name", &p.legal_name, true)?;
    check_text("jurisdiction", &p.jurisdiction, true)?;
    check_text("email", &p.email, true)?;
    check_text("website", &p.website, false)?;
    let at = p.email.find('@');
    if !matches!(at, Some(i) if i > 0 && i + 1 < p.email.len())
        || p.email.contains(char::is_whitespace)
    {
        return Err(LedgerError::invalid(
            "email",
            format!(
                "expected an address like name@example.com, found {:?}",
                p.email
            ),
        ));
    }
    if !p.website.is_empty()
        && !p.website.starts_with("https://")
        && !p.website.starts_with("http://")
    {
        return Err(LedgerError::invalid(
            "website",
            format!("expected an http(s) URL, found {:?}", p.website),
        ));
    }
    Ok(())
}

/// Most GPUs one node may declare, all models together (so that no sum of
/// GPU counts can overflow).
pub const MAX_NODE_GPUS: u32 = 1024;

fn validate_capabilities(c: &NodeCapabilities) -> LedgerResult<()> {
    check_text("cpu_model", &c.cpu_model, true)?;
    check_text("region", &c.region, true)?;
    check_country(&c.country)?;
    check_text("image_hash", &c.image_hash, false)?;
    if c.vcpus == 0 || c.ram_gib == 0 {
        return Err(LedgerError::invalid(
            "capabilities",
            "a node needs at least one vCPU and 1 GiB of RAM",
        ));
    }
    if c.gpus.len() > 16 {
        return Err(LedgerError::invalid(
            "gpus",
            "at most 16 GPU models per node",
        ));
    }
    for g in &c.gpus {
        check_text("gpus.model", &g.model, true)?;
    }
    let total: u64 = c.gpus.iter().map(|g| u64::from(g.count)).sum();
    if total > u64::from(MAX_NODE_GPUS) {
        return Err(LedgerError::invalid(
            "gpus",
            format!("at most {MAX_NODE_GPUS} GPUs per node, found {total}"),
        ));
    }
    Ok(())
}

/// Free resources on a node: capabilities minus what unfinished contracts hold.
pub(crate) fn node_has_room(node: &NodeInfo, want: &Resources, gpu_model: Option<&str>) -> bool {
    let c = &node.capabilities;
    let r = &node.reserved;
    let (gpus_total, gpus_taken): (u32, u32) = match gpu_model {
        Some(m) => (c.gpus_of(m), node.reserved_gpus(m)),
        None => (0, 0),
    };
    !node.revoked
        && r.vcpus.saturating_add(want.vcpus) <= c.vcpus
        && r.ram_gib.saturating_add(want.ram_gib) <= c.ram_gib
        && r.storage_gib.saturating_add(want.storage_gib) <= c.storage_gib
        && (want.gpus == 0 || gpus_taken.saturating_add(want.gpus) <= gpus_total)
}

/// Resources an offering takes from its node.
pub(crate) fn offering_resources(spec: &OfferingSpec) -> Resources {
    Resources {
        vcpus: spec.vcpus,
        ram_gib: spec.ram_gib,
        storage_gib: spec.storage_gib,
        gpus: spec.gpu.as_ref().map_or(0, |g| g.count),
    }
}

impl Ledger {
    // ------------------------------------------------------------ providers

    /// Registers the caller as a provider; charges the registration fee.
    pub fn register_provider(
        &mut self,
        caller: Principal,
        now: u64,
        profile: ProviderProfile,
    ) -> LedgerResult<Principal> {
        if caller == Principal::anonymous() {
            return Err(LedgerError::unauthorized(caller, "register as a provider"));
        }
        validate_profile(&profile)?;
        let fee = self.params.provider_registration_fee_e9s;
        let balance = self.balance_of(&Account::of(caller));
        if balance < fee {
            return Err(LedgerError::InsufficientFunds {
                needed_e9s: fee,
                balance_e9s: balance,
            });
        }
        if self.market.providers.contains_key(&caller) {
            return Err(LedgerError::AlreadyRegistered(format!("provider {caller}")));
        }
        if self.market.nodes.contains_key(&caller) {
            return Err(LedgerError::invalid(
                "caller",
                "a node key cannot register as a provider",
            ));
        }
        let now = self.advance_clock(now);
        self.charge_service_fee(caller, fee, "registration")?;
        self.market.providers.insert(
            caller,
            Provider {
                profile,
                registered_at_ns: now,
                nodes: BTreeSet::new(),
                offerings: BTreeSet::new(),
                contracts_served: 0,
            },
        );
        Ok(caller)
    }

    /// A provider's public view.
    pub fn provider_info(&self, p: &Principal) -> Option<ProviderInfo> {
        let prov = self.market.providers.get(p)?;
        Some(ProviderInfo {
            principal: *p,
            profile: prov.profile.clone(),
            registered_at_ns: prov.registered_at_ns,
            reputation: self.reputation_of(p),
            nodes: prov.nodes.iter().copied().collect(),
            offerings: prov.offerings.iter().copied().collect(),
            contracts_served: prov.contracts_served,
        })
    }

    // ---------------------------------------------------------------- nodes

    /// Registers a node under the provider that signed its delegation. The
    /// caller must be that provider or the node itself; a registered node
    /// calling for itself cannot widen its delegation (more permissions or a
    /// later expiry than the registered one), only its provider can.
    pub fn register_node(
        &mut self,
        caller: Principal,
        now: u64,
        args: RegisterNodeArgs,
    ) -> LedgerResult<Principal> {
        let now_checked = self.time_ns.max(now);
        let verified = args
            .delegation
            .verify(now_checked)
            .map_err(|e| LedgerError::Delegation(e.to_string()))?;
        if caller != verified.provider && caller != verified.node {
            return Err(LedgerError::unauthorized(
                caller,
                "register a node it neither is nor delegated",
            ));
        }
        if !self.market.providers.contains_key(&verified.provider) {
            return Err(LedgerError::not_found("provider", verified.provider));
        }
        if verified.node == verified.provider {
            return Err(LedgerError::Delegation(
                "the node key must differ from the provider key".into(),
            ));
        }
        if self.market.providers.contains_key(&verified.node) {
            return Err(LedgerError::Delegation(
                "a provider key cannot be used as a node key".into(),
            ));
        }
        validate_capabilities(&args.capabilities)?;
        let (reserved, reserved_gpus_by_model) = match self.market.nodes.get(&verified.node) {
            Some(existing) if existing.provider != verified.provider => {
                return Err(LedgerError::AlreadyRegistered(format!(
                    "node {} under another provider",
                    verified.node
                )));
            }
            Some(existing) if existing.revoked => {
                return Err(LedgerError::Delegation(format!(
                    "node {} was revoked; generate a new node key",
                    verified.node
                )));
            }
            // A node re-registering itself may not widen its own
            // delegation: it could otherwise present an older, broader one
            // its provider has since narrowed. Renewals and new permissions
            // come from the provider's own call.
            Some(existing)
                if caller == verified.node
                    && (verified.expires_at_ns > existing.delegation.expires_at_ns
                        || verified
                            .permissions
                            .iter()
                            .any(|p| !existing.delegation.permissions.contains(p))) =>
            {
                return Err(LedgerError::unauthorized(
                    caller,
                    "widen its own delegation (more permissions or a later expiry than the one \
                     registered); its provider must register it",
                ));
            }
            // Re-registration renews the delegation and updates capabilities.
            Some(existing) => (
                existing.reserved.clone(),
                existing.reserved_gpus_by_model.clone(),
            ),
            None => (Resources::default(), Vec::new()),
        };
        let now = self.advance_clock(now);
        let last = self
            .market
            .nodes
            .get(&verified.node)
            .and_then(|n| n.last_check_in_block);
        self.market.nodes.insert(
            verified.node,
            NodeInfo {
                principal: verified.node,
                provider: verified.provider,
                capabilities: args.capabilities,
                delegation: args.delegation,
                registered_at_ns: now,
                revoked: false,
                reserved,
                reserved_gpus_by_model,
                last_check_in_block: last,
            },
        );
        if let Some(p) = self.market.providers.get_mut(&verified.provider) {
            p.nodes.insert(verified.node);
        }
        Ok(verified.node)
    }

    /// Revokes a node's delegation. Only its provider may; permanent.
    pub fn revoke_node(
        &mut self,
        caller: Principal,
        now: u64,
        node: Principal,
    ) -> LedgerResult<()> {
        let info = self
            .market
            .nodes
            .get(&node)
            .ok_or_else(|| LedgerError::not_found("node", node))?;
        if info.provider != caller {
            return Err(LedgerError::unauthorized(
                caller,
                "revoke a node of another provider",
            ));
        }
        self.advance_clock(now);
        if let Some(n) = self.market.nodes.get_mut(&node) {
            n.revoked = true;
        }
        Ok(())
    }

    /// A node's record.
    pub fn node_info(&self, node: &Principal) -> Option<NodeInfo> {
        self.market.nodes.get(node).cloned()
    }

    /// The provider a node acts for, if its delegation is valid now and grants
    /// `permission`.
    pub(crate) fn node_acting_for(
        &self,
        node: Principal,
        permission: Permission,
        now: u64,
    ) -> LedgerResult<Principal> {
        let info = self
            .market
            .nodes
            .get(&node)
            .ok_or_else(|| LedgerError::not_found("node", node))?;
        if info.revoked {
            return Err(LedgerError::Delegation(format!("node {node} is revoked")));
        }
        if info.delegation.expires_at_ns <= now {
            return Err(LedgerError::Delegation(format!(
                "delegation of node {node} expired"
            )));
        }
        if !info.delegation.allows(permission) {
            return Err(LedgerError::Delegation(format!(
                "node {node} lacks the {permission:?} permission"
            )));
        }
        Ok(info.provider)
    }

    // ------------------------------------------------------------ offerings

    /// Publishes an offering served by one of the caller's nodes.
    pub fn add_offering(
        &mut self,
        caller: Principal,
        now: u64,
        spec: OfferingSpec,
    ) -> LedgerResult<u64> {
        let provider = self
            .market
            .providers
            .get(&caller)
            .ok_or_else(|| LedgerError::not_found("provider", caller))?;
        if provider.offerings.len() >= MAX_OFFERINGS_PER_PROVIDER {
            return Err(LedgerError::invalid(
                "offering",
                format!("at most {MAX_OFFERINGS_PER_PROVIDER} offerings per provider"),
            ));
        }
        let node = self
            .market
            .nodes
            .get(&spec.node)
            .ok_or_else(|| LedgerError::not_found("node", spec.node))?;
        if node.provider != caller {
            return Err(LedgerError::unauthorized(
                caller,
                "publish an offering on another provider's node",
            ));
        }
        if node.revoked {
            return Err(LedgerError::invalid("node", "the node is revoked"));
        }
        validate_offering(&spec, &node.capabilities)?;
        let now = self.advance_clock(now);
        let id = self.market.next_offering_id;
        self.market.next_offering_id += 1;
        let offering = Offering {
            id,
            provider: caller,
            spec,
            created_at_ns: now,
        };
        self.index.insert(&offering);
        self.market.offerings.insert(id, offering);
        if let Some(p) = self.market.providers.get_mut(&caller) {
            p.offerings.insert(id);
        }
        Ok(id)
    }

    /// Withdraws an offering. Active contracts on it are unaffected; contracts
    /// not yet active can no longer become active (the ledger cannot check
    /// their confidentiality any more, see `report_active`) and are refunded
    /// at their provisioning deadline.
    pub fn remove_offering(&mut self, caller: Principal, now: u64, id: u64) -> LedgerResult<()> {
        let o = self
            .market
            .offerings
            .get(&id)
            .ok_or_else(|| LedgerError::not_found("offering", id))?;
        if o.provider != caller {
            return Err(LedgerError::unauthorized(
                caller,
                "remove another provider's offering",
            ));
        }
        self.advance_clock(now);
        if let Some(o) = self.market.offerings.remove(&id) {
            self.index.remove(&o);
        }
        if let Some(p) = self.market.providers.get_mut(&caller) {
            p.offerings.remove(&id);
        }
        Ok(())
    }

    /// An offering by id.
    pub fn offering(&self, id: u64) -> Option<Offering> {
        self.market.offerings.get(&id).cloned()
    }

    /// Ranked offers matching a query: price ascending, then provider
    /// reputation descending, then offering id ascending. Offers whose node has
    /// no free capacity for them are left out.
    pub fn search(&self, q: &SearchQuery) -> LedgerResult<SearchResult> {
        let limit = q.limit.unwrap_or(DEFAULT_SEARCH_LIMIT);
        if limit == 0 || limit > MAX_SEARCH_LIMIT {
            return Err(LedgerError::invalid(
                "limit",
                format!("must be between 1 and {MAX_SEARCH_LIMIT}, found {limit}"),
            ));
        }
        let offset = usize::try_from(q.offset.unwrap_or(0)).unwrap_or(usize::MAX);
        let wanted = offset.saturating_add(limit as usize);
        let idx = &self.index;
        // A named GPU model or region nobody offers matches nothing.
        let gpu_model = match &q.gpu_model {
            Some(m) => match idx.lookup(m) {
                Some(s) => Some(s),
                None => {
                    return Ok(SearchResult {
                        offers: vec![],
                        next_offset: None,
                    })
                }
            },
            None => None,
        };
        let region = match &q.region {
            Some(r) => match idx.lookup(r) {
                Some(s) => Some(s),
                None => {
                    return Ok(SearchResult {
                        offers: vec![],
                        next_offset: None,
                    })
                }
            },
            None => None,
        };
        let min_gpus = q
            .min_gpus
            .unwrap_or(if gpu_model.is_some() { 1 } else { 0 });
        let max_price = q.max_price_e9s_per_hour.unwrap_or(u64::MAX);
        let mut matched: Vec<(u64, u64, u64)> = Vec::new(); // (price, reputation, id)
        let mut current_price = None;
        for (&(price, id), e) in idx.by_price.range(..=(max_price, u64::MAX)) {
            // Complete the price group in which the page filled up, so ties
            // are ranked by reputation across the whole group.
            if matched.len() >= wanted && current_price != Some(price) {
                break;
            }
            if q.min_vcpus.is_some_and(|v| e.vcpus < v)
                || q.min_ram_gib.is_some_and(|v| e.ram_gib < v)
                || q.min_storage_gib.is_some_and(|v| e.storage_gib < v)
                || q.min_bandwidth_mbps.is_some_and(|v| e.bandwidth_mbps < v)
                || e.gpus < min_gpus
                || gpu_model.is_some_and(|m| e.gpu_model != m)
                || q.confidential.is_some_and(|c| e.confidential != c)
                || region.is_some_and(|r| e.region != r && e.country != r)
                || q.hours.is_some_and(|h| h < e.min_hours || h > e.max_hours)
            {
                continue;
            }
            let rep = self.reputation_of(&e.provider);
            if q.min_provider_reputation.is_some_and(|m| rep < m) {
                continue;
            }
            let Some(node) = self.market.nodes.get(&e.node) else {
                continue;
            };
            let want = Resources {
                vcpus: e.vcpus,
                ram_gib: e.ram_gib,
                storage_gib: e.storage_gib,
                gpus: e.gpus,
            };
            let Some(o) = self.market.offerings.get(&id) else {
                continue;
            };
            if !node_has_room(node, &want, o.spec.gpu.as_ref().map(|g| g.model.as_str())) {
                continue;
            }
            current_price = Some(price);
            matched.push((price, rep, id));
        }
        matched.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        let more = matched.len() > wanted;
        let offers = matched
            .into_iter()
            .skip(offset)
            .take(limit as usize)
            .filter_map(|(_, rep, id)| {
                self.market
                    .offerings
                    .get(&id)
                    .map(|o| OfferMatch::new(o, rep))
            })
            .collect::<Vec<_>>();
        let next_offset =
            (more || offers.len() == limit as usize).then(|| (offset + offers.len()) as u64);
        Ok(SearchResult {
            offers,
            next_offset,
        })
    }
}

/// Checks an offering against itself and the node that would serve it.
pub fn validate_offering(spec: &OfferingSpec, node: &NodeCapabilities) -> LedgerResult<()> {
    check_text("name", &spec.name, true)?;
    check_text("region", &spec.region, true)?;
    check_country(&spec.country)?;
    if spec.vcpus == 0 {
        return Err(LedgerError::invalid("vcpus", "must be at least 1"));
    }
    if spec.ram_gib == 0 {
        return Err(LedgerError::invalid("ram_gib", "must be at least 1"));
    }
    if spec.price_e9s_per_hour == 0 {
        return Err(LedgerError::invalid(
            "price_e9s_per_hour",
            "must be positive",
        ));
    }
    if spec.min_hours == 0 {
        return Err(LedgerError::invalid("min_hours", "must be at least 1"));
    }
    if spec.max_hours < spec.min_hours {
        return Err(LedgerError::invalid(
            "max_hours",
            format!("{} is below min_hours {}", spec.max_hours, spec.min_hours),
        ));
    }
    if spec
        .price_e9s_per_hour
        .checked_mul(spec.max_hours as u64)
        .is_none()
    {
        return Err(LedgerError::invalid(
            "price_e9s_per_hour",
            "price times max_hours overflows",
        ));
    }
    if spec.vcpus > node.vcpus {
        return Err(LedgerError::invalid(
            "vcpus",
            format!("{} exceeds the node's {}", spec.vcpus, node.vcpus),
        ));
    }
    if spec.ram_gib > node.ram_gib {
        return Err(LedgerError::invalid(
            "ram_gib",
            format!("{} exceeds the node's {}", spec.ram_gib, node.ram_gib),
        ));
    }
    if spec.storage_gib > node.storage_gib {
        return Err(LedgerError::invalid(
            "storage_gib",
            format!(
                "{} exceeds the node's {}",
                spec.storage_gib, node.storage_gib
            ),
        ));
    }
    if spec.bandwidth_mbps > node.bandwidth_mbps {
        return Err(LedgerError::invalid(
            "bandwidth_mbps",
            format!(
                "{} exceeds the node's {}",
                spec.bandwidth_mbps, node.bandwidth_mbps
            ),
        ));
    }
    if spec.confidential != Confidential::None && spec.confidential != node.confidential {
        return Err(LedgerError::invalid(
            "confidential",
            format!(
                "offering needs {}, the node has {}",
                spec.confidential.as_str(),
                node.confidential.as_str()
            ),
        ));
    }
    if let Some(g) = &spec.gpu {
        check_text("gpu.model", &g.model, true)?;
        if g.count == 0 {
            return Err(LedgerError::invalid(
                "gpu.count",
                "must be at least 1 when a GPU is offered",
            ));
        }
        let have = node.gpus_of(&g.model);
        if g.count > have {
            return Err(LedgerError::invalid(
                "gpu.count",
                format!("{} {} GPUs offered, the node has {have}", g.count, g.model),
            ));
        }
    }
    Ok(())
}
