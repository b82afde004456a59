//! The crate's one error type.

use crate::{Permission, Principal};

/// Everything that can go wrong while loading keys or checking signatures, delegations and
/// envelopes. Each message says what was expected and what was found.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The PEM text is not an Ed25519 PKCS#8 (v1 or v2) "PRIVATE KEY" document.
    #[error("expected an Ed25519 PKCS#8 \"PRIVATE KEY\" PEM, found invalid input: {0}")]
    InvalidPem(String),
    /// A PKCS#8 v2 document whose embedded public key is not the private key's.
    #[error("PEM public key {found} does not match its private key, which gives {expected}")]
    PemPublicKeyMismatch {
        /// Hex of the public key derived from the private key.
        expected: String,
        /// Hex of the public key stored in the document.
        found: String,
    },
    /// A public key that is not the 44-byte RFC 8410 Ed25519 SubjectPublicKeyInfo.
    #[error("expected a 44-byte Ed25519 DER public key (prefix 302a300506032b6570032100), found {len} bytes not of that form")]
    InvalidPublicKeyDer {
        /// Length of the rejected encoding.
        len: usize,
    },
    /// Well-formed DER whose 32 key bytes are not a valid Ed25519 point.
    #[error("expected a valid Ed25519 curve point, found key bytes that are not one")]
    InvalidPublicKey,
    /// A signature whose length is not 64 bytes.
    #[error("expected a 64-byte Ed25519 signature, found {len} bytes")]
    InvalidSignatureLength {
        /// Length of the rejected signature.
        len: usize,
    },
    /// The signature does not verify (strictly) for this key, domain and message.
    #[error("signature does not verify for the given key, domain and message")]
    BadSignature,
    /// The object expired: it was valid only while `now_ns < expires_at_ns`.
    #[error("expired: valid until {expires_at_ns} ns, now is {now_ns} ns")]
    Expired {
        /// The object's expiry.
        expires_at_ns: u64,
        /// The time it was checked at.
        now_ns: u64,
    },
    /// An envelope whose expiry lies further ahead than the verifier allows.
    #[error(
        "expiry {expires_at_ns} ns is too far ahead: at most {max_expires_at_ns} ns is accepted"
    )]
    ExpiryTooFar {
        /// The envelope's expiry.
        expires_at_ns: u64,
        /// The latest expiry accepted (`now_ns + max_ttl_ns`).
        max_expires_at_ns: u64,
    },
    /// An envelope nonce outside [`crate::NONCE_LEN_MIN`]`..=`[`crate::NONCE_LEN_MAX`] bytes.
    #[error("expected a nonce of 16 to 32 bytes, found {len} bytes")]
    InvalidNonceLength {
        /// Length of the rejected nonce.
        len: usize,
    },
    /// A delegation whose permission list is not sorted and free of duplicates, as
    /// [`crate::Delegation::sign`] writes it.
    #[error("expected delegation permissions sorted without duplicates, found {found:?}")]
    NonCanonicalPermissions {
        /// The permissions as found.
        found: Vec<Permission>,
    },
    /// The request was signed by someone other than the expected principal.
    #[error("expected a request signed by {expected}, found one signed by {found}")]
    WrongSigner {
        /// Who should have signed.
        expected: Principal,
        /// Who did sign.
        found: Principal,
    },
    /// A delegation that does not grant the permission the action needs.
    #[error("delegation does not grant the required permission {required:?}")]
    MissingPermission {
        /// The permission the action needs.
        required: Permission,
    },
    /// Encoded bytes larger than the caller's bound; they were not decoded.
    #[error("expected at most {max_bytes} bytes, found {len}")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The caller's bound.
        max_bytes: usize,
    },
    /// Bytes that are not a Candid-encoded value of the expected type.
    #[error("expected a Candid-encoded {what}, found undecodable bytes: {reason}")]
    Decode {
        /// The type that was expected.
        what: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// A file-system operation on a key file failed.
    #[error("I/O error on key file {}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// [`crate::Identity::create_file`] refuses to overwrite an existing key file.
    #[error("expected no file at {}, found one: refusing to overwrite a key file", .0.display())]
    AlreadyExists(std::path::PathBuf),
}
