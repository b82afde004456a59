//! Contracts, escrow and reputation.
//!
//! ```text
//! rent ─► Requested ─accept─► Accepted ─start_provisioning─► Provisioning ─report_active─► Active ─(term ends)─► Expired
//!            │ reject             │                              │                             │
//!            ▼                    ▼ (deadline passes before Active: DeadlineMissed, full refund, provider penalised)
//!         Rejected          cancel (developer, any non-final state): Cancelled, unreleased part refunded
//! ```
//! Escrow is released to the provider pro rata from the moment the contract
//! is active; each release pays the escrow fee to the treasury and raises both
//! parties' reputation by a share of the amount released. While a contract is
//! not final its developer may register custom domains for the node's ingress
//! (`set_contract_ingress`, rules in [`crate::ingress`]); the move to a final
//! state frees them.

use candid::Principal;
use dc_identity::Permission;
use serde_bytes::ByteBuf;

use crate::blocks::Tx;
use crate::error::{LedgerError, LedgerResult};
use crate::ledger::Ledger;
use crate::market::{node_has_room, offering_resources};
use crate::types::*;

/// Longest public reason of a rating.
pub const MAX_REASON_LEN: usize = 500;
/// Longest endpoint a node may report.
pub const MAX_ENDPOINT_LEN: usize = 253;
/// Largest page of `list_contracts`.
pub const MAX_LIST_LIMIT: u32 = 1_000;

/// What a platform calls its launch measurement, for error messages.
fn measurement_name(platform: Confidential) -> &'static str {
    match platform {
        Confidential::SevSnp => "the SEV-SNP MEASUREMENT",
        Confidential::Tdx => "the TDX MRTD, RTMR1 and RTMR2, concatenated",
        Confidential::None => "none",
    }
}

fn mul_bps(amount: u64, bps: u64) -> u64 {
    ((amount as u128 * bps as u128) / 10_000) as u64
}

impl Ledger {
    fn contract(&self, id: u64) -> LedgerResult<&Contract> {
        self.market
            .contracts
            .get(&id)
            .ok_or_else(|| LedgerError::not_found("contract", id))
    }

    fn illegal(c: &Contract, action: &str) -> LedgerError {
        LedgerError::IllegalTransition {
            contract_id: c.id,
            state: c.state.as_str().into(),
            action: action.into(),
        }
    }

    /// Whether `caller` is the contract's provider, or its node acting with
    /// `permission` under a valid delegation.
    fn check_provider_side_at(
        &self,
        caller: Principal,
        c: &Contract,
        permission: Permission,
        action: &str,
        now: u64,
    ) -> LedgerResult<()> {
        if caller == c.provider {
            return Ok(());
        }
        if caller == c.node {
            return self.node_acting_for(caller, permission, now).map(|_| ());
        }
        Err(LedgerError::unauthorized(caller, action))
    }

    fn set_state(&mut self, id: u64, state: ContractState) {
        let now = self.time_ns;
        if let Some(c) = self.market.contracts.get_mut(&id) {
            c.state = state;
            c.history.push((now, state));
        }
    }

    fn move_on_timeline(&mut self, id: u64, from: Option<u64>, to: Option<u64>) {
        if let Some(t) = from {
            self.market.timeline.remove(&(t, id));
        }
        if let Some(t) = to {
            self.market.timeline.insert((t, id));
        }
    }

    /// Pays `price × hours` into escrow and opens a contract on an offering.
    pub fn rent(&mut self, caller: Principal, now: u64, args: RentArgs) -> LedgerResult<Contract> {
        if caller == Principal::anonymous() {
            return Err(LedgerError::unauthorized(caller, "rent"));
        }
        let o = self
            .market
            .offerings
            .get(&args.offering_id)
            .ok_or_else(|| LedgerError::not_found("offering", args.offering_id))?;
        if caller == o.provider {
            return Err(LedgerError::invalid(
                "offering_id",
                "a provider cannot rent its own offering",
            ));
        }
        if args.hours < o.spec.min_hours || args.hours > o.spec.max_hours {
            return Err(LedgerError::invalid(
                "hours",
                format!(
                    "offering {} sells {}..={} hours, asked for {}",
                    o.id, o.spec.min_hours, o.spec.max_hours, args.hours
                ),
            ));
        }
        let node = self
            .market
            .nodes
            .get(&o.spec.node)
            .ok_or_else(|| LedgerError::not_found("node", o.spec.node))?;
        let want = offering_resources(&o.spec);
        let gpu_model = o.spec.gpu.as_ref().map(|g| g.model.clone());
        if !node_has_room(node, &want, gpu_model.as_deref()) {
            return Err(LedgerError::CapacityExhausted {
                node: node.principal,
                offering_id: o.id,
            });
        }
        let price = o.spec.price_e9s_per_hour;
        let amount = price
            .checked_mul(args.hours as u64)
            .ok_or_else(|| LedgerError::Overflow("price × hours".into()))?;
        let developer = Account::of(caller);
        let balance = self.balance_of(&developer);
        if balance < amount {
            return Err(LedgerError::InsufficientFunds {
                needed_e9s: amount,
                balance_e9s: balance,
            });
        }
        let (provider, node_p, offering_id) = (o.provider, o.spec.node, o.id);
        let now = self.advance_clock(now);
        let id = self.market.next_contract_id;
        self.market.next_contract_id += 1;
        self.debit(developer, amount);
        self.escrow_total += amount;
        self.push_block(Tx::Escrow {
            from: developer,
            amount,
            contract_id: id,
        });
        if let Some(n) = self.market.nodes.get_mut(&node_p) {
            n.reserved.vcpus += want.vcpus;
            n.reserved.ram_gib += want.ram_gib;
            n.reserved.storage_gib += want.storage_gib;
            n.reserved.gpus = n.reserved.gpus.saturating_add(want.gpus);
            if let Some(model) = &gpu_model {
                n.adjust_reserved_gpus(model, want.gpus as i64);
            }
        }
        let deadline = now.saturating_add(self.params.provisioning_timeout_ns);
        let contract = Contract {
            id,
            offering_id,
            developer: caller,
            provider,
            node: node_p,
            resources: want,
            gpu_model,
            price_e9s_per_hour: price,
            hours: args.hours,
            state: ContractState::Requested,
            created_at_ns: now,
            provisioning_deadline_ns: deadline,
            active_since_ns: None,
            ends_at_ns: None,
            paid_e9s: amount,
            released_e9s: 0,
            refunded_e9s: 0,
            fees_e9s: 0,
            endpoint: None,
            evidence_hash: None,
            launch_measurement: None,
            ingress: IngressSettings::default(),
            history: vec![(now, ContractState::Requested)],
        };
        for party in [caller, provider, node_p] {
            self.market
                .contracts_by_party
                .entry(party)
                .or_default()
                .insert(id);
        }
        self.market.timeline.insert((deadline, id));
        self.market.contracts.insert(id, contract.clone());
        Ok(contract)
    }

    /// Refuses provider-side transitions once the provisioning deadline passed
    /// (the next tick refunds the contract).
    fn check_before_deadline(c: &Contract, now: u64, action: &str) -> LedgerResult<()> {
        if c.active_since_ns.is_none() && c.provisioning_deadline_ns <= now {
            return Err(LedgerError::IllegalTransition {
                contract_id: c.id,
                state: "past its provisioning deadline".into(),
                action: action.into(),
            });
        }
        Ok(())
    }

    /// Common checks of the developer's steps on a contract: its developer
    /// asks, it is not final and not at the end of its term.
    fn developer_step(
        &self,
        caller: Principal,
        now: u64,
        id: u64,
        unauthorized: &str,
        action: &str,
    ) -> LedgerResult<&Contract> {
        let c = self.contract(id)?;
        if c.developer != caller {
            return Err(LedgerError::unauthorized(caller, unauthorized));
        }
        if c.state.is_final() {
            return Err(Self::illegal(c, action));
        }
        if c.ends_at_ns.is_some_and(|e| e <= now) {
            return Err(LedgerError::IllegalTransition {
                contract_id: id,
                state: "at the end of its term".into(),
                action: action.into(),
            });
        }
        Ok(c)
    }

    /// Common checks of the provider-side steps: who, from which state, in time.
    fn provider_step(
        &self,
        caller: Principal,
        now: u64,
        id: u64,
        from: ContractState,
        permission: Permission,
        action: &str,
    ) -> LedgerResult<u64> {
        let now = self.time_ns.max(now);
        let c = self.contract(id)?;
        self.check_provider_side_at(caller, c, permission, action, now)?;
        if c.state != from {
            return Err(Self::illegal(c, action));
        }
        Self::check_before_deadline(c, now, action)?;
        Ok(now)
    }

    /// The node (or provider) takes a requested contract.
    pub fn accept_contract(
        &mut self,
        caller: Principal,
        now: u64,
        id: u64,
    ) -> LedgerResult<Contract> {
        let now = self.provider_step(
            caller,
            now,
            id,
            ContractState::Requested,
            Permission::AcceptContracts,
            "accept",
        )?;
        self.time_ns = now;
        self.set_state(id, ContractState::Accepted);
        self.contract(id).cloned()
    }

    /// The node (or provider) starts building the VM.
    pub fn start_provisioning(
        &mut self,
        caller: Principal,
        now: u64,
        id: u64,
    ) -> LedgerResult<Contract> {
        let now = self.provider_step(
            caller,
            now,
            id,
            ContractState::Accepted,
            Permission::AcceptContracts,
            "start provisioning",
        )?;
        self.time_ns = now;
        self.set_state(id, ContractState::Provisioning);
        self.contract(id).cloned()
    }

    /// Checks the launch measurement a node reports against what the contract
    /// sold: a confidential offering needs one of its platform's length
    /// ([`Confidential::launch_measurement_len`]), any other offering none.
    ///
    /// Fails closed when the offering was withdrawn after the rent: the
    /// contract does not record its platform, so the ledger cannot tell whether
    /// a measurement is owed, and recording an unmeasured VM as active on what
    /// may have been a confidential sale is worse than refunding it at the
    /// provisioning deadline. The node agent refuses such contracts the same way.
    fn check_launch_measurement(
        &self,
        c: &Contract,
        measurement: Option<&ByteBuf>,
    ) -> LedgerResult<()> {
        let offering = self.market.offerings.get(&c.offering_id).ok_or_else(|| {
            LedgerError::invalid(
                "contract_id",
                format!(
                    "offering {} of contract {} was withdrawn, so whether the VM must be \
                     confidential (and publish a launch measurement) cannot be checked; \
                     the contract cannot become active",
                    c.offering_id, c.id
                ),
            )
        })?;
        let platform = offering.spec.confidential;
        match (platform.launch_measurement_len(), measurement) {
            (None, None) => Ok(()),
            (None, Some(_)) => Err(LedgerError::invalid(
                "launch_measurement",
                format!(
                    "offering {} is not confidential; a launch measurement is only published \
                     for sev-snp and tdx VMs",
                    c.offering_id
                ),
            )),
            (Some(len), None) => Err(LedgerError::invalid(
                "launch_measurement",
                format!(
                    "offering {} is {}: the node must publish the VM's launch measurement \
                     ({len} bytes, {})",
                    c.offering_id,
                    platform.as_str(),
                    measurement_name(platform)
                ),
            )),
            (Some(len), Some(m)) if m.len() != len => Err(LedgerError::invalid(
                "launch_measurement",
                format!(
                    "expected {len} bytes ({}), found {}",
                    measurement_name(platform),
                    m.len()
                ),
            )),
            (Some(_), Some(_)) => Ok(()),
        }
    }

    /// The node reports the VM running: its endpoint, evidence hash and, for a
    /// confidential VM, its launch measurement. Billing starts.
    pub fn report_active(
        &mut self,
        caller: Principal,
        now: u64,
        args: ReportActiveArgs,
    ) -> LedgerResult<Contract> {
        let id = args.contract_id;
        if args.endpoint.is_empty()
            || args.endpoint.len() > MAX_ENDPOINT_LEN
            || args
                .endpoint
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(LedgerError::invalid(
                "endpoint",
                format!("expected 1..={MAX_ENDPOINT_LEN} printable characters without spaces"),
            ));
        }
        if args.evidence_hash.len() != 32 {
            return Err(LedgerError::invalid(
                "evidence_hash",
                format!(
                    "expected 32 bytes (SHA-256), found {}",
                    args.evidence_hash.len()
                ),
            ));
        }
        let now = self.provider_step(
            caller,
            now,
            id,
            ContractState::Provisioning,
            Permission::ReportStatus,
            "report active",
        )?;
        let c = self.contract(id)?;
        self.check_launch_measurement(c, args.launch_measurement.as_ref())?;
        let term = (c.hours as u64).saturating_mul(HOUR_NS);
        let ends = now.saturating_add(term);
        let old_deadline = c.provisioning_deadline_ns;
        self.time_ns = now;
        self.move_on_timeline(id, Some(old_deadline), Some(ends));
        if let Some(c) = self.market.contracts.get_mut(&id) {
            c.active_since_ns = Some(now);
            c.ends_at_ns = Some(ends);
            c.endpoint = Some(args.endpoint);
            c.evidence_hash = Some(args.evidence_hash);
            c.launch_measurement = args.launch_measurement;
        }
        self.market.active.insert(id);
        self.set_state(id, ContractState::Active);
        self.contract(id).cloned()
    }

    /// The provider refuses a contract it has not accepted: full refund.
    pub fn reject_contract(
        &mut self,
        caller: Principal,
        now: u64,
        id: u64,
    ) -> LedgerResult<Contract> {
        let now = self.provider_step(
            caller,
            now,
            id,
            ContractState::Requested,
            Permission::AcceptContracts,
            "reject",
        )?;
        self.time_ns = now;
        self.close_contract(id, ContractState::Rejected);
        self.contract(id).cloned()
    }

    /// Pays for more hours on an unfinished contract.
    pub fn extend_contract(
        &mut self,
        caller: Principal,
        now: u64,
        args: ExtendArgs,
    ) -> LedgerResult<Contract> {
        let id = args.contract_id;
        let now = self.time_ns.max(now);
        let c = self.contract(id)?;
        if c.developer != caller {
            return Err(LedgerError::unauthorized(
                caller,
                "extend a contract it did not rent",
            ));
        }
        if args.hours == 0 {
            return Err(LedgerError::invalid("hours", "must be at least 1"));
        }
        if c.state.is_final() || c.ends_at_ns.is_some_and(|e| e <= now) {
            return Err(Self::illegal(c, "extend"));
        }
        Self::check_before_deadline(c, now, "extend")?;
        let total_hours = c
            .hours
            .checked_add(args.hours)
            .ok_or_else(|| LedgerError::Overflow("hours".into()))?;
        let max_hours = self
            .market
            .offerings
            .get(&c.offering_id)
            .map_or(u32::MAX, |o| o.spec.max_hours);
        if total_hours > max_hours {
            return Err(LedgerError::invalid("hours", format!("the contract would run {total_hours} hours; the offering allows at most {max_hours}")));
        }
        let amount = c
            .price_e9s_per_hour
            .checked_mul(args.hours as u64)
            .ok_or_else(|| LedgerError::Overflow("price × hours".into()))?;
        let developer = Account::of(caller);
        let balance = self.balance_of(&developer);
        if balance < amount {
            return Err(LedgerError::InsufficientFunds {
                needed_e9s: amount,
                balance_e9s: balance,
            });
        }
        let old_end = c.ends_at_ns;
        let new_end = match old_end {
            Some(e) => Some(
                (args.hours as u64)
                    .checked_mul(HOUR_NS)
                    .and_then(|d| e.checked_add(d))
                    .ok_or_else(|| LedgerError::Overflow("contract end time".into()))?,
            ),
            None => None,
        };
        self.time_ns = now;
        self.debit(developer, amount);
        self.escrow_total += amount;
        self.push_block(Tx::Escrow {
            from: developer,
            amount,
            contract_id: id,
        });
        if old_end.is_some() {
            self.move_on_timeline(id, old_end, new_end);
        }
        if let Some(c) = self.market.contracts.get_mut(&id) {
            c.hours = total_hours;
            c.paid_e9s += amount;
            c.ends_at_ns = new_end;
        }
        self.contract(id).cloned()
    }

    /// The developer ends a contract early: what time has used is released,
    /// the rest refunded.
    pub fn cancel_contract(
        &mut self,
        caller: Principal,
        now: u64,
        id: u64,
    ) -> LedgerResult<Contract> {
        let now = self.time_ns.max(now);
        let c = self.developer_step(
            caller,
            now,
            id,
            "cancel a contract it did not rent",
            "cancel",
        )?;
        let deadline_missed = c.active_since_ns.is_none() && c.provisioning_deadline_ns <= now;
        self.time_ns = now;
        if deadline_missed {
            // The provider already missed the deadline: settle it as such (full
            // refund and the provider's penalty) rather than as a cancellation.
            self.process_due(id);
        } else {
            self.release_due(id);
            self.close_contract(id, ContractState::Cancelled);
        }
        self.contract(id).cloned()
    }

    /// The developer sets the custom domains of a contract's VM and whether
    /// the node's ingress sends it a PROXY protocol v2 header, replacing what
    /// the contract had (see [`crate::ingress`]). Allowed while the contract
    /// is requested, accepted, provisioning or active, and neither past its
    /// provisioning deadline nor at the end of its term. The names must be
    /// valid ([`crate::ingress::validate_domains`]) and held by no other
    /// non-final contract: the first contract to register a name keeps it
    /// until it becomes final.
    pub fn set_contract_ingress(
        &mut self,
        caller: Principal,
        now: u64,
        args: SetIngressArgs,
    ) -> LedgerResult<Contract> {
        let id = args.contract_id;
        let now = self.time_ns.max(now);
        let c = self.developer_step(
            caller,
            now,
            id,
            "set the ingress of a contract it did not rent",
            "set its ingress",
        )?;
        Self::check_before_deadline(c, now, "set its ingress")?;
        crate::ingress::validate_domains(&args.domains)?;
        for name in &args.domains {
            match self.domain_holders.holder(name) {
                Some(holder) if holder != id => {
                    return Err(LedgerError::AlreadyRegistered(format!(
                        "domain {name} (held by contract {holder} until that contract ends)"
                    )))
                }
                _ => {}
            }
        }
        let settings = IngressSettings {
            domains: args.domains,
            proxy_protocol: args.proxy_protocol,
        };
        let c = self
            .market
            .contracts
            .get_mut(&id)
            .ok_or_else(|| LedgerError::not_found("contract", id))?;
        let previous = std::mem::replace(&mut c.ingress, settings);
        let updated = c.clone();
        self.time_ns = now;
        self.domain_holders.release(id, &previous.domains);
        self.domain_holders.claim(id, &updated.ingress.domains);
        Ok(updated)
    }

    /// A contract by id.
    pub fn contract_info(&self, id: u64) -> Option<Contract> {
        self.market.contracts.get(&id).cloned()
    }

    /// Contracts where `party` is developer, provider or node, newest first.
    pub fn list_contracts(
        &self,
        caller: Principal,
        args: &ListContractsArgs,
    ) -> LedgerResult<Vec<Contract>> {
        let limit = args.limit.unwrap_or(100);
        if limit == 0 || limit > MAX_LIST_LIMIT {
            return Err(LedgerError::invalid(
                "limit",
                format!("must be between 1 and {MAX_LIST_LIMIT}"),
            ));
        }
        let party = args.party.unwrap_or(caller);
        let offset = usize::try_from(args.offset.unwrap_or(0)).unwrap_or(usize::MAX);
        Ok(self
            .market
            .contracts_by_party
            .get(&party)
            .into_iter()
            .flat_map(|ids| ids.iter().rev())
            .skip(offset)
            .take(limit as usize)
            .filter_map(|id| self.market.contracts.get(id).cloned())
            .collect())
    }

    // ----------------------------------------------------------- escrow

    /// What time has earned the provider so far (fees included).
    fn earned(c: &Contract, now: u64) -> u64 {
        let Some(start) = c.active_since_ns else {
            return 0;
        };
        let elapsed = now.saturating_sub(start) as u128;
        let due = (c.price_e9s_per_hour as u128 * elapsed) / HOUR_NS as u128;
        due.min(c.paid_e9s as u128) as u64
    }

    /// Releases what is due on an active contract: fee to the treasury, the
    /// rest to the provider, reputation to both parties.
    pub(crate) fn release_due(&mut self, id: u64) {
        let now = self.time_ns;
        let Some(c) = self.market.contracts.get(&id) else {
            return;
        };
        if c.state != ContractState::Active {
            return;
        }
        let due = Self::earned(c, now)
            .saturating_sub(c.released_e9s)
            .min(c.escrow_e9s());
        if due == 0 {
            return;
        }
        // The fee is taken on the cumulative amount released, so many small
        // releases pay the same total fee as one large one.
        let fee = mul_bps(c.released_e9s + due, self.params.escrow_release_fee_bps)
            .saturating_sub(c.fees_e9s)
            .min(due);
        let to_provider = due - fee;
        let (provider, developer) = (c.provider, c.developer);
        if let Some(c) = self.market.contracts.get_mut(&id) {
            c.released_e9s += due;
            c.fees_e9s += fee;
        }
        self.escrow_total -= due;
        // Credits cannot overflow: the amounts come out of escrow, part of supply.
        let _ = self.credit(Account::of(provider), to_provider);
        let _ = self.credit(Account::of(self.params.treasury), fee);
        self.push_block(Tx::Release {
            contract_id: id,
            to: Account::of(provider),
            amount: due,
            fee,
        });
        let gain = mul_bps(due, self.params.release_reputation_bps);
        self.add_reputation(provider, gain);
        self.add_reputation(developer, gain);
    }

    /// Moves a contract to a final state, refunding what escrow still holds
    /// and freeing the node's capacity.
    fn close_contract(&mut self, id: u64, state: ContractState) {
        let Some(c) = self.market.contracts.get(&id) else {
            return;
        };
        let refund = c.escrow_e9s();
        let (developer, node, res, was_active) = (
            c.developer,
            c.node,
            c.resources.clone(),
            c.active_since_ns.is_some(),
        );
        let gpu_model = c.gpu_model.clone();
        let timeline_key = c.ends_at_ns.unwrap_or(c.provisioning_deadline_ns);
        if refund > 0 {
            self.escrow_total -= refund;
            let _ = self.credit(Account::of(developer), refund);
            self.push_block(Tx::Refund {
                contract_id: id,
                to: Account::of(developer),
                amount: refund,
            });
            if let Some(c) = self.market.contracts.get_mut(&id) {
                c.refunded_e9s += refund;
            }
        }
        self.market.timeline.remove(&(timeline_key, id));
        self.market.active.remove(&id);
        // A final contract holds no names: they are free for others.
        if let Some(c) = self.market.contracts.get(&id) {
            self.domain_holders.release(id, &c.ingress.domains);
        }
        if let Some(n) = self.market.nodes.get_mut(&node) {
            n.reserved.vcpus -= res.vcpus;
            n.reserved.ram_gib -= res.ram_gib;
            n.reserved.storage_gib -= res.storage_gib;
            n.reserved.gpus -= res.gpus;
            if let Some(model) = &gpu_model {
                n.adjust_reserved_gpus(model, -(res.gpus as i64));
            }
        }
        if was_active {
            let provider = self.market.contracts.get(&id).map(|c| c.provider);
            if let Some(p) = provider.and_then(|p| self.market.providers.get_mut(&p)) {
                p.contracts_served += 1;
            }
        }
        self.set_state(id, state);
    }

    /// Applies what time has decided for one contract (deadline or end of term).
    pub(crate) fn process_due(&mut self, id: u64) {
        let now = self.time_ns;
        let Some(c) = self.market.contracts.get(&id) else {
            return;
        };
        match c.state {
            ContractState::Requested | ContractState::Accepted | ContractState::Provisioning
                if c.provisioning_deadline_ns <= now =>
            {
                let penalty = mul_bps(c.paid_e9s, self.params.missed_deadline_penalty_bps);
                let provider = c.provider;
                self.close_contract(id, ContractState::DeadlineMissed);
                self.sub_reputation(provider, penalty);
            }
            ContractState::Active if c.ends_at_ns.is_some_and(|e| e <= now) => {
                self.release_due(id);
                self.close_contract(id, ContractState::Expired);
            }
            _ => {}
        }
    }

    /// Processes every contract whose deadline or term has passed.
    pub(crate) fn process_timeline(&mut self) -> bool {
        let now = self.time_ns;
        let due: Vec<u64> = self
            .market
            .timeline
            .range(..=(now, u64::MAX))
            .map(|&(_, id)| id)
            .collect();
        for id in &due {
            self.process_due(*id);
        }
        !due.is_empty()
    }

    /// Releases what is due on every active contract.
    pub(crate) fn release_all_active(&mut self) {
        let ids: Vec<u64> = self.market.active.iter().copied().collect();
        for id in ids {
            self.release_due(id);
        }
    }

    // ------------------------------------------------------- reputation

    /// Spends `spend` of the caller's reputation to lower a contract
    /// counterparty's by `spend × multiplier`, with a public reason. The two
    /// must share a contract that was active or whose provider missed its
    /// provisioning deadline, the developer only then
    /// ([`Contract::rateable_by`]).
    pub fn rate(
        &mut self,
        caller: Principal,
        now: u64,
        args: RateArgs,
    ) -> LedgerResult<RateResult> {
        if args.spend == 0 {
            return Err(LedgerError::invalid("spend", "must be positive"));
        }
        let reason = args.reason.trim();
        if reason.is_empty()
            || reason.len() > MAX_REASON_LEN
            || reason.chars().any(|c| c.is_control() && c != '\n')
        {
            return Err(LedgerError::invalid(
                "reason",
                format!("expected 1..={MAX_REASON_LEN} bytes of text"),
            ));
        }
        if caller == args.target {
            return Err(LedgerError::invalid("target", "cannot rate yourself"));
        }
        let shared = self
            .market
            .contracts_by_party
            .get(&caller)
            .is_some_and(|ids| {
                ids.iter().any(|id| {
                    self.market.contracts.get(id).is_some_and(|c| {
                        c.rateable_by(caller)
                            && ((c.developer == caller && c.provider == args.target)
                                || (c.provider == caller && c.developer == args.target))
                    })
                })
            });
        if !shared {
            return Err(LedgerError::NoSharedContract {
                sender: caller,
                target: args.target,
            });
        }
        let have = self.reputation_of(&caller);
        if have < args.spend {
            return Err(LedgerError::InsufficientReputation {
                have,
                need: args.spend,
            });
        }
        let loss = args
            .spend
            .saturating_mul(self.params.rating_penalty_multiplier);
        let now = self.advance_clock(now);
        self.sub_reputation(caller, args.spend);
        let target_loss = self.sub_reputation(args.target, loss);
        self.ratings.push(RatingRecord {
            sender: caller,
            target: args.target,
            spent: args.spend,
            target_loss,
            reason: reason.to_string(),
            at_ns: now,
        });
        Ok(RateResult {
            sender_reputation: self.reputation_of(&caller),
            target_reputation: self.reputation_of(&args.target),
        })
    }

    /// Public ratings that concern `p` (as sender or target), newest first.
    pub fn ratings_of(&self, p: &Principal, limit: usize) -> Vec<RatingRecord> {
        self.ratings
            .iter()
            .rev()
            .filter(|r| r.sender == *p || r.target == *p)
            .take(limit)
            .cloned()
            .collect()
    }
}
