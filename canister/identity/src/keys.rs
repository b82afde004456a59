//! Ed25519 keys, their DER encoding, principals and domain-separated signatures.

use crate::{IdentityError, Principal};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use zeroize::{Zeroize, Zeroizing};

/// The 12-byte prefix of an RFC 8410 Ed25519 SubjectPublicKeyInfo; the raw key follows.
pub const ED25519_DER_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// DER-encodes a raw Ed25519 public key as an RFC 8410 SubjectPublicKeyInfo (44 bytes).
pub fn der_encode_public_key(raw: &[u8; 32]) -> Vec<u8> {
    let mut der = Vec::with_capacity(ED25519_DER_PREFIX.len() + 32);
    der.extend_from_slice(&ED25519_DER_PREFIX);
    der.extend_from_slice(raw);
    der
}

/// Decodes an RFC 8410 Ed25519 SubjectPublicKeyInfo: exactly the 12-byte prefix and 32 key
/// bytes. The key bytes are not checked to be a curve point (see [`verify`]).
pub fn der_decode_public_key(der: &[u8]) -> Result<[u8; 32], IdentityError> {
    der.strip_prefix(&ED25519_DER_PREFIX[..])
        .and_then(|raw| <[u8; 32]>::try_from(raw).ok())
        .ok_or(IdentityError::InvalidPublicKeyDer { len: der.len() })
}

/// The IC self-authenticating principal of a DER public key: `sha224(der) || 0x02`.
pub fn principal_of_public_key_der(der: &[u8]) -> Principal {
    Principal::self_authenticating(der)
}

/// What a signature is for. The tag is signed with the message, so a signature made for one
/// domain never verifies in another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Domain {
    /// A request to the ledger service ([`crate::Envelope`]); tag `dc-ledger-request-v1`.
    LedgerRequest,
    /// A provider -> node delegation ([`crate::Delegation`]); tag `dc-node-delegation-v1`.
    NodeDelegation,
    /// A node check-in; tag `dc-check-in-v1`.
    CheckIn,
    /// Any other purpose; the tag must be at most 255 bytes and should not be one of the above.
    Custom(&'static str),
}

impl Domain {
    /// The domain's tag, as signed.
    pub fn tag(self) -> &'static str {
        match self {
            Domain::LedgerRequest => "dc-ledger-request-v1",
            Domain::NodeDelegation => "dc-node-delegation-v1",
            Domain::CheckIn => "dc-check-in-v1",
            Domain::Custom(tag) => tag,
        }
    }
}

/// The bytes actually signed: `[len(tag) as u8] || tag || message`.
///
/// # Panics
/// If a [`Domain::Custom`] tag is longer than 255 bytes (a programming error).
pub fn domain_separated(domain: Domain, message: &[u8]) -> Vec<u8> {
    let tag = domain.tag().as_bytes();
    let len = u8::try_from(tag.len()).expect("domain tag longer than 255 bytes");
    let mut out = Vec::with_capacity(1 + tag.len() + message.len());
    out.push(len);
    out.extend_from_slice(tag);
    out.extend_from_slice(message);
    out
}

/// Verifies an Ed25519 signature (strictly: no small-order keys, canonical encodings) by the
/// DER public key `public_key_der` over `message` in `domain`.
pub fn verify(
    public_key_der: &[u8],
    domain: Domain,
    message: &[u8],
    signature: &[u8],
) -> Result<(), IdentityError> {
    let raw = der_decode_public_key(public_key_der)?;
    let key = VerifyingKey::from_bytes(&raw).map_err(|_| IdentityError::InvalidPublicKey)?;
    let signature =
        <[u8; 64]>::try_from(signature).map_err(|_| IdentityError::InvalidSignatureLength {
            len: signature.len(),
        })?;
    key.verify_strict(
        &domain_separated(domain, message),
        &Signature::from_bytes(&signature),
    )
    .map_err(|_| IdentityError::BadSignature)
}

/// An Ed25519 key pair: who a binary is. Its `Debug` shows the principal, never the secret.
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// The identity with these 32 secret bytes (deterministic; for tests and key import).
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        let mut secret = secret;
        let key = SigningKey::from_bytes(&secret);
        secret.zeroize();
        Self { key }
    }

    /// A fresh identity drawn from `rng`.
    pub fn generate<R: rand_core::CryptoRngCore>(rng: &mut R) -> Self {
        Self {
            key: SigningKey::generate(rng),
        }
    }

    /// Parses a PKCS#8 v1 or v2 `-----BEGIN PRIVATE KEY-----` PEM. A v2 document's public key
    /// must match its private key. Besides the RFC 5958 encoding of v2 (written by
    /// [`Identity::to_pem`], ring >= 0.17 and current dfx), the explicitly tagged public key that
    /// ring < 0.17 (older dfx) wrote is accepted.
    pub fn from_pem(pem: &str) -> Result<Self, IdentityError> {
        let pem = pem.trim();
        let (secret, public) = match KeypairBytes::from_pkcs8_pem(pem) {
            Ok(mut pair) => {
                let secret = Zeroizing::new(pair.secret_key);
                pair.secret_key.zeroize();
                (secret, pair.public_key.as_ref().map(|p| p.to_bytes()))
            }
            Err(e) => legacy_ring_v2(pem)
                .map(|(secret, public)| (secret, Some(public)))
                .ok_or_else(|| IdentityError::InvalidPem(e.to_string()))?,
        };
        let identity = Self::from_secret_bytes(*secret);
        if let Some(found) = public {
            let expected = identity.public_key_raw();
            if found != expected {
                return Err(IdentityError::PemPublicKeyMismatch {
                    expected: hex_string(&expected),
                    found: hex_string(&found),
                });
            }
        }
        Ok(identity)
    }

    /// The key as a PKCS#8 v2 (public key included) `-----BEGIN PRIVATE KEY-----` PEM with `\n`
    /// line endings, in the RFC 5958 form that current `dfx identity export` (ring >= 0.17) writes.
    pub fn to_pem(&self) -> Zeroizing<String> {
        self.key
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .expect("PEM-encoding a 32-byte Ed25519 key cannot fail")
    }

    /// The 32-byte secret seed, for handing the key to another signer in the
    /// same process (the IC agent). Zeroized on drop.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// The raw 32-byte public key.
    pub fn public_key_raw(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The DER (RFC 8410 SubjectPublicKeyInfo) public key, 44 bytes.
    pub fn public_key_der(&self) -> Vec<u8> {
        der_encode_public_key(&self.public_key_raw())
    }

    /// The identity's self-authenticating principal.
    pub fn principal(&self) -> Principal {
        principal_of_public_key_der(&self.public_key_der())
    }

    /// Signs `message` in `domain` (see [`domain_separated`]).
    pub fn sign(&self, domain: Domain, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.key.sign(&domain_separated(domain, message)).to_bytes()
    }

    /// Reads a PEM key file written by [`Identity::create_file`] or `dfx identity export`.
    #[cfg(feature = "keystore")]
    pub fn load(path: &std::path::Path) -> Result<Self, IdentityError> {
        let pem =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
                    path: path.to_owned(),
                    source,
                })?,
            );
        Self::from_pem(&pem)
    }

    /// Generates a new identity with the OS's randomness and writes it as PEM to `path`, with
    /// mode 0600 on unix, creating missing parent directories (mode 0700 on unix).
    ///
    /// The file appears atomically and complete (written to a temporary file in the same
    /// directory, synced, then hard-linked into place); an existing file is never
    /// overwritten: that gives [`IdentityError::AlreadyExists`].
    #[cfg(feature = "keystore")]
    pub fn create_file(path: &std::path::Path) -> Result<Self, IdentityError> {
        use std::io::Write;

        let io = |source: std::io::Error| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        if path.exists() {
            return Err(IdentityError::AlreadyExists(path.to_owned()));
        }
        let name = path.file_name().ok_or_else(|| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "key file path has no file name",
            ))
        })?;
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(dir) = dir {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(dir).map_err(io)?;
        }

        let mut rng = rand_core::OsRng;
        let identity = Self::generate(&mut rng);
        let mut suffix = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut rng, &mut suffix);
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}", hex_string(&suffix)));
        let tmp = match dir {
            Some(dir) => dir.join(tmp_name),
            None => std::path::PathBuf::from(tmp_name),
        };

        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options.open(&tmp).and_then(|mut file| {
            file.write_all(identity.to_pem().as_bytes())?;
            file.sync_all()
        });
        let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
        // The temporary name is only a staging area; failing to remove it is harmless.
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(IdentityError::AlreadyExists(path.to_owned()))
            }
            Err(e) => return Err(io(e)),
        }
        #[cfg(unix)]
        if let Some(dir) = dir {
            // Best effort: make the new directory entry durable.
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(identity)
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("principal", &self.principal().to_text())
            .finish_non_exhaustive()
    }
}

/// Decodes the exact PKCS#8 v2 layout of ring < 0.17: `3053020101300506032b657004220420 ||
/// secret || a123032100 || public`, whose `[1]` tag is (wrongly) constructed.
fn legacy_ring_v2(pem: &str) -> Option<(Zeroizing<[u8; 32]>, [u8; 32])> {
    const HEAD: [u8; 16] = [
        0x30, 0x53, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    const MIDDLE: [u8; 5] = [0xa1, 0x23, 0x03, 0x21, 0x00];
    let (label, der) = ed25519_dalek::pkcs8::spki::der::pem::decode_vec(pem.as_bytes()).ok()?;
    let der = Zeroizing::new(der);
    if label != "PRIVATE KEY" || der.len() != 85 || der[..16] != HEAD || der[48..53] != MIDDLE {
        return None;
    }
    let secret = Zeroizing::new(<[u8; 32]>::try_from(&der[16..48]).ok()?);
    let public = <[u8; 32]>::try_from(&der[53..]).ok()?;
    Some((secret, public))
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
