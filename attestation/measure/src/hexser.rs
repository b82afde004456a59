//! Serde helpers for the JSON measurement document: fixed-length hex byte
//! strings, and integers written either as JSON numbers or as "0x…" strings.

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;
use std::fmt;

/// `[u8; N]` as a lower-case hex string of exactly `2 * N` digits.
pub(crate) mod hex_array {
    use super::*;

    pub(crate) fn serialize<S: Serializer, const N: usize>(
        v: &[u8; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        struct HexVisitor<const N: usize>;
        impl<const N: usize> Visitor<'_> for HexVisitor<N> {
            type Value = [u8; N];
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a hex string of {N} bytes ({} hex digits)", 2 * N)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<[u8; N], E> {
                let s = s.strip_prefix("0x").unwrap_or(s);
                if s.len() != 2 * N {
                    return Err(E::custom(format!(
                        "expected {} hex digits ({N} bytes), found {}",
                        2 * N,
                        s.len()
                    )));
                }
                let mut out = [0u8; N];
                hex::decode_to_slice(s, &mut out)
                    .map_err(|e| E::custom(format!("expected hex, found {e}")))?;
                Ok(out)
            }
        }
        d.deserialize_str(HexVisitor::<N>)
    }
}

/// Parses a JSON integer or a "0x…"/decimal string into a `u64`.
struct U64Visitor;

impl Visitor<'_> for U64Visitor {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a non-negative integer or a \"0x…\" hex string")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v)
            .map_err(|_| E::custom(format!("expected a non-negative integer, found {v}")))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<u64, E> {
        let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(digits) if !digits.is_empty() && digits.len() <= 16 => {
                u64::from_str_radix(digits, 16).ok()
            }
            Some(_) => None,
            None if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().ok()
            }
            None => None,
        };
        parsed.ok_or_else(|| {
            E::custom(format!(
                "expected an integer or \"0x…\" hex string fitting 64 bits, found {s:?}"
            ))
        })
    }
}

/// `u64` written as "0x…" and read from a number or string.
pub(crate) mod num_u64 {
    use super::*;
    pub(crate) fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:#x}"))
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(U64Visitor)
    }
}

/// `u32` written as "0x…" and read from a number or string.
pub(crate) mod num_u32 {
    use super::*;
    pub(crate) fn serialize<S: Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:#x}"))
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let v = d.deserialize_any(U64Visitor)?;
        u32::try_from(v)
            .map_err(|_| de::Error::custom(format!("expected a value below 2^32, found {v:#x}")))
    }
}
