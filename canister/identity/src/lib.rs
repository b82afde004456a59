//! Identity shared by every Decent Cloud binary and by the ledger canister.
//!
//! - Ed25519 keys ([`Identity`]) in the PKCS#8 PEM format that `dfx identity export` writes;
//! - Internet Computer self-authenticating [`Principal`]s derived from DER public keys;
//! - domain-separated signatures ([`Domain`], [`Identity::sign`], [`verify`]);
//! - provider -> node delegations ([`Delegation`]) and signed request envelopes ([`Envelope`]).
//!
//! The crate builds for `wasm32-unknown-unknown` with `default-features = false`; the default
//! `keystore` feature adds key files on disk and OS randomness ([`Identity::load`],
//! [`Identity::create_file`]).

#![warn(missing_docs)]

mod delegation;
mod envelope;
mod error;
mod keys;

pub use candid::Principal;
pub use delegation::{Delegation, Permission, VerifiedDelegation};
pub use envelope::{Envelope, NONCE_LEN_MAX, NONCE_LEN_MIN};
pub use error::IdentityError;
pub use keys::{
    der_decode_public_key, der_encode_public_key, domain_separated, principal_of_public_key_der,
    verify, Domain, Identity, ED25519_DER_PREFIX,
};
pub use zeroize::Zeroizing;

/// Appends `bytes` to `out` prefixed by their length as a big-endian `u64`: the building block
/// of every signing payload in this crate, so that no two field sequences encode the same.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}
