//! Provider -> node delegations.

use crate::{
    der_decode_public_key, principal_of_public_key_der, put_bytes, verify, Domain, Identity,
    IdentityError, Principal,
};
use candid::CandidType;
use serde::{Deserialize, Serialize};

/// What a delegated node may do on the provider's behalf.
#[derive(
    CandidType, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum Permission {
    /// Send check-ins (liveness) for the provider.
    CheckIn,
    /// Accept rental contracts for the provider.
    AcceptContracts,
    /// Report the status of the provider's resources.
    ReportStatus,
}

impl Permission {
    /// The permission's stable one-byte code in signing payloads (never reordered or reused).
    pub fn code(self) -> u8 {
        match self {
            Permission::CheckIn => 0,
            Permission::AcceptContracts => 1,
            Permission::ReportStatus => 2,
        }
    }
}

/// A provider's signed statement that a node key may act for it, with some permissions,
/// until an expiry. Revocation is the ledger's job.
#[derive(CandidType, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Delegation {
    /// The provider's DER public key.
    #[serde(with = "serde_bytes")]
    pub provider_public_key: Vec<u8>,
    /// The node's DER public key.
    #[serde(with = "serde_bytes")]
    pub node_public_key: Vec<u8>,
    /// The permissions granted, sorted and without duplicates.
    pub permissions: Vec<Permission>,
    /// The delegation is valid while `now_ns < expires_at_ns` (nanoseconds since the epoch).
    pub expires_at_ns: u64,
    /// The provider's signature over [`Delegation::signing_payload`] in [`Domain::NodeDelegation`].
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// The content of a delegation that passed [`Delegation::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedDelegation {
    /// The provider who delegated.
    pub provider: Principal,
    /// The node delegated to.
    pub node: Principal,
    /// The permissions granted, sorted and without duplicates.
    pub permissions: Vec<Permission>,
    /// The delegation's expiry.
    pub expires_at_ns: u64,
}

impl Delegation {
    /// The provider signs a delegation to `node_public_key_der` for `permissions` (sorted and
    /// deduplicated here) until `expires_at_ns`.
    pub fn sign(
        provider: &Identity,
        node_public_key_der: Vec<u8>,
        permissions: &[Permission],
        expires_at_ns: u64,
    ) -> Self {
        let mut permissions = permissions.to_vec();
        permissions.sort_unstable();
        permissions.dedup();
        let mut delegation = Self {
            provider_public_key: provider.public_key_der(),
            node_public_key: node_public_key_der,
            permissions,
            expires_at_ns,
            signature: Vec::new(),
        };
        delegation.signature = provider
            .sign(Domain::NodeDelegation, &delegation.signing_payload())
            .to_vec();
        delegation
    }

    /// The bytes the provider signs (in [`Domain::NodeDelegation`]), all fields but the
    /// signature, in order, with `u64` big-endian lengths and integers:
    ///
    /// `len || provider_public_key || len || node_public_key || count || code(permission)* ||
    /// expires_at_ns`, where `code` is [`Permission::code`] (one byte each).
    pub fn signing_payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            3 * 8 + self.provider_public_key.len() + self.node_public_key.len() + 8,
        );
        put_bytes(&mut out, &self.provider_public_key);
        put_bytes(&mut out, &self.node_public_key);
        let codes: Vec<u8> = self.permissions.iter().map(|p| p.code()).collect();
        put_bytes(&mut out, &codes);
        out.extend_from_slice(&self.expires_at_ns.to_be_bytes());
        out
    }

    /// The provider's principal (after checking its key's DER).
    pub fn provider(&self) -> Result<Principal, IdentityError> {
        der_decode_public_key(&self.provider_public_key)?;
        Ok(principal_of_public_key_der(&self.provider_public_key))
    }

    /// The node's principal (after checking its key's DER).
    pub fn node(&self) -> Result<Principal, IdentityError> {
        der_decode_public_key(&self.node_public_key)?;
        Ok(principal_of_public_key_der(&self.node_public_key))
    }

    /// Whether the delegation lists `p` (does not check the signature or expiry).
    pub fn allows(&self, p: Permission) -> bool {
        self.permissions.contains(&p)
    }

    /// Checks both keys' DER, that permissions are sorted and distinct, the provider's
    /// signature, and that `now_ns < expires_at_ns`. Revocation is the ledger's job.
    pub fn verify(&self, now_ns: u64) -> Result<VerifiedDelegation, IdentityError> {
        let provider = self.provider()?;
        let node = self.node()?;
        if self.permissions.windows(2).any(|w| w[0] >= w[1]) {
            return Err(IdentityError::NonCanonicalPermissions {
                found: self.permissions.clone(),
            });
        }
        verify(
            &self.provider_public_key,
            Domain::NodeDelegation,
            &self.signing_payload(),
            &self.signature,
        )?;
        if now_ns >= self.expires_at_ns {
            return Err(IdentityError::Expired {
                expires_at_ns: self.expires_at_ns,
                now_ns,
            });
        }
        Ok(VerifiedDelegation {
            provider,
            node,
            permissions: self.permissions.clone(),
            expires_at_ns: self.expires_at_ns,
        })
    }
}

impl VerifiedDelegation {
    /// Whether the delegation grants `p`.
    pub fn allows(&self, p: Permission) -> bool {
        self.permissions.contains(&p)
    }

    /// Checks that `signer` is the delegated node ([`IdentityError::WrongSigner`] otherwise)
    /// and that it holds `required` ([`IdentityError::MissingPermission`] otherwise).
    pub fn authorize(&self, signer: Principal, required: Permission) -> Result<(), IdentityError> {
        if signer != self.node {
            return Err(IdentityError::WrongSigner {
                expected: self.node,
                found: signer,
            });
        }
        if !self.allows(required) {
            return Err(IdentityError::MissingPermission { required });
        }
        Ok(())
    }
}
