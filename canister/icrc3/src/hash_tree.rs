//! The IC hash tree: digest, CBOR encoding, and the ICRC-3 certified tip.

use sha2::{Digest, Sha256};

use crate::leb128::leb128_u64;

/// Label of the last block's hash in the certified tip tree.
pub const LAST_BLOCK_HASH_LABEL: &[u8] = b"last_block_hash";
/// Label of the last block's index (LEB128) in the certified tip tree.
pub const LAST_BLOCK_INDEX_LABEL: &[u8] = b"last_block_index";

/// CBOR self-describe tag 55799, which prefixes every encoded hash tree.
const SELF_DESCRIBE_TAG: [u8; 3] = [0xd9, 0xd9, 0xf7];

/// An IC hash tree, as certified by the subnet and served in
/// `icrc3_get_tip_certificate`'s `hash_tree`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashTree {
    /// The empty tree.
    Empty,
    /// Two subtrees.
    Fork(Box<HashTree>, Box<HashTree>),
    /// A subtree under a label.
    Labeled(Vec<u8>, Box<HashTree>),
    /// A leaf holding bytes.
    Leaf(Vec<u8>),
    /// A subtree replaced by its digest.
    Pruned([u8; 32]),
}

/// SHA-256 of the domain separator `[len(sep)] || sep` followed by `parts`.
fn domain_hash(sep: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    // Every separator used here is a short constant, well below 256 bytes.
    h.update([sep.len() as u8]);
    h.update(sep);
    for part in parts {
        h.update(part);
    }
    h.finalize().into()
}

impl HashTree {
    /// `Fork(l, r)`.
    pub fn fork(l: HashTree, r: HashTree) -> Self {
        HashTree::Fork(Box::new(l), Box::new(r))
    }

    /// `Labeled(label, t)`.
    pub fn labeled(label: impl Into<Vec<u8>>, t: HashTree) -> Self {
        HashTree::Labeled(label.into(), Box::new(t))
    }

    /// `Leaf(bytes)`.
    pub fn leaf(bytes: impl Into<Vec<u8>>) -> Self {
        HashTree::Leaf(bytes.into())
    }

    /// The root hash (the value a canister sets as its certified data):
    /// empty = H(dom "ic-hashtree-empty"), fork = H(dom "ic-hashtree-fork" || l || r),
    /// labeled = H(dom "ic-hashtree-labeled" || label || t), leaf =
    /// H(dom "ic-hashtree-leaf" || bytes), pruned = the stored hash, where
    /// dom(s) = `[len(s)] || s` and H = SHA-256.
    pub fn digest(&self) -> [u8; 32] {
        match self {
            HashTree::Empty => domain_hash(b"ic-hashtree-empty", &[]),
            HashTree::Fork(l, r) => domain_hash(b"ic-hashtree-fork", &[&l.digest(), &r.digest()]),
            HashTree::Labeled(label, t) => {
                domain_hash(b"ic-hashtree-labeled", &[label, &t.digest()])
            }
            HashTree::Leaf(bytes) => domain_hash(b"ic-hashtree-leaf", &[bytes]),
            HashTree::Pruned(h) => *h,
        }
    }

    /// The IC's CBOR encoding of the tree: the self-describe tag 55799, then
    /// `Empty` = `[0]`, `Fork` = `[1, l, r]`, `Labeled` = `[2, label, t]`,
    /// `Leaf` = `[3, bytes]`, `Pruned` = `[4, hash]` (labels, leaves and
    /// hashes as CBOR byte strings).
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut out = SELF_DESCRIBE_TAG.to_vec();
        self.write_cbor(&mut out);
        out
    }

    fn write_cbor(&self, out: &mut Vec<u8>) {
        match self {
            HashTree::Empty => {
                cbor_head(out, MAJOR_ARRAY, 1);
                cbor_head(out, MAJOR_UINT, 0);
            }
            HashTree::Fork(l, r) => {
                cbor_head(out, MAJOR_ARRAY, 3);
                cbor_head(out, MAJOR_UINT, 1);
                l.write_cbor(out);
                r.write_cbor(out);
            }
            HashTree::Labeled(label, t) => {
                cbor_head(out, MAJOR_ARRAY, 3);
                cbor_head(out, MAJOR_UINT, 2);
                cbor_bytes(out, label);
                t.write_cbor(out);
            }
            HashTree::Leaf(bytes) => {
                cbor_head(out, MAJOR_ARRAY, 2);
                cbor_head(out, MAJOR_UINT, 3);
                cbor_bytes(out, bytes);
            }
            HashTree::Pruned(h) => {
                cbor_head(out, MAJOR_ARRAY, 2);
                cbor_head(out, MAJOR_UINT, 4);
                cbor_bytes(out, h);
            }
        }
    }
}

const MAJOR_UINT: u8 = 0;
const MAJOR_BYTES: u8 = 2;
const MAJOR_ARRAY: u8 = 4;

/// Writes a CBOR item head: major type and its argument, shortest form.
fn cbor_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if let Ok(n) = u8::try_from(n) {
        out.push(m | 24);
        out.push(n);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(m | 25);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = u32::try_from(n) {
        out.push(m | 26);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// Writes a definite-length CBOR byte string.
fn cbor_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    cbor_head(out, MAJOR_BYTES, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The ICRC-3 tip tree:
/// `fork(labeled("last_block_hash", leaf(hash)), labeled("last_block_index", leaf(leb128(index))))`.
pub fn tip_tree(last_block_index: u64, last_block_hash: [u8; 32]) -> HashTree {
    HashTree::fork(
        HashTree::labeled(LAST_BLOCK_HASH_LABEL, HashTree::leaf(last_block_hash)),
        HashTree::labeled(
            LAST_BLOCK_INDEX_LABEL,
            HashTree::leaf(leb128_u64(last_block_index)),
        ),
    )
}

/// The certified data a canister sets for the ICRC-3 tip: the digest of
/// [`tip_tree`].
pub fn tip_certified_data(last_block_index: u64, last_block_hash: [u8; 32]) -> [u8; 32] {
    tip_tree(last_block_index, last_block_hash).digest()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sha256;
    use ciborium::value::Value as Cbor;

    fn int(n: u8) -> Cbor {
        Cbor::Integer(n.into())
    }

    fn bytes(b: &[u8]) -> Cbor {
        Cbor::Bytes(b.to_vec())
    }

    fn decode(buf: &[u8]) -> Cbor {
        ciborium::de::from_reader(buf).unwrap()
    }

    #[test]
    fn cbor_of_small_tree_decodes() {
        let tree = HashTree::fork(
            HashTree::labeled(b"a".to_vec(), HashTree::leaf(b"hello".to_vec())),
            HashTree::fork(HashTree::Empty, HashTree::Pruned([7; 32])),
        );
        let encoded = tree.to_cbor();
        assert_eq!(&encoded[..3], &[0xd9, 0xd9, 0xf7]);
        let expected = Cbor::Tag(
            55799,
            Box::new(Cbor::Array(vec![
                int(1),
                Cbor::Array(vec![
                    int(2),
                    bytes(b"a"),
                    Cbor::Array(vec![int(3), bytes(b"hello")]),
                ]),
                Cbor::Array(vec![
                    int(1),
                    Cbor::Array(vec![int(0)]),
                    Cbor::Array(vec![int(4), bytes(&[7; 32])]),
                ]),
            ])),
        );
        assert_eq!(decode(&encoded), expected);
    }

    #[test]
    fn cbor_of_tip_tree_decodes() {
        let tree = tip_tree(300, [0xab; 32]);
        let expected = Cbor::Tag(
            55799,
            Box::new(Cbor::Array(vec![
                int(1),
                Cbor::Array(vec![
                    int(2),
                    bytes(b"last_block_hash"),
                    Cbor::Array(vec![int(3), bytes(&[0xab; 32])]),
                ]),
                Cbor::Array(vec![
                    int(2),
                    bytes(b"last_block_index"),
                    Cbor::Array(vec![int(3), bytes(&[0xac, 0x02])]),
                ]),
            ])),
        );
        assert_eq!(decode(&tree.to_cbor()), expected);
    }

    #[test]
    fn cbor_length_heads() {
        for len in [0usize, 23, 24, 255, 256, 65_535, 65_536, 70_000] {
            let data = vec![0x5a; len];
            let encoded = HashTree::Leaf(data.clone()).to_cbor();
            let expected = Cbor::Tag(
                55799,
                Box::new(Cbor::Array(vec![int(3), Cbor::Bytes(data)])),
            );
            assert_eq!(decode(&encoded), expected, "len {len}");
        }
        let mut out = Vec::new();
        cbor_head(&mut out, MAJOR_UINT, u64::MAX);
        assert_eq!(out, [0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn primitive_digests() {
        assert_eq!(HashTree::Empty.digest(), sha256(b"\x11ic-hashtree-empty"));
        assert_eq!(
            HashTree::leaf(b"xyz".to_vec()).digest(),
            sha256(b"\x10ic-hashtree-leafxyz")
        );
        assert_eq!(HashTree::Pruned([9; 32]).digest(), [9; 32]);
    }

    #[test]
    fn tip_digest_matches_hand_composition() {
        let index = 1_234_567u64;
        let hash = sha256(b"some block");

        let mut leaf_hash = b"\x10ic-hashtree-leaf".to_vec();
        leaf_hash.extend_from_slice(&hash);
        let leaf_hash = sha256(&leaf_hash);

        let mut leaf_index = b"\x10ic-hashtree-leaf".to_vec();
        leaf_index.extend_from_slice(&[0x87, 0xad, 0x4b]); // LEB128(1234567)
        let leaf_index = sha256(&leaf_index);

        let mut lab_hash = b"\x13ic-hashtree-labeled".to_vec();
        lab_hash.extend_from_slice(b"last_block_hash");
        lab_hash.extend_from_slice(&leaf_hash);
        let lab_hash = sha256(&lab_hash);

        let mut lab_index = b"\x13ic-hashtree-labeled".to_vec();
        lab_index.extend_from_slice(b"last_block_index");
        lab_index.extend_from_slice(&leaf_index);
        let lab_index = sha256(&lab_index);

        let mut fork = b"\x10ic-hashtree-fork".to_vec();
        fork.extend_from_slice(&lab_hash);
        fork.extend_from_slice(&lab_index);
        let root = sha256(&fork);

        assert_eq!(tip_tree(index, hash).digest(), root);
        assert_eq!(tip_certified_data(index, hash), root);

        // Pruning a subtree keeps the root.
        let pruned = HashTree::fork(
            HashTree::Pruned(lab_hash),
            HashTree::labeled(
                LAST_BLOCK_INDEX_LABEL,
                HashTree::leaf(vec![0x87, 0xad, 0x4b]),
            ),
        );
        assert_eq!(pruned.digest(), root);
    }
}
