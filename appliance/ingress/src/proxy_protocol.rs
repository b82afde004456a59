//! The PROXY protocol version 2 header (haproxy.org proxy-protocol.txt §2.2),
//! binary form, for TCP over IPv4 or IPv6: it tells the VM the client's
//! address, which it would otherwise see as the ingress's.

use std::net::{IpAddr, SocketAddr};

/// The 12-byte signature that opens every v2 header.
pub const PROXY_V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest header this module writes (TCP over IPv6: 16 + 36 bytes).
pub const PROXY_V2_MAX_LEN: usize = 16 + 36;

/// Version 2, command PROXY.
const VERSION_COMMAND_PROXY: u8 = 0x21;
/// AF_INET, STREAM.
const TCP_OVER_IPV4: u8 = 0x11;
/// AF_INET6, STREAM.
const TCP_OVER_IPV6: u8 = 0x21;

/// An encoded header, kept inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyV2Header {
    bytes: [u8; PROXY_V2_MAX_LEN],
    len: usize,
}

impl ProxyV2Header {
    /// The header's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The header for a TCP connection from `source` (the client) to
/// `destination` (the address the client connected to). IPv4-mapped IPv6
/// addresses (a dual-stack listener's view of IPv4 clients) are written as
/// IPv4 when both ends are IPv4; a mixed pair is written as IPv6.
pub fn proxy_v2_header(source: SocketAddr, destination: SocketAddr) -> ProxyV2Header {
    let mut bytes = [0u8; PROXY_V2_MAX_LEN];
    bytes[..12].copy_from_slice(&PROXY_V2_SIGNATURE);
    bytes[12] = VERSION_COMMAND_PROXY;
    let (src, dst) = (unmap(source.ip()), unmap(destination.ip()));
    let len = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            bytes[13] = TCP_OVER_IPV4;
            bytes[14..16].copy_from_slice(&12u16.to_be_bytes());
            bytes[16..20].copy_from_slice(&s.octets());
            bytes[20..24].copy_from_slice(&d.octets());
            bytes[24..26].copy_from_slice(&source.port().to_be_bytes());
            bytes[26..28].copy_from_slice(&destination.port().to_be_bytes());
            28
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            bytes[13] = TCP_OVER_IPV6;
            bytes[14..16].copy_from_slice(&36u16.to_be_bytes());
            bytes[16..32].copy_from_slice(&v6(s).octets());
            bytes[32..48].copy_from_slice(&v6(d).octets());
            bytes[48..50].copy_from_slice(&source.port().to_be_bytes());
            bytes[50..52].copy_from_slice(&destination.port().to_be_bytes());
            52
        }
    };
    ProxyV2Header { bytes, len }
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_byte_for_byte() {
        let h = proxy_v2_header(
            "192.0.2.10:51000".parse().unwrap(),
            "[::ffff:198.51.100.1]:443".parse().unwrap(),
        );
        let mut want = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a".to_vec();
        want.extend([0x21, 0x11, 0, 12]);
        want.extend([192, 0, 2, 10, 198, 51, 100, 1]);
        want.extend([0xc7, 0x38, 0x01, 0xbb]);
        assert_eq!(h.as_bytes(), want);
    }

    #[test]
    fn ipv6_and_mixed_headers() {
        let h = proxy_v2_header(
            "[2001:db8::1]:1".parse().unwrap(),
            "[2001:db8::2]:2".parse().unwrap(),
        );
        let b = h.as_bytes();
        assert_eq!(b.len(), 52);
        assert_eq!(&b[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(b[31], 1);
        assert_eq!(b[47], 2);
        assert_eq!(&b[48..], &[0, 1, 0, 2]);
        let mixed = proxy_v2_header(
            "192.0.2.1:5".parse().unwrap(),
            "[2001:db8::2]:6".parse().unwrap(),
        );
        let b = mixed.as_bytes();
        assert_eq!(b[13], 0x21);
        assert_eq!(
            &b[16..32],
            &"::ffff:192.0.2.1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
    }
}
