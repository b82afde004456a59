//! Admission: the ingress-wide and per-source connection limits, taken at
//! accept time and given back when the connection's task ends.

use std::collections::hash_map::{Entry, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::metrics::Refusal;

/// Shards of the per-source map: accepts on different cores rarely contend.
const SHARDS: usize = 64;

/// Counts open connections overall and per source.
#[derive(Debug)]
pub(crate) struct Admission {
    max_total: u32,
    max_per_source: u32,
    total: AtomicU32,
    shard_hasher: RandomState,
    /// SipHash with random keys per map: sources are chosen by the attacker.
    sources: Vec<Mutex<HashMap<IpAddr, u32>>>,
}

/// An admitted connection; gives its place back when dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    admission: Arc<Admission>,
    source: IpAddr,
}

impl Admission {
    pub(crate) fn new(max_total: u32, max_per_source: u32) -> Self {
        Admission {
            max_total,
            max_per_source,
            total: AtomicU32::new(0),
            shard_hasher: RandomState::new(),
            sources: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Connections open now.
    pub(crate) fn active(&self) -> u32 {
        self.total.load(Ordering::Relaxed)
    }

    /// Admits a connection from `peer`, or says which limit refuses it.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Admitted, Refusal> {
        let source = source_key(peer);
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < self.max_total).then_some(n + 1)
            })
            .map_err(|_| Refusal::GlobalLimit)?;
        let mut shard = self.shard(&source);
        let count = shard.entry(source).or_insert(0);
        if *count >= self.max_per_source {
            drop(shard);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::SourceLimit);
        }
        *count += 1;
        Ok(Admitted {
            admission: self.clone(),
            source,
        })
    }

    /// Connections open now from the source of `peer`.
    #[cfg(test)]
    pub(crate) fn count_for(&self, peer: IpAddr) -> u32 {
        let source = source_key(peer);
        self.shard(&source).get(&source).copied().unwrap_or(0)
    }

    fn shard(&self, source: &IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        let i = (self.shard_hasher.hash_one(source) as usize) % SHARDS;
        // A poisoned shard only means a panic elsewhere mid-update of a count.
        self.sources[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(&self, source: &IpAddr) {
        let mut shard = self.shard(source);
        if let Entry::Occupied(mut e) = shard.entry(*source) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                // Forget idle sources so the map holds only live ones.
                e.remove();
            }
        }
        drop(shard);
        self.total.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.release(&self.source);
    }
}

/// One IPv4 address (IPv4-mapped IPv6 included), or one IPv6 /64: a single
/// IPv6 host usually holds a whole /64, so counting addresses would not limit it.
fn source_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_source_and_overall() {
        let a = Arc::new(Admission::new(3, 2));
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let x = a.admit(one).unwrap();
        let _y = a.admit(mapped).unwrap();
        assert_eq!(a.admit(one).unwrap_err(), Refusal::SourceLimit);
        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let _z = a.admit(v6a).unwrap();
        assert_eq!(a.active(), 3);
        assert_eq!(a.admit(v6b).unwrap_err(), Refusal::GlobalLimit);
        drop(x);
        assert_eq!(a.count_for(one), 1);
        // Same /64: counted together.
        let _w = a.admit(v6b).unwrap();
        assert_eq!(a.count_for(v6a), 2);
        assert_eq!(
            a.admit("2001:db8:1:3::1".parse().unwrap()).unwrap_err(),
            Refusal::GlobalLimit
        );
    }

    #[test]
    fn releasing_forgets_idle_sources() {
        let a = Arc::new(Admission::new(10, 10));
        let peer: IpAddr = "198.51.100.7".parse().unwrap();
        let guards: Vec<_> = (0..5).map(|_| a.admit(peer).unwrap()).collect();
        assert_eq!(a.count_for(peer), 5);
        drop(guards);
        assert_eq!(a.active(), 0);
        let entries: usize = a.sources.iter().map(|s| s.lock().unwrap().len()).sum();
        assert_eq!(entries, 0);
    }
}
