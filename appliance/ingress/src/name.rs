//! Host names as the ingress routes them: validated DNS names, lowercase,
//! without a trailing dot, stored inline so that reading one from a
//! ClientHello or a Host header allocates nothing.

use std::fmt;
use std::hash::{Hash, Hasher};

/// Longest DNS name in its dotted text form (RFC 1035 §2.3.4, less the root dot).
pub const MAX_HOST_NAME_LEN: usize = 253;
/// Longest DNS label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// Why a name is not a routable host name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty, or only a dot.
    #[error("empty host name")]
    Empty,
    /// Longer than 253 characters.
    #[error("host name of {len} characters, expected at most {MAX_HOST_NAME_LEN}")]
    TooLong { len: usize },
    /// An empty label (`a..b`, `.a`) or one longer than 63 characters.
    #[error("host name label of {len} characters, expected 1 to {MAX_LABEL_LEN}")]
    BadLabelLength { len: usize },
    /// A byte outside `[A-Za-z0-9-]`.
    #[error("host name byte {byte:#04x} is not a letter, digit or hyphen")]
    BadByte { byte: u8 },
    /// A label that starts or ends with a hyphen.
    #[error("host name label starts or ends with a hyphen")]
    HyphenAtLabelEdge,
    /// The last label is all digits: an IPv4 literal or something read as one.
    /// SNI carries names only (RFC 6066 §3), and routing by address is not ours.
    #[error("host name ends in an all-numeric label (an address, not a name)")]
    NumericTopLabel,
}

/// A validated host name: `[a-z0-9-]` labels of 1 to 63 characters, no label
/// starting or ending with `-`, at most 253 characters, the last label not
/// all digits. Parsing lowercases and drops one trailing dot, so `Example.COM.`
/// and `example.com` are the same name everywhere in the ingress (SNI, Host,
/// route table), which is what keeps one tenant's name from shadowing
/// another's through spelling.
#[derive(Clone)]
pub struct HostName {
    len: u8,
    bytes: [u8; MAX_HOST_NAME_LEN],
}

impl HostName {
    /// Validates and normalises `input` (ASCII case folded, one trailing dot removed).
    pub fn parse(input: &str) -> Result<HostName, NameError> {
        HostName::from_bytes(input.as_bytes())
    }

    /// As [`HostName::parse`], from raw bytes (a ClientHello's or a header's).
    pub fn from_bytes(input: &[u8]) -> Result<HostName, NameError> {
        let input = input.strip_suffix(b".").unwrap_or(input);
        if input.is_empty() {
            return Err(NameError::Empty);
        }
        if input.len() > MAX_HOST_NAME_LEN {
            return Err(NameError::TooLong { len: input.len() });
        }
        let mut bytes = [0u8; MAX_HOST_NAME_LEN];
        let mut last_label_numeric = true;
        for label in input.split(|&b| b == b'.') {
            if label.is_empty() || label.len() > MAX_LABEL_LEN {
                return Err(NameError::BadLabelLength { len: label.len() });
            }
            if label.first() == Some(&b'-') || label.last() == Some(&b'-') {
                return Err(NameError::HyphenAtLabelEdge);
            }
            last_label_numeric = true;
            for &b in label {
                if !(b.is_ascii_alphanumeric() || b == b'-') {
                    return Err(NameError::BadByte { byte: b });
                }
                if !b.is_ascii_digit() {
                    last_label_numeric = false;
                }
            }
        }
        if last_label_numeric {
            return Err(NameError::NumericTopLabel);
        }
        for (dst, src) in bytes.iter_mut().zip(input) {
            *dst = src.to_ascii_lowercase();
        }
        Ok(HostName {
            // input.len() <= 253 was checked above.
            len: input.len() as u8,
            bytes,
        })
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        // Only ASCII letters, digits, '-' and '.' were ever stored.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The name less its first label (`a.b.c` → `b.c`), for single-label
    /// wildcard lookups; `None` for a one-label name.
    pub fn parent(&self) -> Option<&str> {
        let s = self.as_str();
        s.find('.').map(|dot| &s[dot + 1..])
    }
}

impl PartialEq for HostName {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for HostName {}

impl Hash for HostName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostName({:?})", self.as_str())
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_trailing_dot() {
        let n = HostName::parse("Api.Example.COM.").unwrap();
        assert_eq!(n.as_str(), "api.example.com");
        assert_eq!(n, HostName::parse("api.example.com").unwrap());
        assert_eq!(n.parent(), Some("example.com"));
        assert_eq!(HostName::parse("localhost").unwrap().parent(), None);
        assert_eq!(
            HostName::parse("xn--bcher-kva.example").unwrap().as_str(),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn refuses_what_is_not_a_host_name() {
        assert_eq!(HostName::parse(""), Err(NameError::Empty));
        assert_eq!(HostName::parse("."), Err(NameError::Empty));
        assert_eq!(
            HostName::parse("a..b"),
            Err(NameError::BadLabelLength { len: 0 })
        );
        assert_eq!(
            HostName::parse(".a"),
            Err(NameError::BadLabelLength { len: 0 })
        );
        assert_eq!(
            HostName::parse("a.b.."),
            Err(NameError::BadLabelLength { len: 0 })
        );
        assert_eq!(HostName::parse("-a.com"), Err(NameError::HyphenAtLabelEdge));
        assert_eq!(HostName::parse("a-.com"), Err(NameError::HyphenAtLabelEdge));
        assert_eq!(
            HostName::parse("a_b.com"),
            Err(NameError::BadByte { byte: b'_' })
        );
        assert_eq!(
            HostName::parse("a b.com"),
            Err(NameError::BadByte { byte: b' ' })
        );
        assert_eq!(
            HostName::parse("*.a.com"),
            Err(NameError::BadByte { byte: b'*' })
        );
        assert_eq!(
            HostName::parse("a.com:443"),
            Err(NameError::BadByte { byte: b':' })
        );
        assert_eq!(HostName::parse("10.0.0.1"), Err(NameError::NumericTopLabel));
        assert_eq!(HostName::parse("1234"), Err(NameError::NumericTopLabel));
        assert!(HostName::from_bytes("é.com".as_bytes()).is_err());
        let label = "a".repeat(64);
        assert_eq!(
            HostName::parse(&format!("{label}.com")),
            Err(NameError::BadLabelLength { len: 64 })
        );
        let long = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        assert_eq!(long.len(), 253);
        assert!(HostName::parse(&long).is_ok());
        assert_eq!(
            HostName::parse(&format!("e.{long}")),
            Err(NameError::TooLong { len: 255 })
        );
    }
}
