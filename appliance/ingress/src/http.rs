//! The head of a plain HTTP/1.x request, read just far enough to route on
//! its Host.
//!
//! Like the ClientHello parser this is pure, incremental and strict: the
//! whole head (up to the empty line, bounded by [`DEFAULT_MAX_HTTP_HEAD_BYTES`])
//! must arrive and parse as RFC 9112 says before a name is returned. Anything
//! two parsers could read differently is refused rather than guessed at: bare
//! LF line ends, obs-fold continuation lines, whitespace before a header's
//! colon, a second Host, an absolute-form target whose authority differs from
//! Host, CONNECT, userinfo, IP literals, HTTP/2 prior knowledge (no Host at
//! all) and versions other than 1.0 and 1.1.
//!
//! The whole connection goes to the VM that owns the first request's Host; a
//! later request on the same connection naming another host reaches that same
//! VM, never another tenant's, so keep-alive cannot cross tenants.

use crate::name::{HostName, NameError};

/// Default bound on a request head (request line and headers).
pub const DEFAULT_MAX_HTTP_HEAD_BYTES: usize = 8 * 1024;

/// Why bytes are not (yet) a routable request head.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// Well-formed so far, but the empty line ending the head has not arrived.
    #[error("incomplete request head")]
    Incomplete,
    /// No end of head within `limit` bytes.
    #[error("request head longer than {limit} bytes")]
    TooLarge { limit: usize },
    /// Not HTTP/1.x request syntax.
    #[error("malformed request head: {0}")]
    Malformed(&'static str),
    /// A version other than HTTP/1.0 and HTTP/1.1 (HTTP/2 prior knowledge included).
    #[error("unsupported HTTP version, expected HTTP/1.0 or HTTP/1.1")]
    UnsupportedVersion,
    /// CONNECT or another request with no host to route on.
    #[error("request has no Host to route on")]
    MissingHost,
    /// Two Host header fields (RFC 9112 §3.2 requires a 400).
    #[error("more than one Host header field")]
    DuplicateHost,
    /// A Host (or absolute-form authority) that is not `name[:port]`.
    #[error("Host is not a host name with an optional port: {0}")]
    InvalidHost(&'static str),
    /// The host name in Host is not a DNS host name.
    #[error("Host is not a host name: {0}")]
    InvalidHostName(NameError),
    /// An absolute-form target whose authority is not the Host header's.
    #[error("absolute-form request target names another host than Host")]
    AbsoluteFormMismatch,
}

/// What the router needs from a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The Host header's name, normalised, port removed.
    pub host: HostName,
    /// Bytes of the head, the final empty line included; what follows is body
    /// or the next request and is forwarded untouched.
    pub head_len: usize,
}

/// [`parse_request_head_with_limit`] with [`DEFAULT_MAX_HTTP_HEAD_BYTES`].
pub fn parse_request_head(buf: &[u8]) -> Result<RequestHead, HttpError> {
    parse_request_head_with_limit(buf, DEFAULT_MAX_HTTP_HEAD_BYTES)
}

/// Parses the request head at the start of `buf`, the bytes a client sent so
/// far; at most `limit` bytes are looked at.
pub fn parse_request_head_with_limit(buf: &[u8], limit: usize) -> Result<RequestHead, HttpError> {
    let window = &buf[..buf.len().min(limit)];
    let Some(head_len) = find_head_end(window) else {
        // Refuse early what can never become a request: a method with a byte
        // no token has (a TLS hello sent to port 80, for one).
        precheck_request_line(window)?;
        return Err(if buf.len() >= limit {
            HttpError::TooLarge { limit }
        } else {
            HttpError::Incomplete
        });
    };
    let head = &window[..head_len];
    // Every line, the last header's included, ends in CRLF once the final
    // empty line's CRLF is cut; a bare LF anywhere is refused.
    let mut lines = Lines {
        rest: &head[..head_len - 2],
    };
    let request_line = lines
        .next()
        .ok_or(HttpError::Malformed("empty request line"))??;
    let (method, target) = parse_request_line(request_line)?;

    let mut host: Option<&[u8]> = None;
    for line in lines {
        let line = line?;
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            return Err(HttpError::Malformed("obs-fold continuation line"));
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(HttpError::Malformed("header line without a colon"))?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(HttpError::Malformed("header name is not a token"));
        }
        if !value
            .iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
        {
            return Err(HttpError::Malformed("control byte in a header value"));
        }
        if name.eq_ignore_ascii_case(b"host") {
            if host.is_some() {
                return Err(HttpError::DuplicateHost);
            }
            host = Some(trim_ows(value));
        }
    }

    if method == b"CONNECT" {
        return Err(HttpError::MissingHost);
    }
    let host = parse_authority(host.ok_or(HttpError::MissingHost)?)?;
    match target.first() {
        Some(b'/') => {}
        Some(b'*') if target == b"*" && method == b"OPTIONS" => {}
        _ => {
            // Absolute form: RFC 9112 §3.2.2 has the server use the target's
            // authority and ignore Host, a proxy would use Host: require both
            // to agree so that nobody has to choose.
            let rest = strip_prefix_ignore_case(target, b"http://").ok_or(HttpError::Malformed(
                "request target is neither origin- nor http absolute-form",
            ))?;
            let end = rest
                .iter()
                .position(|&b| matches!(b, b'/' | b'?' | b'#'))
                .unwrap_or(rest.len());
            if parse_authority(&rest[..end])? != host {
                return Err(HttpError::AbsoluteFormMismatch);
            }
        }
    }
    Ok(RequestHead { host, head_len })
}

/// Index just past the first CRLFCRLF, if any.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Lines<'a> {
    type Item = Result<&'a [u8], HttpError>;

    /// Each line, CRLF removed; a line whose LF has no CR before it is an error.
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some(lf) = self.rest.iter().position(|&b| b == b'\n') else {
            self.rest = &[];
            return Some(Err(HttpError::Malformed("line not ended by CRLF")));
        };
        let line = &self.rest[..lf];
        self.rest = &self.rest[lf + 1..];
        Some(match line.split_last() {
            Some((b'\r', text)) => Ok(text),
            _ => Err(HttpError::Malformed("line not ended by CRLF")),
        })
    }
}

fn parse_request_line(line: &[u8]) -> Result<(&[u8], &[u8]), HttpError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed(
            "request line is not `method target version`",
        ));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(HttpError::Malformed("method is not a token"));
    }
    if target.is_empty() || !target.iter().all(|&b| (b'!'..=b'~').contains(&b)) {
        return Err(HttpError::Malformed(
            "request target is empty or has a control byte",
        ));
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Err(HttpError::UnsupportedVersion);
    }
    Ok((method, target))
}

fn precheck_request_line(buf: &[u8]) -> Result<(), HttpError> {
    let method_end = buf.iter().position(|&b| b == b' ').unwrap_or(buf.len());
    if !buf[..method_end].iter().all(|&b| is_tchar(b)) || (method_end == 0 && !buf.is_empty()) {
        return Err(HttpError::Malformed("method is not a token"));
    }
    Ok(())
}

/// `uri-host [ ":" port ]` with a DNS name as host (RFC 9110 §7.2).
fn parse_authority(value: &[u8]) -> Result<HostName, HttpError> {
    if value.is_empty() {
        return Err(HttpError::InvalidHost("empty"));
    }
    if value.contains(&b'@') {
        return Err(HttpError::InvalidHost("userinfo"));
    }
    if value.first() == Some(&b'[') {
        return Err(HttpError::InvalidHost("IP literal"));
    }
    let (name, port) = match value.iter().rposition(|&b| b == b':') {
        Some(colon) => (&value[..colon], &value[colon + 1..]),
        None => (value, &[][..]),
    };
    if port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::InvalidHost("port is not a number"));
    }
    HostName::from_bytes(name).map_err(HttpError::InvalidHostName)
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    if s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Fuzz target body: parses `data` under two limits and checks the parser's
/// promises (never panics; a parsed head lies within the input and the limit
/// and ends with CRLFCRLF; its host is normalised; every prefix of it is
/// incomplete). Panics only when a promise breaks.
pub fn fuzz_http_host(data: &[u8]) {
    for limit in [DEFAULT_MAX_HTTP_HEAD_BYTES, 64] {
        if let Ok(head) = parse_request_head_with_limit(data, limit) {
            assert!(head.head_len <= data.len() && head.head_len <= limit);
            assert!(data[..head.head_len].ends_with(b"\r\n\r\n"));
            assert_eq!(HostName::parse(head.host.as_str()).as_ref(), Ok(&head.host));
            for cut in [0, head.head_len / 2, head.head_len - 1] {
                assert_eq!(
                    parse_request_head_with_limit(&data[..cut], limit),
                    Err(HttpError::Incomplete),
                    "prefix of {cut} bytes"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(req: &str) -> Result<String, HttpError> {
        parse_request_head(req.as_bytes()).map(|h| h.host.as_str().to_owned())
    }

    #[test]
    fn routes_on_host() {
        let req = "GET /.well-known/acme-challenge/x HTTP/1.1\r\nUser-Agent: t\r\nHOST:  Shop.Example.org:80 \r\n\r\nbody";
        let head = parse_request_head(req.as_bytes()).unwrap();
        assert_eq!(head.host.as_str(), "shop.example.org");
        assert_eq!(&req[head.head_len..], "body");
        assert_eq!(
            host_of("GET / HTTP/1.0\r\nHost: a.example.\r\n\r\n").unwrap(),
            "a.example"
        );
        assert_eq!(
            host_of("OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n").unwrap(),
            "a.example"
        );
        assert_eq!(
            host_of("GET / HTTP/1.1\r\nHost: a.example:\r\n\r\n").unwrap(),
            "a.example"
        );
        assert_eq!(
            host_of("GET HTTP://A.example:80/x?y HTTP/1.1\r\nHost: a.example\r\n\r\n").unwrap(),
            "a.example"
        );
    }

    #[test]
    fn waits_for_the_whole_head_within_its_bound() {
        let req = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n";
        for cut in 0..req.len() {
            assert_eq!(
                parse_request_head(&req[..cut]),
                Err(HttpError::Incomplete),
                "cut {cut}"
            );
        }
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(DEFAULT_MAX_HTTP_HEAD_BYTES, b'a');
        assert_eq!(
            parse_request_head(&big),
            Err(HttpError::TooLarge {
                limit: DEFAULT_MAX_HTTP_HEAD_BYTES
            })
        );
        // The end of the head beyond the limit does not count.
        big.extend(b"\r\nHost: a.example\r\n\r\n");
        assert_eq!(
            parse_request_head(&big),
            Err(HttpError::TooLarge {
                limit: DEFAULT_MAX_HTTP_HEAD_BYTES
            })
        );
        // A TLS hello on port 80 is refused from its first byte.
        assert!(matches!(
            parse_request_head(&[22, 3, 1]),
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn refuses_ambiguity() {
        use HttpError::*;
        let cases: &[(&str, HttpError)] = &[
            ("GET / HTTP/1.1\r\n\r\n", MissingHost),
            ("GET / HTTP/1.0\r\n\r\n", MissingHost),
            (
                "GET / HTTP/1.1\r\nHost: a.example\r\nhost: b.example\r\n\r\n",
                DuplicateHost,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a.example\r\n x\r\n\r\n",
                Malformed("obs-fold continuation line"),
            ),
            (
                "GET / HTTP/1.1\r\nHost : a.example\r\n\r\n",
                Malformed("header name is not a token"),
            ),
            (
                "GET / HTTP/1.1\nHost: a.example\r\n\r\n",
                Malformed("line not ended by CRLF"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a.example\n\r\n\r\n",
                Malformed("line not ended by CRLF"),
            ),
            (
                "GET  / HTTP/1.1\r\nHost: a.example\r\n\r\n",
                Malformed("request line is not `method target version`"),
            ),
            (
                "GET / HTTP/2.0\r\nHost: a.example\r\n\r\n",
                UnsupportedVersion,
            ),
            ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", UnsupportedVersion),
            (
                "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
                MissingHost,
            ),
            (
                "GET http://b.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
                AbsoluteFormMismatch,
            ),
            (
                "GET https://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
                Malformed("request target is neither origin- nor http absolute-form"),
            ),
            (
                "GET http://u@a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
                InvalidHost("userinfo"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
                InvalidHost("IP literal"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: 192.0.2.1\r\n\r\n",
                InvalidHostName(NameError::NumericTopLabel),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a.example, b.example\r\n\r\n",
                InvalidHostName(NameError::BadByte { byte: b',' }),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a.example:x\r\n\r\n",
                InvalidHost("port is not a number"),
            ),
            ("GET / HTTP/1.1\r\nHost:\r\n\r\n", InvalidHost("empty")),
            (
                "GET / HTTP/1.1\r\nHost: a\x01.example\r\n\r\n",
                Malformed("control byte in a header value"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a.example\rX: y\r\n\r\n",
                Malformed("control byte in a header value"),
            ),
        ];
        for (req, want) in cases {
            assert_eq!(
                parse_request_head(req.as_bytes())
                    .as_ref()
                    .map(|h| h.host.as_str()),
                Err(want),
                "{req:?}"
            );
        }
    }
}
