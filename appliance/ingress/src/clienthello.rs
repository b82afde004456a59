//! The TLS ClientHello, read just far enough to route on: server name, ALPN,
//! and whether ECH is offered.
//!
//! The parser is pure and incremental: give it whatever bytes arrived so far
//! and it answers [`HelloError::Incomplete`] with a lower bound on the bytes
//! still missing, a verdict, or the parsed hello. It reassembles a ClientHello
//! split over several TLS records (RFC 8446 §5.1 allows any fragmentation),
//! and bounds the bytes it will wait for ([`DEFAULT_MAX_CLIENT_HELLO_BYTES`],
//! counted on the wire, record headers included, so that one-byte records
//! cannot stretch the bound). It allocates only when a hello spans records.
//!
//! Strictness is deliberate: anything a TLS server would not take as one
//! clean ClientHello (SSLv2-style hellos, a first record that is not a
//! handshake, other handshake messages, duplicate extensions, two host names,
//! a name that is not a DNS name, bytes after the hello in its record) is an
//! error, because a proxy that reads a message differently from the server
//! behind it is a proxy that can be made to route one tenant's name to
//! another's VM.

use std::borrow::Cow;
use std::ops::Range;

use crate::name::{HostName, NameError};

/// Default bound on the bytes of a ClientHello on the wire (records and their
/// headers). Real hellos are 0.3 to 2 KiB, a little more with post-quantum key
/// shares; 16 KiB leaves room for large session tickets.
pub const DEFAULT_MAX_CLIENT_HELLO_BYTES: usize = 16 * 1024;

/// `server_name` (RFC 6066 §3).
pub const EXT_SERVER_NAME: u16 = 0;
/// `application_layer_protocol_negotiation` (RFC 7301).
pub const EXT_ALPN: u16 = 16;
/// `encrypted_client_hello` (RFC 9849).
pub const EXT_ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;

const RECORD_HEADER_LEN: usize = 5;
const MAX_RECORD_PAYLOAD: usize = 1 << 14;
const CONTENT_TYPE_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const HANDSHAKE_HEADER_LEN: usize = 4;
const SNI_TYPE_HOST_NAME: u8 = 0;

/// Why bytes are not (yet) a routable ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// Well-formed so far; at least `needed` more bytes are required.
    #[error("incomplete ClientHello: at least {needed} more bytes needed")]
    Incomplete { needed: usize },
    /// An SSLv2-style hello (high bit of the first byte set); never routed.
    #[error("SSLv2-style hello (first byte {first_byte:#04x}), expected a TLS handshake record")]
    Sslv2 { first_byte: u8 },
    /// A record that is not a handshake record (22) where the hello should be.
    #[error("TLS record of content type {content_type}, expected 22 (handshake)")]
    NotHandshake { content_type: u8 },
    /// A record header whose major version is not 3.
    #[error("TLS record version {major}.{minor}, expected 3.x")]
    BadRecordVersion { major: u8, minor: u8 },
    /// A handshake message other than ClientHello (1).
    #[error("handshake message type {msg_type}, expected 1 (ClientHello)")]
    NotClientHello { msg_type: u8 },
    /// The hello would take more than `limit` bytes on the wire.
    #[error("ClientHello needs at least {needed} bytes on the wire, the limit is {limit}")]
    TooLarge { needed: usize, limit: usize },
    /// A length or field that does not fit the TLS 1.x grammar.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    /// The same extension type twice (RFC 8446 §4.2 forbids it).
    #[error("ClientHello extension {0:#06x} appears more than once")]
    DuplicateExtension(u16),
    /// More than one `host_name` in `server_name` (RFC 6066 §3 forbids it).
    #[error("server_name lists more than one host_name")]
    MultipleHostNames,
    /// The `host_name` is not a DNS host name.
    #[error("server_name is not a host name: {0}")]
    InvalidServerName(NameError),
}

/// A parsed ClientHello. Borrows the input when the hello sits in one record.
#[derive(Debug, Clone)]
pub struct ClientHello<'a> {
    /// The handshake message, header included.
    message: Cow<'a, [u8]>,
    wire_len: usize,
    legacy_version: u16,
    server_name: Option<HostName>,
    alpn_list: Option<Range<usize>>,
    offers_ech: bool,
}

impl<'a> ClientHello<'a> {
    /// The `host_name` of the `server_name` extension, normalised; `None` when
    /// the client sent none.
    pub fn server_name(&self) -> Option<&HostName> {
        self.server_name.as_ref()
    }

    /// Whether the hello carries `encrypted_client_hello`. When it does, the
    /// visible server name may be the ECH public name rather than the name
    /// the client wants, or the real name with a GREASE extension: a proxy
    /// cannot tell which (RFC 9849 §6.2 makes them look alike on purpose).
    pub fn offers_ech(&self) -> bool {
        self.offers_ech
    }

    /// The ALPN protocol names offered, in the client's order.
    pub fn alpn_protocols(&self) -> AlpnProtocols<'_> {
        let list = match &self.alpn_list {
            Some(range) => self.message.get(range.clone()).unwrap_or(&[]),
            None => &[],
        };
        AlpnProtocols { rest: list }
    }

    /// Bytes of the input taken by the records that carry the hello; bytes
    /// after them (early data, a compatibility ChangeCipherSpec) belong to the
    /// connection and must be forwarded too.
    pub fn wire_len(&self) -> usize {
        self.wire_len
    }

    /// `legacy_version` of the hello (0x0303 for TLS 1.2 and 1.3).
    pub fn legacy_version(&self) -> u16 {
        self.legacy_version
    }
}

/// Iterator over ALPN protocol names (never empty slices).
#[derive(Debug, Clone)]
pub struct AlpnProtocols<'h> {
    rest: &'h [u8],
}

impl<'h> Iterator for AlpnProtocols<'h> {
    type Item = &'h [u8];

    fn next(&mut self) -> Option<&'h [u8]> {
        let (&len, tail) = self.rest.split_first()?;
        let len = usize::from(len);
        if len == 0 || tail.len() < len {
            // Validated at parse time; stop rather than trust it twice.
            self.rest = &[];
            return None;
        }
        let (name, tail) = tail.split_at(len);
        self.rest = tail;
        Some(name)
    }
}

/// [`parse_client_hello_with_limit`] with [`DEFAULT_MAX_CLIENT_HELLO_BYTES`].
pub fn parse_client_hello(buf: &[u8]) -> Result<ClientHello<'_>, HelloError> {
    parse_client_hello_with_limit(buf, DEFAULT_MAX_CLIENT_HELLO_BYTES)
}

/// Parses the ClientHello at the start of `buf`, the bytes a client sent so
/// far. `limit` bounds the hello's bytes on the wire, record headers included.
pub fn parse_client_hello_with_limit(
    buf: &[u8],
    limit: usize,
) -> Result<ClientHello<'_>, HelloError> {
    let Some(&first) = buf.first() else {
        return Err(HelloError::Incomplete {
            needed: RECORD_HEADER_LEN,
        });
    };
    if first & 0x80 != 0 {
        return Err(HelloError::Sslv2 { first_byte: first });
    }
    if first != CONTENT_TYPE_HANDSHAKE {
        return Err(HelloError::NotHandshake {
            content_type: first,
        });
    }

    // Walk the records until they hold the whole handshake message.
    let mut offset = 0;
    let mut records = 0usize;
    let mut collected = 0usize;
    let mut message_len: Option<usize> = None;
    loop {
        if offset + RECORD_HEADER_LEN > limit {
            return Err(HelloError::TooLarge {
                needed: offset + RECORD_HEADER_LEN,
                limit,
            });
        }
        let Some(header) = buf.get(offset..offset + RECORD_HEADER_LEN) else {
            if let Some(&content_type) = buf.get(offset) {
                if content_type != CONTENT_TYPE_HANDSHAKE {
                    return Err(HelloError::NotHandshake { content_type });
                }
            }
            return Err(HelloError::Incomplete {
                needed: offset + RECORD_HEADER_LEN - buf.len(),
            });
        };
        if header[0] != CONTENT_TYPE_HANDSHAKE {
            return Err(HelloError::NotHandshake {
                content_type: header[0],
            });
        }
        if header[1] != 3 {
            return Err(HelloError::BadRecordVersion {
                major: header[1],
                minor: header[2],
            });
        }
        let payload_len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if payload_len == 0 {
            return Err(HelloError::Malformed("empty handshake record"));
        }
        if payload_len > MAX_RECORD_PAYLOAD {
            return Err(HelloError::Malformed("record longer than 2^14 bytes"));
        }
        let end = offset + RECORD_HEADER_LEN + payload_len;
        if end > limit {
            return Err(HelloError::TooLarge { needed: end, limit });
        }
        records += 1;
        if records == 1 {
            // Judge the message type and declared length as soon as they are
            // here, so that a wrong or huge message is refused without waiting.
            let start = RECORD_HEADER_LEN;
            let available = buf.get(start..end.min(buf.len())).unwrap_or(&[]);
            if let Some(&msg_type) = available.first() {
                if msg_type != HANDSHAKE_CLIENT_HELLO {
                    return Err(HelloError::NotClientHello { msg_type });
                }
            }
            if available.len() >= HANDSHAKE_HEADER_LEN {
                let total = HANDSHAKE_HEADER_LEN + u24(&available[1..4]);
                if RECORD_HEADER_LEN + total > limit {
                    return Err(HelloError::TooLarge {
                        needed: RECORD_HEADER_LEN + total,
                        limit,
                    });
                }
                message_len = Some(total);
            }
        }
        if end > buf.len() {
            return Err(HelloError::Incomplete {
                needed: end - buf.len(),
            });
        }
        collected += payload_len;
        if message_len.is_none() && collected >= HANDSHAKE_HEADER_LEN {
            // The 4-byte handshake header itself was split over records.
            let head = gather(buf, end, HANDSHAKE_HEADER_LEN);
            if head[0] != HANDSHAKE_CLIENT_HELLO {
                return Err(HelloError::NotClientHello { msg_type: head[0] });
            }
            message_len = Some(HANDSHAKE_HEADER_LEN + u24(&head[1..4]));
        }
        offset = end;
        if let Some(total) = message_len {
            if collected > total {
                return Err(HelloError::Malformed(
                    "bytes after the ClientHello in its record",
                ));
            }
            if collected == total {
                break;
            }
        }
    }
    let total = message_len.unwrap_or(collected);
    let message = if records == 1 {
        Cow::Borrowed(&buf[RECORD_HEADER_LEN..RECORD_HEADER_LEN + total])
    } else {
        Cow::Owned(gather(buf, offset, total))
    };
    parse_message(message, offset)
}

/// Copies the first `want` payload bytes of the records in `buf[..end]`.
fn gather(buf: &[u8], end: usize, want: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(want);
    let mut offset = 0;
    while offset + RECORD_HEADER_LEN <= end && out.len() < want {
        let len = usize::from(u16::from_be_bytes([buf[offset + 3], buf[offset + 4]]));
        let payload = &buf[offset + RECORD_HEADER_LEN..offset + RECORD_HEADER_LEN + len];
        let take = payload.len().min(want - out.len());
        out.extend_from_slice(&payload[..take]);
        offset += RECORD_HEADER_LEN + len;
    }
    out
}

fn u24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

/// Reads big-endian, length-prefixed TLS fields, tracking its position in the message.
struct Reader<'m> {
    data: &'m [u8],
    pos: usize,
    end: usize,
}

impl<'m> Reader<'m> {
    fn new(data: &'m [u8], range: Range<usize>) -> Self {
        Reader {
            data,
            pos: range.start,
            end: range.end,
        }
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<Range<usize>, HelloError> {
        if self.end - self.pos < n {
            return Err(HelloError::Malformed(what));
        }
        let range = self.pos..self.pos + n;
        self.pos += n;
        Ok(range)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, HelloError> {
        let r = self.take(1, what)?;
        Ok(self.data[r.start])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, HelloError> {
        let r = self.take(2, what)?;
        Ok(u16::from_be_bytes([
            self.data[r.start],
            self.data[r.start + 1],
        ]))
    }

    fn vec8(&mut self, what: &'static str) -> Result<Range<usize>, HelloError> {
        let len = self.u8(what)?;
        self.take(usize::from(len), what)
    }

    fn vec16(&mut self, what: &'static str) -> Result<Range<usize>, HelloError> {
        let len = self.u16(what)?;
        self.take(usize::from(len), what)
    }
}

fn parse_message(message: Cow<'_, [u8]>, wire_len: usize) -> Result<ClientHello<'_>, HelloError> {
    let m: &[u8] = &message;
    let mut r = Reader::new(m, HANDSHAKE_HEADER_LEN..m.len());
    let legacy_version = r.u16("truncated legacy_version")?;
    r.take(32, "truncated random")?;
    let session_id = r.vec8("truncated legacy_session_id")?;
    if session_id.len() > 32 {
        return Err(HelloError::Malformed(
            "legacy_session_id longer than 32 bytes",
        ));
    }
    let suites = r.vec16("truncated cipher_suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(HelloError::Malformed(
            "cipher_suites empty or of odd length",
        ));
    }
    let compression = r.vec8("truncated legacy_compression_methods")?;
    if compression.is_empty() {
        return Err(HelloError::Malformed("no compression methods"));
    }
    let mut server_name = None;
    let mut alpn_list = None;
    let mut offers_ech = false;
    if !r.is_empty() {
        let extensions = r.vec16("truncated extensions")?;
        if !r.is_empty() {
            return Err(HelloError::Malformed("bytes after the extensions"));
        }
        // One bit per extension type: duplicate detection in constant time
        // whatever the number of extensions a client sends.
        let mut seen = [0u64; 1024];
        let mut e = Reader::new(m, extensions);
        while !e.is_empty() {
            let ext_type = e.u16("truncated extension type")?;
            let body = e.vec16("truncated extension body")?;
            let (word, bit) = (usize::from(ext_type / 64), ext_type % 64);
            if seen[word] & (1 << bit) != 0 {
                return Err(HelloError::DuplicateExtension(ext_type));
            }
            seen[word] |= 1 << bit;
            match ext_type {
                EXT_SERVER_NAME => server_name = parse_server_name(m, body)?,
                EXT_ALPN => alpn_list = Some(parse_alpn(m, body)?),
                EXT_ENCRYPTED_CLIENT_HELLO => offers_ech = true,
                _ => {}
            }
        }
    }
    Ok(ClientHello {
        message,
        wire_len,
        legacy_version,
        server_name,
        alpn_list,
        offers_ech,
    })
}

fn parse_server_name(m: &[u8], body: Range<usize>) -> Result<Option<HostName>, HelloError> {
    let mut r = Reader::new(m, body);
    let list = r.vec16("truncated server_name list")?;
    if !r.is_empty() {
        return Err(HelloError::Malformed("bytes after the server_name list"));
    }
    if list.is_empty() {
        return Err(HelloError::Malformed("empty server_name list"));
    }
    let mut host = None;
    let mut l = Reader::new(m, list);
    while !l.is_empty() {
        let name_type = l.u8("truncated server_name entry")?;
        let name = l.vec16("truncated server_name entry")?;
        // RFC 6066 §3 defines host_name only; other types are skipped.
        if name_type == SNI_TYPE_HOST_NAME {
            if host.is_some() {
                return Err(HelloError::MultipleHostNames);
            }
            host = Some(HostName::from_bytes(&m[name]).map_err(HelloError::InvalidServerName)?);
        }
    }
    Ok(host)
}

fn parse_alpn(m: &[u8], body: Range<usize>) -> Result<Range<usize>, HelloError> {
    let mut r = Reader::new(m, body);
    let list = r.vec16("truncated ALPN list")?;
    if !r.is_empty() {
        return Err(HelloError::Malformed("bytes after the ALPN list"));
    }
    if list.is_empty() {
        return Err(HelloError::Malformed("empty ALPN list"));
    }
    let mut l = Reader::new(m, list.clone());
    while !l.is_empty() {
        if l.vec8("truncated ALPN protocol name")?.is_empty() {
            return Err(HelloError::Malformed("empty ALPN protocol name"));
        }
    }
    Ok(list)
}

/// Fuzz target body: parses `data` under two limits and checks the parser's
/// promises (never panics; a parsed hello lies within the input and the limit;
/// every prefix of it is `Incomplete` with a truthful lower bound; names are
/// normalised; ALPN names are non-empty). Panics only when a promise breaks.
pub fn fuzz_client_hello(data: &[u8]) {
    for limit in [DEFAULT_MAX_CLIENT_HELLO_BYTES, 512] {
        match parse_client_hello_with_limit(data, limit) {
            Ok(hello) => {
                let wire_len = hello.wire_len();
                assert!(wire_len <= data.len() && wire_len <= limit);
                if let Some(name) = hello.server_name() {
                    assert_eq!(HostName::parse(name.as_str()).as_ref(), Ok(name));
                }
                assert!(hello.alpn_protocols().all(|p| !p.is_empty()));
                for cut in [0, 1, wire_len / 2, wire_len - 1] {
                    match parse_client_hello_with_limit(&data[..cut], limit) {
                        Err(HelloError::Incomplete { needed }) => {
                            assert!(needed > 0 && cut + needed <= wire_len)
                        }
                        other => panic!("prefix of {cut} bytes: {other:?}"),
                    }
                }
            }
            Err(HelloError::Incomplete { needed }) => assert!(needed > 0),
            Err(_) => {}
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a ClientHello handshake message with the given extensions.
    pub(crate) fn message(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(0); // session id
        body.extend([0, 2, 0x13, 0x01]); // one cipher suite
        body.extend([1, 0]); // null compression
        let mut ext = Vec::new();
        for (ty, data) in extensions {
            ext.extend(ty.to_be_bytes());
            ext.extend((data.len() as u16).to_be_bytes());
            ext.extend(data);
        }
        body.extend((ext.len() as u16).to_be_bytes());
        body.extend(ext);
        let mut msg = vec![1];
        msg.extend(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend(body);
        msg
    }

    /// Wraps a handshake message in records of at most `chunk` bytes each.
    pub(crate) fn records(message: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for part in message.chunks(chunk) {
            out.extend([22, 3, 1]);
            out.extend((part.len() as u16).to_be_bytes());
            out.extend(part);
        }
        out
    }

    pub(crate) fn sni(names: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (ty, name) in names {
            list.push(*ty);
            list.extend((name.len() as u16).to_be_bytes());
            list.extend(*name);
        }
        let mut out = (list.len() as u16).to_be_bytes().to_vec();
        out.extend(list);
        out
    }

    fn alpn(protocols: &[&[u8]]) -> Vec<u8> {
        let mut list = Vec::new();
        for p in protocols {
            list.push(p.len() as u8);
            list.extend(*p);
        }
        let mut out = (list.len() as u16).to_be_bytes().to_vec();
        out.extend(list);
        out
    }

    #[test]
    fn reads_name_alpn_and_ech() {
        let msg = message(&[
            (EXT_SERVER_NAME, sni(&[(0, b"Shop.Example.ORG")])),
            (EXT_ALPN, alpn(&[b"h2", b"http/1.1"])),
            (EXT_ENCRYPTED_CLIENT_HELLO, vec![0, 1, 2]),
        ]);
        let wire = records(&msg, 1 << 14);
        let hello = parse_client_hello(&wire).unwrap();
        assert_eq!(hello.server_name().unwrap().as_str(), "shop.example.org");
        let protocols: Vec<&[u8]> = hello.alpn_protocols().collect();
        assert_eq!(protocols, vec![&b"h2"[..], &b"http/1.1"[..]]);
        assert!(hello.offers_ech());
        assert_eq!(hello.wire_len(), wire.len());
        assert_eq!(hello.legacy_version(), 0x0303);
    }

    #[test]
    fn reassembles_a_hello_split_over_records_and_keeps_what_follows() {
        let msg = message(&[(EXT_SERVER_NAME, sni(&[(0, b"a.example")]))]);
        for chunk in [1, 2, 3, 4, 5, 17, msg.len() - 1] {
            let mut wire = records(&msg, chunk);
            let hello_len = wire.len();
            // A ChangeCipherSpec record after the hello is not the parser's business.
            wire.extend([20, 3, 3, 0, 1, 1]);
            let hello = parse_client_hello(&wire).unwrap();
            assert_eq!(
                hello.server_name().unwrap().as_str(),
                "a.example",
                "chunk {chunk}"
            );
            assert_eq!(hello.wire_len(), hello_len);
            for cut in 0..hello_len {
                match parse_client_hello(&wire[..cut]) {
                    Err(HelloError::Incomplete { needed }) => {
                        assert!(
                            needed > 0 && cut + needed <= hello_len,
                            "chunk {chunk} cut {cut}"
                        )
                    }
                    other => panic!("chunk {chunk} cut {cut}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn missing_sni_is_not_an_error_but_has_no_name() {
        let hello_bytes = records(&message(&[(EXT_ALPN, alpn(&[b"h2"]))]), 1 << 14);
        let hello = parse_client_hello(&hello_bytes).unwrap();
        assert!(hello.server_name().is_none());
        // Unknown name types are skipped; no host_name means no name.
        let other_type = records(&message(&[(EXT_SERVER_NAME, sni(&[(7, b"x")]))]), 1 << 14);
        assert!(parse_client_hello(&other_type)
            .unwrap()
            .server_name()
            .is_none());
        // A hello without any extensions block (TLS 1.0 style) has no name either.
        let mut bare = message(&[]);
        bare.truncate(bare.len() - 2);
        let len = (bare.len() - 4) as u32;
        bare[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
        assert!(parse_client_hello(&records(&bare, 1 << 14))
            .unwrap()
            .server_name()
            .is_none());
    }

    #[test]
    fn refuses_what_a_server_would_not_read_as_one_hello() {
        let good = message(&[(EXT_SERVER_NAME, sni(&[(0, b"a.example")]))]);
        let wire = records(&good, 1 << 14);

        let mut sslv2 = wire.clone();
        sslv2[0] = 0x80;
        assert_eq!(
            parse_client_hello(&sslv2).unwrap_err(),
            HelloError::Sslv2 { first_byte: 0x80 }
        );
        assert_eq!(
            parse_client_hello(b"GET / HTTP/1.1\r\n").unwrap_err(),
            HelloError::NotHandshake { content_type: b'G' }
        );
        let mut v2 = wire.clone();
        v2[1] = 2;
        assert!(matches!(
            parse_client_hello(&v2),
            Err(HelloError::BadRecordVersion { major: 2, .. })
        ));
        let mut server_hello = wire.clone();
        server_hello[5] = 2;
        assert_eq!(
            parse_client_hello(&server_hello).unwrap_err(),
            HelloError::NotClientHello { msg_type: 2 }
        );
        // Already refused from the first byte of the message.
        assert_eq!(
            parse_client_hello(&server_hello[..6]).unwrap_err(),
            HelloError::NotClientHello { msg_type: 2 }
        );
        // An alert record in the middle of a fragmented hello.
        let mut split = records(&good, 10);
        split[15] = 21;
        assert_eq!(
            parse_client_hello(&split).unwrap_err(),
            HelloError::NotHandshake { content_type: 21 }
        );
        // Bytes after the hello inside its record.
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            parse_client_hello(&records(&trailing, 1 << 14)),
            Err(HelloError::Malformed(_))
        ));
        assert!(matches!(
            parse_client_hello(&[22, 3, 1, 0, 0]),
            Err(HelloError::Malformed(_))
        ));
        assert!(matches!(
            parse_client_hello(&[22, 3, 1, 0x40, 1]),
            Err(HelloError::Malformed(_))
        ));

        let dup = message(&[
            (EXT_SERVER_NAME, sni(&[(0, b"a.example")])),
            (EXT_SERVER_NAME, sni(&[(0, b"b.example")])),
        ]);
        assert_eq!(
            parse_client_hello(&records(&dup, 1 << 14)).unwrap_err(),
            HelloError::DuplicateExtension(0)
        );
        let dup_other = message(&[(0xfe0d, vec![]), (0x1234, vec![]), (0xfe0d, vec![1])]);
        assert_eq!(
            parse_client_hello(&records(&dup_other, 1 << 14)).unwrap_err(),
            HelloError::DuplicateExtension(0xfe0d)
        );
        let two_names = message(&[(
            EXT_SERVER_NAME,
            sni(&[(0, b"a.example"), (0, b"b.example")]),
        )]);
        assert_eq!(
            parse_client_hello(&records(&two_names, 1 << 14)).unwrap_err(),
            HelloError::MultipleHostNames
        );
        let bad_name = message(&[(EXT_SERVER_NAME, sni(&[(0, b"a.example\0.evil")]))]);
        assert_eq!(
            parse_client_hello(&records(&bad_name, 1 << 14)).unwrap_err(),
            HelloError::InvalidServerName(NameError::BadByte { byte: 0 })
        );
        let ip = message(&[(EXT_SERVER_NAME, sni(&[(0, b"192.0.2.1")]))]);
        assert_eq!(
            parse_client_hello(&records(&ip, 1 << 14)).unwrap_err(),
            HelloError::InvalidServerName(NameError::NumericTopLabel)
        );
        let empty_list = message(&[(EXT_SERVER_NAME, vec![0, 0])]);
        assert!(matches!(
            parse_client_hello(&records(&empty_list, 1 << 14)),
            Err(HelloError::Malformed(_))
        ));
        let empty_ext = message(&[(EXT_SERVER_NAME, vec![])]);
        assert!(matches!(
            parse_client_hello(&records(&empty_ext, 1 << 14)),
            Err(HelloError::Malformed(_))
        ));
        let empty_alpn = message(&[(EXT_ALPN, alpn(&[b""]))]);
        assert!(matches!(
            parse_client_hello(&records(&empty_alpn, 1 << 14)),
            Err(HelloError::Malformed(_))
        ));
    }

    #[test]
    fn bounds_the_bytes_it_waits_for() {
        let big = message(&[
            (EXT_SERVER_NAME, sni(&[(0, b"a.example")])),
            (0x5555, vec![0; 3000]),
        ]);
        let wire = records(&big, 1 << 14);
        assert!(parse_client_hello_with_limit(&wire, 4096).is_ok());
        // Refused from the record header alone, before the body arrives.
        assert!(matches!(
            parse_client_hello_with_limit(&wire[..5], 1024),
            Err(HelloError::TooLarge { limit: 1024, .. })
        ));
        // One-byte records: the headers count against the limit.
        let fragmented = records(&big, 1);
        assert!(matches!(
            parse_client_hello_with_limit(&fragmented, 16 * 1024),
            Err(HelloError::TooLarge { .. })
        ));
        // A declared message length beyond the limit is refused from its header.
        let mut huge = vec![22, 3, 1, 0x40, 0, 1, 0xff, 0xff, 0xff];
        huge.resize(64, 0);
        assert!(matches!(
            parse_client_hello(&huge),
            Err(HelloError::TooLarge { .. })
        ));
    }
}
