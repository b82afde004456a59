//! Counters of the listeners and the snapshot the remote-control API serves.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::routes::RouteMetrics;

/// Why a connection was refused or closed before it reached a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// No server name (443: no SNI `host_name`; 80: no Host, or CONNECT).
    NoName,
    /// The ClientHello offers ECH and the policy is to refuse.
    Ech,
    /// No route for the name (or, on port 80, no HTTP endpoint for it).
    UnknownName,
    /// Not a ClientHello or request head the parser accepts.
    Malformed,
    /// Larger than the configured bound.
    TooLarge,
    /// Not all there by the deadline (total time or minimum rate).
    TooSlow,
    /// The client closed or reset before sending a whole hello or head.
    ClosedEarly,
    /// The ingress-wide connection limit was reached.
    GlobalLimit,
    /// The source's connection limit was reached.
    SourceLimit,
    /// The route's connection limit was reached.
    RouteLimit,
    /// The VM did not accept the connection (or the buffered bytes) in time.
    UpstreamUnreachable,
}

impl Refusal {
    /// Every reason, in the order of [`Refusals`]' fields.
    pub const ALL: [Refusal; 11] = [
        Refusal::NoName,
        Refusal::Ech,
        Refusal::UnknownName,
        Refusal::Malformed,
        Refusal::TooLarge,
        Refusal::TooSlow,
        Refusal::ClosedEarly,
        Refusal::GlobalLimit,
        Refusal::SourceLimit,
        Refusal::RouteLimit,
        Refusal::UpstreamUnreachable,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Refusal counts by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusals {
    /// [`Refusal::NoName`]
    pub no_name: u64,
    /// [`Refusal::Ech`]
    pub ech: u64,
    /// [`Refusal::UnknownName`]
    pub unknown_name: u64,
    /// [`Refusal::Malformed`]
    pub malformed: u64,
    /// [`Refusal::TooLarge`]
    pub too_large: u64,
    /// [`Refusal::TooSlow`]
    pub too_slow: u64,
    /// [`Refusal::ClosedEarly`]
    pub closed_early: u64,
    /// [`Refusal::GlobalLimit`]
    pub global_limit: u64,
    /// [`Refusal::SourceLimit`]
    pub source_limit: u64,
    /// [`Refusal::RouteLimit`]
    pub route_limit: u64,
    /// [`Refusal::UpstreamUnreachable`]
    pub upstream_unreachable: u64,
}

impl Refusals {
    /// The count for one reason.
    pub fn get(&self, reason: Refusal) -> u64 {
        match reason {
            Refusal::NoName => self.no_name,
            Refusal::Ech => self.ech,
            Refusal::UnknownName => self.unknown_name,
            Refusal::Malformed => self.malformed,
            Refusal::TooLarge => self.too_large,
            Refusal::TooSlow => self.too_slow,
            Refusal::ClosedEarly => self.closed_early,
            Refusal::GlobalLimit => self.global_limit,
            Refusal::SourceLimit => self.source_limit,
            Refusal::RouteLimit => self.route_limit,
            Refusal::UpstreamUnreachable => self.upstream_unreachable,
        }
    }

    /// All refusals together.
    pub fn total(&self) -> u64 {
        Refusal::ALL.iter().map(|r| self.get(*r)).sum()
    }

    fn set(&mut self, reason: Refusal, value: u64) {
        let field = match reason {
            Refusal::NoName => &mut self.no_name,
            Refusal::Ech => &mut self.ech,
            Refusal::UnknownName => &mut self.unknown_name,
            Refusal::Malformed => &mut self.malformed,
            Refusal::TooLarge => &mut self.too_large,
            Refusal::TooSlow => &mut self.too_slow,
            Refusal::ClosedEarly => &mut self.closed_early,
            Refusal::GlobalLimit => &mut self.global_limit,
            Refusal::SourceLimit => &mut self.source_limit,
            Refusal::RouteLimit => &mut self.route_limit,
            Refusal::UpstreamUnreachable => &mut self.upstream_unreachable,
        };
        *field = value;
    }
}

/// Numbers of one listening port (443 or 80), all its listeners together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMetrics {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections handed to a VM.
    pub routed: u64,
    /// Connections refused, by reason.
    pub refusals: Refusals,
    /// Failed `accept` calls: descriptor or memory exhaustion (the port pauses
    /// briefly), or a connection that failed before it was taken (skipped).
    pub accept_errors: u64,
}

/// Everything the ingress counts, for the remote-control API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// Client connections open now, both ports, in any phase.
    pub connections_active: u64,
    /// Port 443.
    pub tls: PortMetrics,
    /// Port 80.
    pub http: PortMetrics,
    /// Splice pipe pairs parked for reuse.
    pub idle_pipes: u64,
    /// Per route, by contract id.
    pub routes: Vec<RouteMetrics>,
}

#[derive(Debug, Default)]
pub(crate) struct PortCounters {
    pub(crate) accepted: AtomicU64,
    pub(crate) routed: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    refusals: [AtomicU64; Refusal::ALL.len()],
}

impl PortCounters {
    pub(crate) fn refuse(&self, reason: Refusal) {
        self.refusals[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> PortMetrics {
        let mut refusals = Refusals::default();
        for reason in Refusal::ALL {
            refusals.set(
                reason,
                self.refusals[reason.index()].load(Ordering::Relaxed),
            );
        }
        PortMetrics {
            accepted: self.accepted.load(Ordering::Relaxed),
            routed: self.routed.load(Ordering::Relaxed),
            refusals,
            accept_errors: self.accept_errors.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter() {
        let counters = PortCounters::default();
        for (i, reason) in Refusal::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
            for _ in 0..=i {
                counters.refuse(*reason);
            }
        }
        let snap = counters.snapshot();
        for (i, reason) in Refusal::ALL.iter().enumerate() {
            assert_eq!(snap.refusals.get(*reason), i as u64 + 1, "{reason:?}");
        }
        assert_eq!(snap.refusals.total(), 66);
        let json = serde_json::to_value(snap).unwrap();
        assert_eq!(json["refusals"]["upstream_unreachable"], 11);
        assert_eq!(json["refusals"]["no_name"], 1);
    }
}
