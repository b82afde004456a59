//! Unsigned and signed LEB128 encodings, for machine integers and for the
//! arbitrary-size `candid::Nat` / `candid::Int`.

use candid::{Int, Nat};

/// Unsigned LEB128 encoding of `n` (7 bits per byte, least significant group
/// first, high bit set on every byte but the last). `0` encodes as `[0x00]`.
pub fn leb128_u64(mut n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Signed LEB128 (SLEB128) encoding of `n`: two's complement, 7 bits per byte,
/// the shortest form whose last group's bit 6 carries the sign.
pub fn sleb128_i64(mut n: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7; // arithmetic shift keeps the sign
        let sign_bit_clear = byte & 0x40 == 0;
        if (n == 0 && sign_bit_clear) || (n == -1 && !sign_bit_clear) {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Unsigned LEB128 encoding of an arbitrary-size natural number.
pub fn leb128_nat(n: &Nat) -> Vec<u8> {
    let bytes = n.0.to_bytes_le();
    let groups = match highest_bit_differing(&bytes, 0) {
        None => 1,
        Some(h) => h / 7 + 1,
    };
    pack_groups(&bytes, 0, groups)
}

/// Signed LEB128 (SLEB128) encoding of an arbitrary-size integer.
pub fn sleb128_int(n: &Int) -> Vec<u8> {
    // Minimal two's complement, little endian: the top bit of the last byte is the sign.
    let bytes = n.0.to_signed_bytes_le();
    let fill = match bytes.last() {
        Some(last) if last & 0x80 != 0 => 0xff,
        _ => 0x00,
    };
    // The last group's bit 6 (absolute bit 7*groups - 1) must be a pure sign bit,
    // i.e. lie above the highest bit that differs from the sign.
    let groups = match highest_bit_differing(&bytes, fill) {
        None => 1,
        Some(h) => (h + 2).div_ceil(7),
    };
    pack_groups(&bytes, fill, groups)
}

/// Index of the highest bit of the little-endian `bytes` that differs from `fill`
/// (`0x00` or `0xff`), or `None` when every bit equals the fill.
fn highest_bit_differing(bytes: &[u8], fill: u8) -> Option<usize> {
    bytes
        .iter()
        .enumerate()
        .rev()
        .find(|(_, b)| **b != fill)
        .map(|(i, b)| i * 8 + (7 - (b ^ fill).leading_zeros() as usize))
}

/// Cuts the little-endian `bytes` (extended with `fill` beyond their end) into
/// `groups` 7-bit groups, setting the continuation bit on all but the last.
fn pack_groups(bytes: &[u8], fill: u8, groups: usize) -> Vec<u8> {
    let bit = |i: usize| -> u8 { (bytes.get(i / 8).copied().unwrap_or(fill) >> (i % 8)) & 1 };
    (0..groups)
        .map(|g| {
            let mut byte = (0..7).fold(0u8, |acc, j| acc | (bit(g * 7 + j) << j));
            if g + 1 < groups {
                byte |= 0x80;
            }
            byte
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn candid_nat(n: &Nat) -> Vec<u8> {
        let mut out = Vec::new();
        n.encode(&mut out).unwrap();
        out
    }

    fn candid_int(n: &Int) -> Vec<u8> {
        let mut out = Vec::new();
        n.encode(&mut out).unwrap();
        out
    }

    #[test]
    fn known_unsigned() {
        assert_eq!(leb128_u64(0), [0x00]);
        assert_eq!(leb128_u64(42), [0x2a]);
        assert_eq!(leb128_u64(127), [0x7f]);
        assert_eq!(leb128_u64(128), [0x80, 0x01]);
        assert_eq!(leb128_u64(624_485), [0xe5, 0x8e, 0x26]);
        assert_eq!(
            leb128_u64(u64::MAX),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        assert_eq!(leb128_nat(&Nat::from(0u8)), [0x00]);
        assert_eq!(leb128_nat(&Nat::from(624_485u64)), [0xe5, 0x8e, 0x26]);
    }

    #[test]
    fn known_signed() {
        assert_eq!(sleb128_i64(0), [0x00]);
        assert_eq!(sleb128_i64(-1), [0x7f]);
        assert_eq!(sleb128_i64(42), [0x2a]);
        assert_eq!(sleb128_i64(-42), [0x56]);
        assert_eq!(sleb128_i64(63), [0x3f]);
        assert_eq!(sleb128_i64(64), [0xc0, 0x00]);
        assert_eq!(sleb128_i64(-64), [0x40]);
        assert_eq!(sleb128_i64(-65), [0xbf, 0x7f]);
        assert_eq!(sleb128_i64(-123_456), [0xc0, 0xbb, 0x78]);
        for n in [
            0i64,
            -1,
            42,
            -42,
            63,
            64,
            -64,
            -65,
            -123_456,
            i64::MIN,
            i64::MAX,
        ] {
            assert_eq!(sleb128_int(&Int::from(n)), sleb128_i64(n), "{n}");
        }
    }

    #[test]
    fn big_values_match_candid() {
        let big = Nat::from_str("340282366920938463463374607431768211456123456789").unwrap();
        assert_eq!(leb128_nat(&big), candid_nat(&big));
        let neg = Int::from_str("-340282366920938463463374607431768211456123456789").unwrap();
        assert_eq!(sleb128_int(&neg), candid_int(&neg));
    }

    proptest! {
        #[test]
        fn u64_matches_nat_and_candid(n in any::<u64>()) {
            prop_assert_eq!(leb128_u64(n), leb128_nat(&Nat::from(n)));
            prop_assert_eq!(leb128_u64(n), candid_nat(&Nat::from(n)));
        }

        #[test]
        fn i64_matches_int_and_candid(n in any::<i64>()) {
            prop_assert_eq!(sleb128_i64(n), sleb128_int(&Int::from(n)));
            prop_assert_eq!(sleb128_i64(n), candid_int(&Int::from(n)));
        }

        #[test]
        fn bignums_match_candid(digits in "[0-9]{1,80}", negative in any::<bool>()) {
            let n = Nat::from_str(&digits).unwrap();
            prop_assert_eq!(leb128_nat(&n), candid_nat(&n));
            let s = if negative { format!("-{digits}") } else { digits.clone() };
            let i = Int::from_str(&s).unwrap();
            prop_assert_eq!(sleb128_int(&i), candid_int(&i));
        }
    }
}
