//! The ICRC-3 generic value and its representation-independent hash.

use candid::{CandidType, Int, Nat};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

use crate::leb128::{leb128_nat, sleb128_int};
use crate::sha256;

/// The ICRC-3 generic value, with the exact Candid shape of the standard:
///
/// ```candid
/// type Value = variant {
///     Blob : blob; Text : text; Nat : nat; Int : int;
///     Array : vec Value; Map : vec record { text; Value };
/// };
/// ```
///
/// `Map` keeps the encoder's entry order; [`Value::hash`] sorts, so the hash
/// does not depend on it.
#[derive(CandidType, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Raw bytes.
    Blob(ByteBuf),
    /// UTF-8 text.
    Text(String),
    /// Arbitrary-size natural number.
    Nat(Nat),
    /// Arbitrary-size integer.
    Int(Int),
    /// Ordered list of values.
    Array(Vec<Value>),
    /// Text-keyed entries, in encoder order.
    Map(Vec<(String, Value)>),
}

impl Value {
    /// `Value::Nat` from a `u64`.
    pub fn nat(n: u64) -> Self {
        Value::Nat(Nat::from(n))
    }

    /// `Value::Nat` from a `u128`.
    pub fn nat128(n: u128) -> Self {
        Value::Nat(Nat::from(n))
    }

    /// `Value::Int` from an `i64`.
    pub fn int(n: i64) -> Self {
        Value::Int(Int::from(n))
    }

    /// `Value::Text`.
    pub fn text(s: impl Into<String>) -> Self {
        Value::Text(s.into())
    }

    /// `Value::Blob`.
    pub fn blob(bytes: impl Into<Vec<u8>>) -> Self {
        Value::Blob(ByteBuf::from(bytes.into()))
    }

    /// `Value::Map` from `(key, value)` pairs, keeping their order.
    pub fn map<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Self {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        )
    }

    /// Starts a [`MapBuilder`].
    pub fn map_builder() -> MapBuilder {
        MapBuilder::new()
    }

    /// The value of the first entry named `key`, when `self` is a `Map`.
    pub fn as_map_get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The entries, when `self` is a `Map`.
    pub fn as_map(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The elements, when `self` is an `Array`.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The number, when `self` is a `Nat`.
    pub fn as_nat(&self) -> Option<&Nat> {
        match self {
            Value::Nat(n) => Some(n),
            _ => None,
        }
    }

    /// The number, when `self` is a `Nat` that fits in a `u64`.
    pub fn as_nat_u64(&self) -> Option<u64> {
        let mut digits = self.as_nat()?.0.iter_u64_digits();
        let low = digits.next().unwrap_or(0);
        match digits.next() {
            None => Some(low),
            Some(_) => None,
        }
    }

    /// The number, when `self` is a `Nat` that fits in a `u128`.
    pub fn as_nat_u128(&self) -> Option<u128> {
        let mut digits = self.as_nat()?.0.iter_u64_digits();
        let low = digits.next().unwrap_or(0);
        let high = digits.next().unwrap_or(0);
        match digits.next() {
            None => Some((u128::from(high) << 64) | u128::from(low)),
            Some(_) => None,
        }
    }

    /// The number, when `self` is an `Int`.
    pub fn as_int(&self) -> Option<&Int> {
        match self {
            Value::Int(n) => Some(n),
            _ => None,
        }
    }

    /// The bytes, when `self` is a `Blob`.
    pub fn as_blob(&self) -> Option<&[u8]> {
        match self {
            Value::Blob(b) => Some(b),
            _ => None,
        }
    }

    /// The text, when `self` is a `Text`.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The ICRC-3 representation-independent hash of the value (the IC's
    /// request-id hashing):
    ///
    /// * `Nat`: SHA-256 of its LEB128 encoding; `Int`: SHA-256 of its SLEB128 encoding;
    /// * `Text`: SHA-256 of its UTF-8 bytes; `Blob`: SHA-256 of the bytes;
    /// * `Array`: SHA-256 of the concatenated hashes of the elements;
    /// * `Map`: SHA-256 of the concatenation of `SHA-256(key) || hash(value)`
    ///   for every entry, the 64-byte pairs sorted lexicographically.
    ///
    /// Computed with an explicit stack, so deep nesting cannot overflow the
    /// call stack.
    pub fn hash(&self) -> [u8; 32] {
        let mut stack: Vec<Frame<'_>> = Vec::new();
        let mut pending: Option<&Value> = Some(self);
        loop {
            let finished = match pending.take() {
                Some(value) => match Step::of(value) {
                    Step::Done(h) => Some(h),
                    Step::Descend(frame) => {
                        stack.push(frame);
                        None
                    }
                },
                None => match stack.last_mut() {
                    None => return sha256(&[]), // unreachable: the root returns below
                    Some(top) => match top.next_child() {
                        Some(child) => {
                            pending = Some(child);
                            None
                        }
                        None => stack.pop().map(Frame::finish),
                    },
                },
            };
            if let Some(h) = finished {
                match stack.last_mut() {
                    Some(parent) => parent.accept(h),
                    None => return h,
                }
            }
        }
    }
}

/// What hashing one value needs: either its hash right away (scalars) or a
/// frame whose children must be hashed first (arrays and maps).
enum Step<'a> {
    Done([u8; 32]),
    Descend(Frame<'a>),
}

impl<'a> Step<'a> {
    fn of(value: &'a Value) -> Self {
        match value {
            Value::Nat(n) => Step::Done(sha256(&leb128_nat(n))),
            Value::Int(i) => Step::Done(sha256(&sleb128_int(i))),
            Value::Text(s) => Step::Done(sha256(s.as_bytes())),
            Value::Blob(b) => Step::Done(sha256(b)),
            Value::Array(items) => Step::Descend(Frame::Array {
                items: items.iter(),
                hasher: Sha256::new(),
            }),
            Value::Map(entries) => Step::Descend(Frame::Map {
                entries: entries.iter(),
                key_hash: [0; 32],
                pairs: Vec::with_capacity(entries.len()),
            }),
        }
    }
}

/// An array or map whose children are being hashed.
enum Frame<'a> {
    Array {
        items: std::slice::Iter<'a, Value>,
        hasher: Sha256,
    },
    Map {
        entries: std::slice::Iter<'a, (String, Value)>,
        /// Hash of the key of the entry whose value is being hashed.
        key_hash: [u8; 32],
        pairs: Vec<[u8; 64]>,
    },
}

impl<'a> Frame<'a> {
    /// The next child to hash, if any.
    fn next_child(&mut self) -> Option<&'a Value> {
        match self {
            Frame::Array { items, .. } => items.next(),
            Frame::Map {
                entries, key_hash, ..
            } => entries.next().map(|(k, v)| {
                *key_hash = sha256(k.as_bytes());
                v
            }),
        }
    }

    /// Takes the hash of the child last returned by `next_child`.
    fn accept(&mut self, h: [u8; 32]) {
        match self {
            Frame::Array { hasher, .. } => hasher.update(h),
            Frame::Map {
                key_hash, pairs, ..
            } => {
                let mut pair = [0u8; 64];
                pair[..32].copy_from_slice(key_hash);
                pair[32..].copy_from_slice(&h);
                pairs.push(pair);
            }
        }
    }

    /// The hash of the array or map once all children are accepted.
    fn finish(self) -> [u8; 32] {
        match self {
            Frame::Array { hasher, .. } => hasher.finalize().into(),
            Frame::Map { mut pairs, .. } => {
                pairs.sort_unstable();
                let mut hasher = Sha256::new();
                for pair in &pairs {
                    hasher.update(pair);
                }
                hasher.finalize().into()
            }
        }
    }
}

/// Builds a `Value::Map` entry by entry, keeping insertion order.
///
/// ```
/// use dc_icrc3::Value;
/// let tx = Value::map_builder()
///     .nat("amt", 100)
///     .blob("from", [1u8, 2, 3])
///     .opt_nat("fee", None)
///     .build();
/// assert_eq!(tx.as_map_get("amt").and_then(Value::as_nat_u64), Some(100));
/// assert!(tx.as_map_get("fee").is_none());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapBuilder {
    entries: Vec<(String, Value)>,
}

impl MapBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `key: value`.
    pub fn value(mut self, key: &str, value: Value) -> Self {
        self.entries.push((key.to_owned(), value));
        self
    }

    /// Appends `key: Nat(n)`.
    pub fn nat(self, key: &str, n: u64) -> Self {
        self.value(key, Value::nat(n))
    }

    /// Appends `key: Nat(n)` for a `u128`.
    pub fn nat128(self, key: &str, n: u128) -> Self {
        self.value(key, Value::nat128(n))
    }

    /// Appends `key: Int(n)`.
    pub fn int(self, key: &str, n: i64) -> Self {
        self.value(key, Value::int(n))
    }

    /// Appends `key: Text(s)`.
    pub fn text(self, key: &str, s: impl Into<String>) -> Self {
        self.value(key, Value::text(s))
    }

    /// Appends `key: Blob(bytes)`.
    pub fn blob(self, key: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.value(key, Value::blob(bytes))
    }

    /// Appends `key: Nat(n)` when `n` is `Some`; omits the entry otherwise.
    pub fn opt_nat(self, key: &str, n: Option<u64>) -> Self {
        match n {
            Some(n) => self.nat(key, n),
            None => self,
        }
    }

    /// Appends `key: Blob(bytes)` when `bytes` is `Some`; omits the entry otherwise.
    pub fn opt_blob(self, key: &str, bytes: Option<impl Into<Vec<u8>>>) -> Self {
        match bytes {
            Some(b) => self.blob(key, b),
            None => self,
        }
    }

    /// Appends `key: Text(s)` when `s` is `Some`; omits the entry otherwise.
    pub fn opt_text(self, key: &str, s: Option<impl Into<String>>) -> Self {
        match s {
            Some(s) => self.text(key, s),
            None => self,
        }
    }

    /// Appends `key: value` when `value` is `Some`; omits the entry otherwise.
    pub fn opt_value(self, key: &str, value: Option<Value>) -> Self {
        match value {
            Some(v) => self.value(key, v),
            None => self,
        }
    }

    /// The finished `Value::Map`.
    pub fn build(self) -> Value {
        Value::Map(self.entries)
    }
}

impl From<MapBuilder> for Value {
    fn from(builder: MapBuilder) -> Self {
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn hex32(h: [u8; 32]) -> String {
        hex::encode(h)
    }

    /// Straightforward recursive reference implementation of the hash.
    fn reference_hash(v: &Value) -> [u8; 32] {
        match v {
            Value::Nat(n) => sha256(&leb128_nat(n)),
            Value::Int(i) => sha256(&sleb128_int(i)),
            Value::Text(s) => sha256(s.as_bytes()),
            Value::Blob(b) => sha256(b),
            Value::Array(items) => {
                let concat: Vec<u8> = items.iter().flat_map(reference_hash).collect();
                sha256(&concat)
            }
            Value::Map(entries) => {
                let mut pairs: Vec<Vec<u8>> = entries
                    .iter()
                    .map(|(k, v)| [sha256(k.as_bytes()), reference_hash(v)].concat())
                    .collect();
                pairs.sort();
                sha256(&pairs.concat())
            }
        }
    }

    #[test]
    fn spec_nat() {
        assert_eq!(
            hex32(Value::nat(42).hash()),
            "684888c0ebb17f374298b65ee2807526c066094c701bcc7ebbe1c1095f494fc1"
        );
    }

    #[test]
    fn spec_int() {
        assert_eq!(
            hex32(Value::int(-42).hash()),
            "de5a6f78116eca62d7fc5ce159d23ae6b889b365a1739ad2cf36f925a140d0cc"
        );
    }

    #[test]
    fn spec_text() {
        assert_eq!(
            hex32(Value::text("Hello, World!").hash()),
            "dffd6021bb2bd5b0af676290809ec3a53191dd81c7f70a4b28688a362182986f"
        );
    }

    #[test]
    fn spec_blob() {
        assert_eq!(
            hex32(Value::blob(b"\x01\x02\x03\x04".to_vec()).hash()),
            "9f64a747e1b97f131fabb6b447296c9b6f0201e79fb3c5356e6c77e89b6a806a"
        );
    }

    #[test]
    fn spec_array() {
        let v = Value::Array(vec![
            Value::nat(3),
            Value::text("foo"),
            Value::blob(b"\x05\x06".to_vec()),
        ]);
        assert_eq!(
            hex32(v.hash()),
            "514a04011caa503990d446b7dec5d79e19c221ae607fb08b2848c67734d468d6"
        );
    }

    fn spec_map() -> Value {
        Value::map([
            (
                "from",
                Value::blob(
                    b"\x00\xab\xcd\xef\x00\x12\x34\x00\x56\x78\x9a\x00\xbc\xde\xf0\x00\x01\x23\x45\x67\x89\x00\xab\xcd\xef\x01"
                        .to_vec(),
                ),
            ),
            (
                "to",
                Value::blob(
                    b"\x00\xab\x0d\xef\x00\x12\x34\x00\x56\x78\x9a\x00\xbc\xde\xf0\x00\x01\x23\x45\x67\x89\x00\xab\xcd\xef\x01"
                        .to_vec(),
                ),
            ),
            ("amount", Value::nat(42)),
            ("created_at", Value::nat(1_699_218_263)),
            ("memo", Value::nat(0)),
        ])
    }

    #[test]
    fn spec_map_hash() {
        assert_eq!(
            hex32(spec_map().hash()),
            "c56ece650e1de4269c5bdeff7875949e3e2033f85b2d193c2ff4f7f78bdcfc75"
        );
    }

    #[test]
    fn builder_matches_map_constructor() {
        let built = Value::map_builder()
            .nat("amt", 5)
            .text("op", "xfer")
            .blob("memo", vec![1, 2])
            .opt_nat("fee", None)
            .opt_nat("ts", Some(7))
            .value("arr", Value::Array(vec![]))
            .build();
        let direct = Value::map([
            ("amt", Value::nat(5)),
            ("op", Value::text("xfer")),
            ("memo", Value::blob(vec![1, 2])),
            ("ts", Value::nat(7)),
            ("arr", Value::Array(vec![])),
        ]);
        assert_eq!(built, direct);
        assert_eq!(
            built.as_map_get("op").and_then(Value::as_text),
            Some("xfer")
        );
        assert_eq!(
            built.as_map_get("memo").and_then(Value::as_blob),
            Some(&[1u8, 2][..])
        );
        assert_eq!(built.as_map_get("ts").and_then(Value::as_nat_u64), Some(7));
        assert_eq!(built.as_map_get("fee"), None);
        assert_eq!(built.as_map_get("op").and_then(Value::as_nat_u64), None);
        assert_eq!(Value::nat(1).as_map_get("x"), None);
    }

    #[test]
    fn nat_accessors_reject_overflow() {
        assert_eq!(Value::nat(u64::MAX).as_nat_u64(), Some(u64::MAX));
        assert_eq!(Value::nat(0).as_nat_u64(), Some(0));
        assert_eq!(Value::nat128(u128::from(u64::MAX) + 1).as_nat_u64(), None);
        assert_eq!(Value::nat128(u128::MAX).as_nat_u128(), Some(u128::MAX));
        let huge = Value::Nat(Nat::from_str("340282366920938463463374607431768211456").unwrap());
        assert_eq!(huge.as_nat_u128(), None);
        assert_eq!(Value::text("1").as_nat_u64(), None);
    }

    #[test]
    fn big_integers_hash_via_leb128() {
        let n = Nat::from_str("340282366920938463463374607431768211456").unwrap(); // 2^128
        let mut expected = vec![0x80u8; 18];
        expected.push(0x04);
        assert_eq!(Value::Nat(n).hash(), sha256(&expected));
        let i = Int::from_str("-340282366920938463463374607431768211456").unwrap();
        let mut expected = vec![0x80u8; 18];
        expected.push(0x7c);
        assert_eq!(Value::Int(i).hash(), sha256(&expected));
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let mut v = Value::nat(1);
        for i in 0..100_000 {
            v = if i % 2 == 0 {
                Value::Array(vec![v])
            } else {
                Value::Map(vec![("k".to_owned(), v)])
            };
        }
        let _ = v.hash();
        // Dropping is recursive in std; unwind the nesting by hand.
        let mut cur = v;
        loop {
            cur = match cur {
                Value::Array(mut items) => match items.pop() {
                    Some(x) => x,
                    None => break,
                },
                Value::Map(mut entries) => match entries.pop() {
                    Some((_, x)) => x,
                    None => break,
                },
                _ => break,
            };
        }
    }

    #[test]
    fn empty_containers() {
        assert_eq!(Value::Array(vec![]).hash(), sha256(&[]));
        assert_eq!(Value::Map(vec![]).hash(), sha256(&[]));
        assert_eq!(
            Value::Array(vec![Value::Array(vec![])]).hash(),
            sha256(&sha256(&[]))
        );
    }

    #[test]
    fn candid_round_trip() {
        use candid::{Decode, Encode};
        let v = Value::Array(vec![spec_map(), Value::int(-5), Value::text("x")]);
        let bytes = Encode!(&v).unwrap();
        let back = Decode!(&bytes, Value).unwrap();
        assert_eq!(v, back);
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<u64>().prop_map(Value::nat),
            any::<u128>().prop_map(Value::nat128),
            any::<i64>().prop_map(Value::int),
            ".{0,12}".prop_map(Value::text),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::blob),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec(("[a-z]{0,6}", inner), 0..4).prop_map(Value::Map),
            ]
        })
    }

    proptest! {
        #[test]
        fn map_hash_is_order_independent(
            (entries, shuffled) in proptest::collection::vec(("[a-z_]{0,8}", arb_value()), 0..8)
                .prop_flat_map(|e| (Just(e.clone()), Just(e).prop_shuffle()))
        ) {
            prop_assert_eq!(Value::Map(entries).hash(), Value::Map(shuffled).hash());
        }

        #[test]
        fn distinct_texts_hash_differently(a in ".{0,24}", b in ".{0,24}") {
            prop_assume!(a != b);
            prop_assert_ne!(Value::text(a).hash(), Value::text(b).hash());
        }

        #[test]
        fn iterative_hash_matches_recursive_reference(v in arb_value()) {
            prop_assert_eq!(v.hash(), reference_hash(&v));
        }
    }
}
