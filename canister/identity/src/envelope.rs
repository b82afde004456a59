//! Signed request envelopes for the ledger service.

use crate::{
    der_decode_public_key, principal_of_public_key_der, put_bytes, verify, Domain, Identity,
    IdentityError, Principal,
};
use candid::CandidType;
use serde::{Deserialize, Serialize};

/// The shortest nonce [`Envelope::verify`] accepts, in bytes.
pub const NONCE_LEN_MIN: usize = 16;
/// The longest nonce [`Envelope::verify`] accepts, in bytes.
pub const NONCE_LEN_MAX: usize = 32;

/// A signed request to the ledger service: who sends it, which method with which Candid
/// argument, a nonce (for replay protection by the receiver) and an expiry.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The sender's DER public key.
    #[serde(with = "serde_bytes")]
    pub sender_public_key: Vec<u8>,
    /// The method called.
    pub method: String,
    /// The method's Candid-encoded argument.
    #[serde(with = "serde_bytes")]
    pub arg: Vec<u8>,
    /// Random bytes, [`NONCE_LEN_MIN`]`..=`[`NONCE_LEN_MAX`] long.
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
    /// The request is valid while `now_ns < expires_at_ns` (nanoseconds since the epoch).
    pub expires_at_ns: u64,
    /// The sender's signature over [`Envelope::signing_payload`] in [`Domain::LedgerRequest`].
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl Envelope {
    /// `identity` signs a call of `method` with `arg`, `nonce` and `expires_at_ns`.
    pub fn sign(
        identity: &Identity,
        method: &str,
        arg: Vec<u8>,
        nonce: Vec<u8>,
        expires_at_ns: u64,
    ) -> Self {
        let mut envelope = Self {
            sender_public_key: identity.public_key_der(),
            method: method.to_owned(),
            arg,
            nonce,
            expires_at_ns,
            signature: Vec::new(),
        };
        envelope.signature = identity
            .sign(Domain::LedgerRequest, &envelope.signing_payload())
            .to_vec();
        envelope
    }

    /// The bytes the sender signs (in [`Domain::LedgerRequest`]), all fields but the
    /// signature, in order, with `u64` big-endian lengths and integers:
    ///
    /// `len || sender_public_key || len || method (UTF-8) || len || arg || len || nonce ||
    /// expires_at_ns`.
    pub fn signing_payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            5 * 8
                + self.sender_public_key.len()
                + self.method.len()
                + self.arg.len()
                + self.nonce.len(),
        );
        put_bytes(&mut out, &self.sender_public_key);
        put_bytes(&mut out, self.method.as_bytes());
        put_bytes(&mut out, &self.arg);
        put_bytes(&mut out, &self.nonce);
        out.extend_from_slice(&self.expires_at_ns.to_be_bytes());
        out
    }

    /// Checks the key's DER, the nonce length, the expiry window
    /// `now_ns < expires_at_ns <= now_ns + max_ttl_ns` and the signature; returns the sender.
    /// Replay protection (remembering nonces until expiry) is the receiver's job.
    pub fn verify(&self, now_ns: u64, max_ttl_ns: u64) -> Result<Principal, IdentityError> {
        der_decode_public_key(&self.sender_public_key)?;
        if !(NONCE_LEN_MIN..=NONCE_LEN_MAX).contains(&self.nonce.len()) {
            return Err(IdentityError::InvalidNonceLength {
                len: self.nonce.len(),
            });
        }
        if now_ns >= self.expires_at_ns {
            return Err(IdentityError::Expired {
                expires_at_ns: self.expires_at_ns,
                now_ns,
            });
        }
        let max_expires_at_ns = now_ns.saturating_add(max_ttl_ns);
        if self.expires_at_ns > max_expires_at_ns {
            return Err(IdentityError::ExpiryTooFar {
                expires_at_ns: self.expires_at_ns,
                max_expires_at_ns,
            });
        }
        verify(
            &self.sender_public_key,
            Domain::LedgerRequest,
            &self.signing_payload(),
            &self.signature,
        )?;
        Ok(principal_of_public_key_der(&self.sender_public_key))
    }

    /// The wire format: the Candid encoding of the envelope as a single argument.
    pub fn to_bytes(&self) -> Vec<u8> {
        candid::encode_one(self).expect("Candid-encoding an Envelope cannot fail")
    }

    /// Decodes [`Envelope::to_bytes`] output. Input longer than `max_bytes` is refused
    /// before decoding, and the decoder's work is bounded in proportion to the input length.
    /// Does not verify the envelope.
    pub fn from_bytes(bytes: &[u8], max_bytes: usize) -> Result<Self, IdentityError> {
        if bytes.len() > max_bytes {
            return Err(IdentityError::TooLarge {
                len: bytes.len(),
                max_bytes,
            });
        }
        let mut config = candid::de::DecoderConfig::new();
        config
            .set_decoding_quota(bytes.len().saturating_mul(16).saturating_add(4096))
            .set_skipping_quota(10_000);
        candid::utils::decode_one_with_config(bytes, &config).map_err(|e| IdentityError::Decode {
            what: "Envelope",
            reason: e.to_string(),
        })
    }
}
