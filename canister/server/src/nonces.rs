//! Replay protection: every signed request's (sender, nonce) is remembered
//! until the request's own expiry, after which the envelope is refused as
//! expired anyway.

use std::collections::{BTreeSet, HashSet};

use candid::Principal;
use sha2::{Digest, Sha256};

/// Nonces seen and not yet expired.
#[derive(Default, Clone, Debug)]
pub struct NonceCache {
    keys: HashSet<Vec<u8>>,
    by_expiry: BTreeSet<(u64, Vec<u8>)>,
}

fn key(sender: &Principal, nonce: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update([sender.as_slice().len() as u8]);
    h.update(sender.as_slice());
    h.update(nonce);
    h.finalize().to_vec()
}

impl NonceCache {
    /// Whether this sender already used this nonce.
    pub fn contains(&self, sender: &Principal, nonce: &[u8]) -> bool {
        self.keys.contains(&key(sender, nonce))
    }

    /// Records a nonce until `expires_at_ns`.
    pub fn insert(&mut self, sender: &Principal, nonce: &[u8], expires_at_ns: u64) {
        self.insert_key(key(sender, nonce), expires_at_ns);
    }

    pub(crate) fn insert_key(&mut self, key: Vec<u8>, expires_at_ns: u64) {
        if self.keys.insert(key.clone()) {
            self.by_expiry.insert((expires_at_ns, key));
        }
    }

    /// Forgets nonces whose requests have expired by `now_ns`.
    pub fn prune(&mut self, now_ns: u64) {
        while let Some((exp, _)) = self.by_expiry.first() {
            if *exp > now_ns {
                break;
            }
            if let Some((_, k)) = self.by_expiry.pop_first() {
                self.keys.remove(&k);
            }
        }
    }

    /// Number of nonces held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(crate) fn entries(&self) -> Vec<(Vec<u8>, u64)> {
        self.by_expiry
            .iter()
            .map(|(e, k)| (k.clone(), *e))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_expiry_and_scopes_by_sender() {
        let mut c = NonceCache::default();
        let (a, b) = (Principal::from_slice(&[1]), Principal::from_slice(&[2]));
        c.insert(&a, b"n1", 100);
        assert!(c.contains(&a, b"n1"));
        assert!(!c.contains(&b, b"n1"));
        c.prune(99);
        assert!(c.contains(&a, b"n1"));
        c.prune(100);
        assert!(!c.contains(&a, b"n1"));
        assert!(c.is_empty());
    }
}
