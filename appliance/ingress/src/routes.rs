//! The route table: host name → the tenant VM that serves it.
//!
//! One [`Route`] per active contract, with every name it answers to: the
//! default name under the node's domain and the custom domains its owner
//! registered on the ledger. The table is an immutable snapshot behind an
//! [`ArcSwap`]: a lookup is a lock-free load and a hash probe, and an update
//! builds a new snapshot and swaps it in, so updates never block or drop
//! connections in flight.
//!
//! Names match exactly, or through a single-label wildcard: `*.example.com`
//! matches `a.example.com`, not `example.com` nor `a.b.example.com`; an exact
//! name wins over a wildcard. Wildcards exist for tenants that serve many
//! subdomains of a custom domain; a wildcard must have at least two labels
//! after the `*` so that nobody claims a whole top-level domain, and neither
//! a name nor a wildcard's parent may be a public suffix (`co.uk`,
//! `*.co.uk`, `*.github.io`: the Public Suffix List as compiled into the
//! `psl` crate), whose names belong to different owners. The ledger refuses
//! such names already; the table refuses them too rather than route a whole
//! suffix's traffic to one tenant.
//!
//! A name claimed by two contracts in one update stays with the contract
//! that held it before (so a newcomer can neither take a name in use nor,
//! by claiming it, take it offline); if neither held it, nobody gets it until
//! the conflict is gone. Conflicts and invalid names are reported in the
//! [`RouteUpdate`]; the ledger is expected to prevent them in the first place.
//! "A name" is one exact string, as on the ledger: a wildcard and an exact
//! name it covers are two names and never conflict, so a contract holding
//! `api.example.com` gets that name's connections even while another holds
//! `*.example.com`, whichever came first. The ledger's documentation of
//! custom domains says what that leaves to the names' owners.
//!
//! Each contract's counters and live-connection registry ([`RouteState`])
//! survive updates that keep the contract. When a contract leaves the table
//! (its contract ended), its live connections are closed: the tenant's
//! access ended with the contract, and other tenants' connections are not
//! touched. A contract whose upstream address changes keeps its live
//! connections (they were made to the old address and end on their own).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::name::{HostName, NameError};

/// Connection limit per route unless the agent says otherwise.
pub const DEFAULT_ROUTE_MAX_CONNECTIONS: u32 = 10_000;

/// Where one contract's VM is reached, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The ledger's contract id.
    pub contract_id: u64,
    /// Names the VM answers to: `name.example` or `*.name.example`; case and
    /// one trailing dot are ignored.
    pub names: Vec<String>,
    /// The VM's TLS endpoint (private address and port) for port 443 traffic.
    pub tls_upstream: SocketAddr,
    /// The VM's plain HTTP endpoint for port 80 traffic; `None` refuses port 80.
    pub http_upstream: Option<SocketAddr>,
    /// Send a PROXY protocol v2 header to the VM before the client's bytes.
    pub proxy_protocol: bool,
    /// Most connections open to this VM at once, both ports together.
    pub max_connections: u32,
}

/// Errors of a route update as a whole (the table is then left unchanged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The same contract twice in one update: a bug of the caller.
    #[error("contract {0} appears twice in the route update")]
    DuplicateContract(u64),
}

/// Why a name of a route was left out of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameRejection {
    /// Not a host name, a wildcard that is not `*.` and two or more labels,
    /// or a public suffix (as a name or a wildcard's parent).
    Invalid { reason: String },
    /// Another contract held the name before this update and keeps it.
    TakenBy { contract_id: u64 },
    /// Several contracts claim the name and none held it: nobody gets it.
    Contested { contract_ids: Vec<u64> },
}

/// A name left out of the table, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedName {
    /// The contract that asked for the name.
    pub contract_id: u64,
    /// The name as given.
    pub name: String,
    /// Why it was left out.
    pub reason: NameRejection,
}

/// What an update changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteUpdate {
    /// Contracts new to the table.
    pub added: Vec<u64>,
    /// Contracts gone from the table; their live connections were closed.
    pub removed: Vec<u64>,
    /// Contracts whose route changed (names, upstream, flags or limit).
    pub changed: Vec<u64>,
    /// Names left out of the table.
    pub rejected_names: Vec<RejectedName>,
}

/// Counters and live-connection registry of one contract, shared by its
/// connections; survives updates that keep the contract.
#[derive(Debug)]
pub struct RouteState {
    contract_id: u64,
    active: AtomicU32,
    pub(crate) connections_total: AtomicU64,
    pub(crate) bytes_client_to_upstream: AtomicU64,
    pub(crate) bytes_upstream_to_client: AtomicU64,
    pub(crate) refused_route_limit: AtomicU64,
    pub(crate) refused_upstream_unreachable: AtomicU64,
    closed: AtomicBool,
    close_notify: Notify,
}

impl RouteState {
    fn new(contract_id: u64) -> Self {
        RouteState {
            contract_id,
            active: AtomicU32::new(0),
            connections_total: AtomicU64::new(0),
            bytes_client_to_upstream: AtomicU64::new(0),
            bytes_upstream_to_client: AtomicU64::new(0),
            refused_route_limit: AtomicU64::new(0),
            refused_upstream_unreachable: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            close_notify: Notify::new(),
        }
    }

    /// The contract these counters belong to.
    pub fn contract_id(&self) -> u64 {
        self.contract_id
    }

    /// Connections open now.
    pub fn active_connections(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Whether the contract left the table.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Takes one of `max` connection slots.
    pub(crate) fn try_acquire(self: &Arc<Self>, max: u32) -> Result<RouteSlot, AcquireError> {
        if self.is_closed() {
            return Err(AcquireError::Closed);
        }
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| AcquireError::Full)?;
        Ok(RouteSlot {
            state: self.clone(),
        })
    }

    /// Completes when the contract leaves the table.
    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.close_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.close_notify.notify_waiters();
    }
}

/// Why a route took no new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcquireError {
    /// `max_connections` are open.
    Full,
    /// The contract left the table after the lookup.
    Closed,
}

/// One open connection of a route; gives its slot back when dropped.
#[derive(Debug)]
pub(crate) struct RouteSlot {
    pub(crate) state: Arc<RouteState>,
}

impl Drop for RouteSlot {
    fn drop(&mut self) {
        self.state.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A route as the table holds it: the agent's [`Route`] and its shared state.
#[derive(Debug)]
pub struct RouteEntry {
    /// The route as last given.
    pub route: Route,
    /// Its counters and live-connection registry.
    pub state: Arc<RouteState>,
}

#[derive(Debug, Default)]
struct Snapshot {
    exact: HashMap<Box<str>, Arc<RouteEntry>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<Box<str>, Arc<RouteEntry>>,
    by_contract: BTreeMap<u64, Arc<RouteEntry>>,
}

/// The route table; share it as `Arc<RouteTable>` between the agent, which
/// updates it, and the listeners, which read it.
#[derive(Debug, Default)]
pub struct RouteTable {
    current: ArcSwap<Snapshot>,
    /// Serialises writers so that no update is lost between load and swap.
    writer: Mutex<()>,
}

/// Per-route numbers for the remote-control API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteMetrics {
    /// The ledger's contract id.
    pub contract_id: u64,
    /// Names routed to this contract (rejected ones excluded), sorted.
    pub names: Vec<String>,
    /// Connections routed since the route appeared: the VM took them (those
    /// it did not take count in `refused_upstream_unreachable`).
    pub connections_total: u64,
    /// Connections open now.
    pub connections_active: u32,
    /// Bytes forwarded from clients to the VM (replayed hello included).
    pub bytes_client_to_upstream: u64,
    /// Bytes forwarded from the VM to clients.
    pub bytes_upstream_to_client: u64,
    /// Connections refused because the route's limit was reached.
    pub refused_route_limit: u64,
    /// Connections closed because the VM could not be reached.
    pub refused_upstream_unreachable: u64,
}

/// A route name, normalised: exact, or `*.` + parent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Pattern {
    Exact(String),
    Wildcard(String),
}

impl Pattern {
    /// Normalises a route name; the error says why it cannot be one.
    fn parse(name: &str) -> Result<Pattern, String> {
        let invalid = |e: NameError| e.to_string();
        match name.strip_prefix("*.") {
            Some(parent) => {
                let parent = HostName::parse(parent).map_err(invalid)?;
                if parent.parent().is_none() {
                    return Err("a wildcard needs two or more labels after `*.`".into());
                }
                // `*.co.uk`, or `*.kobe.jp` whose every `x.kobe.jp` is a suffix.
                let probe = format!("x.{}", parent.as_str());
                if is_public_suffix(parent.as_str()) || is_public_suffix(&probe) {
                    return Err(format!(
                        "`*.{}` covers public suffixes, whose names belong to different owners",
                        parent.as_str()
                    ));
                }
                Ok(Pattern::Wildcard(parent.as_str().to_owned()))
            }
            None => {
                let name = HostName::parse(name).map_err(invalid)?;
                if is_public_suffix(name.as_str()) {
                    return Err(format!(
                        "`{}` is a public suffix, whose names belong to different owners",
                        name.as_str()
                    ));
                }
                Ok(Pattern::Exact(name.as_str().to_owned()))
            }
        }
    }
}

/// Whether a normalised name is itself a public suffix: a rule of the
/// Public Suffix List matches it whole (`com`, `co.uk`, `github.io`).
fn is_public_suffix(name: &str) -> bool {
    psl::suffix(name.as_bytes()).is_some_and(|s| s.is_known() && s.as_bytes() == name.as_bytes())
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        RouteTable::default()
    }

    /// The route for `name`: an exact match, else a single-label wildcard.
    pub fn lookup(&self, name: &HostName) -> Option<Arc<RouteEntry>> {
        let snapshot = self.current.load();
        if let Some(entry) = snapshot.exact.get(name.as_str()) {
            return Some(entry.clone());
        }
        snapshot.wildcard.get(name.parent()?).cloned()
    }

    /// The route of a contract.
    pub fn get(&self, contract_id: u64) -> Option<Arc<RouteEntry>> {
        self.current.load().by_contract.get(&contract_id).cloned()
    }

    /// The routes now in the table, by contract id.
    pub fn routes(&self) -> Vec<Route> {
        self.current
            .load()
            .by_contract
            .values()
            .map(|e| e.route.clone())
            .collect()
    }

    /// Replaces the whole table with `routes` (the agent's view of its active
    /// contracts). Contracts that stay keep their counters and connections;
    /// contracts that leave have their live connections closed.
    pub fn replace(&self, routes: Vec<Route>) -> Result<RouteUpdate, RouteError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.install(routes)
    }

    /// Adds a route or changes the route of its contract (a VM became active,
    /// a custom domain was registered).
    pub fn upsert(&self, route: Route) -> RouteUpdate {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut routes: Vec<Route> = self
            .current
            .load()
            .by_contract
            .values()
            .filter(|e| e.route.contract_id != route.contract_id)
            .map(|e| e.route.clone())
            .collect();
        routes.push(route);
        // Contract ids are unique by construction here.
        self.install(routes).unwrap_or_default()
    }

    /// Removes a contract's route and closes its live connections (the
    /// contract ended). Returns whether it was there.
    pub fn remove(&self, contract_id: u64) -> bool {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = self.current.load_full();
        if !snapshot.by_contract.contains_key(&contract_id) {
            return false;
        }
        let routes = snapshot
            .by_contract
            .values()
            .filter(|e| e.route.contract_id != contract_id)
            .map(|e| e.route.clone())
            .collect();
        self.install(routes).is_ok()
    }

    /// Per-route numbers, by contract id.
    pub fn metrics(&self) -> Vec<RouteMetrics> {
        let snapshot = self.current.load();
        let mut names: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (name, entry) in &snapshot.exact {
            names
                .entry(entry.route.contract_id)
                .or_default()
                .push(name.to_string());
        }
        for (parent, entry) in &snapshot.wildcard {
            names
                .entry(entry.route.contract_id)
                .or_default()
                .push(format!("*.{parent}"));
        }
        snapshot
            .by_contract
            .values()
            .map(|entry| {
                let s = &entry.state;
                let mut names = names.remove(&entry.route.contract_id).unwrap_or_default();
                names.sort();
                RouteMetrics {
                    contract_id: entry.route.contract_id,
                    names,
                    connections_total: s.connections_total.load(Ordering::Relaxed),
                    connections_active: s.active_connections(),
                    bytes_client_to_upstream: s.bytes_client_to_upstream.load(Ordering::Relaxed),
                    bytes_upstream_to_client: s.bytes_upstream_to_client.load(Ordering::Relaxed),
                    refused_route_limit: s.refused_route_limit.load(Ordering::Relaxed),
                    refused_upstream_unreachable: s
                        .refused_upstream_unreachable
                        .load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Builds and swaps in the snapshot for `routes`; the writer lock is held.
    fn install(&self, routes: Vec<Route>) -> Result<RouteUpdate, RouteError> {
        let old = self.current.load_full();
        let mut update = RouteUpdate::default();

        let mut by_contract: BTreeMap<u64, Route> = BTreeMap::new();
        for route in routes {
            let id = route.contract_id;
            if by_contract.insert(id, route).is_some() {
                return Err(RouteError::DuplicateContract(id));
            }
        }

        // Who claims which pattern.
        let mut claims: BTreeMap<Pattern, Vec<(u64, String)>> = BTreeMap::new();
        for route in by_contract.values() {
            for name in &route.names {
                match Pattern::parse(name) {
                    Ok(p) => {
                        let claimants = claims.entry(p).or_default();
                        if !claimants.iter().any(|(id, _)| *id == route.contract_id) {
                            claimants.push((route.contract_id, name.clone()));
                        }
                    }
                    Err(e) => update.rejected_names.push(RejectedName {
                        contract_id: route.contract_id,
                        name: name.clone(),
                        reason: NameRejection::Invalid { reason: e },
                    }),
                }
            }
        }
        let holder_before = |p: &Pattern| -> Option<u64> {
            let entry = match p {
                Pattern::Exact(n) => old.exact.get(n.as_str()),
                Pattern::Wildcard(n) => old.wildcard.get(n.as_str()),
            };
            entry.map(|e| e.route.contract_id)
        };
        let mut granted: BTreeMap<Pattern, u64> = BTreeMap::new();
        for (pattern, claimants) in claims {
            if let [(id, _)] = claimants.as_slice() {
                granted.insert(pattern, *id);
                continue;
            }
            let incumbent =
                holder_before(&pattern).filter(|held| claimants.iter().any(|(id, _)| id == held));
            let ids: Vec<u64> = claimants.iter().map(|(id, _)| *id).collect();
            for (id, name) in &claimants {
                let reason = match incumbent {
                    Some(holder) if holder == *id => continue,
                    Some(holder) => NameRejection::TakenBy {
                        contract_id: holder,
                    },
                    None => NameRejection::Contested {
                        contract_ids: ids.clone(),
                    },
                };
                update.rejected_names.push(RejectedName {
                    contract_id: *id,
                    name: name.clone(),
                    reason,
                });
            }
            if let Some(holder) = incumbent {
                granted.insert(pattern, holder);
            }
        }

        let mut next = Snapshot::default();
        for (id, route) in by_contract {
            let state = match old.by_contract.get(&id) {
                Some(previous) => {
                    if previous.route != route {
                        update.changed.push(id);
                    }
                    previous.state.clone()
                }
                None => {
                    update.added.push(id);
                    Arc::new(RouteState::new(id))
                }
            };
            next.by_contract
                .insert(id, Arc::new(RouteEntry { route, state }));
        }
        for (pattern, id) in granted {
            let Some(entry) = next.by_contract.get(&id) else {
                continue;
            };
            let (map, key) = match &pattern {
                Pattern::Exact(n) => (&mut next.exact, n),
                Pattern::Wildcard(n) => (&mut next.wildcard, n),
            };
            map.insert(key.as_str().into(), entry.clone());
        }
        let removed: Vec<Arc<RouteEntry>> = old
            .by_contract
            .iter()
            .filter(|(id, _)| !next.by_contract.contains_key(id))
            .map(|(_, e)| e.clone())
            .collect();
        // Swap first, close after: a connection that looked up the old
        // snapshot and then finds its route closed is refused, not routed.
        self.current.store(Arc::new(next));
        for entry in removed {
            update.removed.push(entry.route.contract_id);
            entry.state.close();
        }
        update
            .rejected_names
            .sort_by(|a, b| (a.contract_id, &a.name).cmp(&(b.contract_id, &b.name)));
        Ok(update)
    }
}

/// A route for the crate's unit tests: contract `id` served by 10.0.0.`id`
/// (ports 443 and 80), two connections at most.
#[cfg(test)]
pub(crate) fn test_route(id: u64, names: &[&str]) -> Route {
    Route {
        contract_id: id,
        names: names.iter().map(|s| s.to_string()).collect(),
        tls_upstream: SocketAddr::from(([10, 0, 0, id as u8], 443)),
        http_upstream: Some(SocketAddr::from(([10, 0, 0, id as u8], 80))),
        proxy_protocol: false,
        max_connections: 2,
    }
}

#[cfg(test)]
mod tests {
    use super::test_route as route;
    use super::*;

    fn who(table: &RouteTable, name: &str) -> Option<u64> {
        table
            .lookup(&HostName::parse(name).unwrap())
            .map(|e| e.route.contract_id)
    }

    #[test]
    fn exact_names_and_single_label_wildcards() {
        let table = RouteTable::new();
        let update = table
            .replace(vec![
                route(1, &["c1.node.example", "Shop.Example.COM."]),
                route(2, &["*.apps.example", "api.apps.example"]),
                route(3, &["x.apps.example"]),
            ])
            .unwrap();
        assert_eq!(update.added, vec![1, 2, 3]);
        assert!(update.rejected_names.is_empty());
        assert_eq!(who(&table, "c1.node.example"), Some(1));
        assert_eq!(who(&table, "shop.example.com"), Some(1));
        assert_eq!(who(&table, "a.apps.example"), Some(2));
        assert_eq!(who(&table, "api.apps.example"), Some(2));
        // Exact beats wildcard.
        assert_eq!(who(&table, "x.apps.example"), Some(3));
        // One label only, and not the parent itself.
        assert_eq!(who(&table, "a.b.apps.example"), None);
        assert_eq!(who(&table, "apps.example"), None);
        assert_eq!(who(&table, "other.example"), None);
        let metrics = table.metrics();
        assert_eq!(metrics[1].names, vec!["*.apps.example", "api.apps.example"]);
    }

    #[test]
    fn invalid_names_are_reported_and_skipped() {
        let table = RouteTable::new();
        let update = table
            .replace(vec![route(
                1,
                &[
                    "ok.example",
                    "bad_name.example",
                    "*.com",
                    "a.*.example",
                    "*",
                    "*.co.uk",
                    "*.Github.IO.",
                    "com.au",
                    "*.shop.example.co.uk",
                    "*.kobe.jp",
                ],
            )])
            .unwrap();
        let rejected: Vec<&str> = update
            .rejected_names
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(
            rejected,
            vec![
                "*",
                "*.Github.IO.",
                "*.co.uk",
                "*.com",
                "*.kobe.jp",
                "a.*.example",
                "bad_name.example",
                "com.au"
            ]
        );
        let reason = |name: &str| match &update
            .rejected_names
            .iter()
            .find(|r| r.name == name)
            .unwrap()
            .reason
        {
            NameRejection::Invalid { reason } => reason.clone(),
            other => panic!("{other:?}"),
        };
        assert!(
            reason("*.co.uk").contains("public suffix"),
            "{}",
            reason("*.co.uk")
        );
        assert!(
            reason("*.Github.IO.").contains("`*.github.io`"),
            "{}",
            reason("*.Github.IO.")
        );
        assert!(reason("com.au").contains("public suffix"));
        assert_eq!(who(&table, "x.shop.example.co.uk"), Some(1));
        assert!(update
            .rejected_names
            .iter()
            .all(|r| matches!(r.reason, NameRejection::Invalid { .. })));
        assert_eq!(who(&table, "ok.example"), Some(1));
        assert_eq!(
            Pattern::parse("*.A.Example."),
            Ok(Pattern::Wildcard("a.example".into()))
        );
    }

    #[test]
    fn a_contested_name_stays_with_its_holder() {
        let table = RouteTable::new();
        table.replace(vec![route(1, &["shop.example"])]).unwrap();
        // Contract 2 registers contract 1's domain: 1 keeps it, 2 is told.
        let update = table
            .replace(vec![
                route(1, &["shop.example"]),
                route(2, &["shop.example", "two.example"]),
            ])
            .unwrap();
        assert_eq!(
            update.rejected_names,
            vec![RejectedName {
                contract_id: 2,
                name: "shop.example".into(),
                reason: NameRejection::TakenBy { contract_id: 1 },
            }]
        );
        assert_eq!(who(&table, "shop.example"), Some(1));
        assert_eq!(who(&table, "two.example"), Some(2));
        // Two newcomers on a free name: nobody gets it, spelled however.
        let update = table
            .replace(vec![
                route(3, &["new.example"]),
                route(4, &["NEW.example."]),
            ])
            .unwrap();
        assert_eq!(update.rejected_names.len(), 2);
        assert_eq!(who(&table, "new.example"), None);
        assert_eq!(update.removed, vec![1, 2]);
        assert_eq!(
            table.replace(vec![route(5, &[]), route(5, &[])]),
            Err(RouteError::DuplicateContract(5))
        );
    }

    #[test]
    fn state_survives_updates_and_removal_closes_only_the_removed_route() {
        let table = RouteTable::new();
        table
            .replace(vec![route(1, &["one.example"]), route(2, &["two.example"])])
            .unwrap();
        let one = table.get(1).unwrap();
        let two = table.get(2).unwrap();
        let slot_one = one.state.try_acquire(one.route.max_connections).unwrap();
        let slot_two = two.state.try_acquire(2).unwrap();
        let _second = two.state.try_acquire(2).unwrap();
        assert_eq!(two.state.try_acquire(2).unwrap_err(), AcquireError::Full);

        // Changing contract 1's upstream keeps its state and connections.
        let mut moved = route(1, &["one.example", "uno.example"]);
        moved.tls_upstream = "10.0.0.9:443".parse().unwrap();
        let update = table.upsert(moved);
        assert_eq!(update.changed, vec![1]);
        assert!(Arc::ptr_eq(&table.get(1).unwrap().state, &one.state));
        assert_eq!(who(&table, "uno.example"), Some(1));
        assert!(!one.state.is_closed());

        // Contract 2 ends: its connections are told, contract 1's are not.
        assert!(table.remove(2));
        assert!(!table.remove(2));
        assert!(two.state.is_closed());
        assert!(!one.state.is_closed());
        assert_eq!(who(&table, "two.example"), None);
        assert_eq!(two.state.try_acquire(10).unwrap_err(), AcquireError::Closed);
        drop(slot_two);
        drop(slot_one);
        assert_eq!(one.state.active_connections(), 0);
        // Only connections the VM took count as routed (the ingress counts
        // them once connected); a slot alone is not one.
        one.state.connections_total.fetch_add(1, Ordering::Relaxed);
        let m = table.metrics();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].connections_total, 1);
        assert_eq!(m[0].names, vec!["one.example", "uno.example"]);
    }

    #[tokio::test]
    async fn closing_wakes_waiters() {
        let table = Arc::new(RouteTable::new());
        table.replace(vec![route(7, &["seven.example"])]).unwrap();
        let state = table.get(7).unwrap().state.clone();
        let waiter = tokio::spawn(async move { state.closed().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        table.replace(vec![]).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
    }
}
