//! The node's identity and its one-time claim by a provider.
//!
//! First start: the node key is generated in `data_dir/node.pem` (0600, never
//! overwritten) and a one-time claim token (128 random bits, hex) is written
//! to `data_dir/claim-token` (0600) and shown in the log. A provider claims the
//! node with that token: the appliance signs nothing itself; the provider's key
//! signs the delegation (CheckIn, AcceptContracts, ReportStatus) and the
//! provider-signed ledger client registers the node with its measured
//! capabilities. Then `data_dir/claimed.json` is written and the token deleted.

use std::io::Write;
use std::path::Path;

use dc_identity::{Delegation, Identity, Permission};
use dc_ledger_client::LedgerClient;
use dc_ledger_core::{NodeCapabilities, RegisterNodeArgs};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// Nanoseconds in a day.
const DAY_NS: u64 = 86_400_000_000_000;

/// The permissions a claimed node gets.
pub const NODE_PERMISSIONS: [Permission; 3] = [
    Permission::CheckIn,
    Permission::AcceptContracts,
    Permission::ReportStatus,
];

/// Why an identity or claim operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("node key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("this node is already claimed (by {provider}); nothing changed")]
    AlreadyClaimed { provider: String },
    #[error("this node has no claim token (run `dc-appliance run` once to create one)")]
    NoToken,
    #[error("wrong claim token; nothing changed")]
    WrongToken,
    #[error("the ledger client has no identity: it must be signed by the provider")]
    NoProviderIdentity,
    #[error("the ledger refused to register the node: {0}")]
    Ledger(#[from] dc_ledger_client::ClientError),
    #[error("this node is not claimed yet; claim it with the token in {0}")]
    NotClaimed(String),
}

fn io(path: &Path, e: impl std::fmt::Display) -> NodeError {
    NodeError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// What `data_dir/claimed.json` records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRecord {
    pub node: String,
    pub provider: String,
    pub claimed_at_ns: u64,
    pub delegation_expires_at_ns: u64,
}

/// The node's state on disk after [`init`].
#[derive(Debug)]
pub struct NodeStatus {
    pub identity: Identity,
    /// Present once claimed.
    pub claim: Option<ClaimRecord>,
    /// The token, while unclaimed.
    pub claim_token: Option<String>,
}

/// Writes `bytes` to a new file with mode 0600 (refusing to replace one), synced.
fn write_private_new(path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io(path, e))?;
    f.write_all(bytes).map_err(|e| io(path, e))?;
    f.sync_all().map_err(|e| io(path, e))
}

/// Replaces `path` with `bytes` (mode 0600) through `tmp`, written whole
/// and synced first: a crash leaves the old file or the new one, never a
/// part of it.
fn replace_private(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
    let _ = std::fs::remove_file(tmp);
    write_private_new(tmp, bytes)?;
    std::fs::rename(tmp, path).map_err(|e| io(path, e))
}

/// A claim token as [`init`] makes them: 32 lowercase hex digits.
fn is_claim_token(t: &str) -> bool {
    t.len() == 32 && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Reads `claimed.json` if present.
pub fn read_claim(config: &Config) -> Result<Option<ClaimRecord>, NodeError> {
    let path = config.claimed_path();
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| io(&path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path, e)),
    }
}

/// Loads the node key.
pub fn load_identity(config: &Config) -> Result<Identity, NodeError> {
    let path = config.node_key_path();
    Identity::load(&path).map_err(|e| NodeError::Key {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Ensures the data directory, the node key and, while unclaimed, the claim
/// token exist. Idempotent: an existing key or token is kept.
pub fn init(config: &Config, rng: &mut impl CryptoRngCore) -> Result<NodeStatus, NodeError> {
    let dir = &config.data_dir;
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io(dir, e))?;
    }
    let key_path = config.node_key_path();
    let identity = if key_path.exists() {
        load_identity(config)?
    } else {
        let id = Identity::create_file(&key_path).map_err(|e| NodeError::Key {
            path: key_path.display().to_string(),
            reason: e.to_string(),
        })?;
        tracing::info!(node = %id.principal(), path = %key_path.display(), "generated the node key");
        id
    };
    let claim = read_claim(config)?;
    let mut claim_token = None;
    if claim.is_none() {
        let token_path = config.claim_token_path();
        let found = match std::fs::read_to_string(&token_path) {
            Ok(t) if is_claim_token(t.trim()) => Some(t.trim().to_string()),
            Ok(_) => {
                // Empty or damaged (a crash between creating the file and
                // writing it, from before tokens were written atomically):
                // never a token anyone could guess; a new one replaces it.
                tracing::warn!(path = %token_path.display(), "the claim token file is not a token; replacing it");
                None
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&token_path, e)),
        };
        let token = match found {
            Some(t) => t,
            None => {
                let mut raw = [0u8; 16];
                rng.fill_bytes(&mut raw);
                let t = hex::encode(raw);
                // A crash leaves no token or the whole token.
                replace_private(
                    &config.data_dir.join(".claim-token.tmp"),
                    &token_path,
                    format!("{t}\n").as_bytes(),
                )?;
                t
            }
        };
        // Shown on the console on purpose: whoever sees it may claim the node once.
        tracing::info!(node = %identity.principal(), claim_token = %token, "waiting to be claimed: dc-appliance claim --token TOKEN --provider-identity PROVIDER.pem");
        claim_token = Some(token);
    }
    Ok(NodeStatus {
        identity,
        claim,
        claim_token,
    })
}

/// Compares without an early exit, so timing does not reveal a matching prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Claims the node for the provider whose identity signs `provider_ledger`:
/// checks `token`, signs the delegation with the provider's key (valid
/// `config.delegation_valid_days` from `now_ns`), registers the node with
/// `capabilities`, records `claimed.json` and deletes the token. Any refusal
/// changes nothing on disk.
pub async fn claim(
    config: &Config,
    token: &str,
    provider_ledger: &LedgerClient,
    capabilities: NodeCapabilities,
    now_ns: u64,
) -> Result<ClaimRecord, NodeError> {
    if let Some(c) = read_claim(config)? {
        return Err(NodeError::AlreadyClaimed {
            provider: c.provider,
        });
    }
    let token_path = config.claim_token_path();
    let expected = match std::fs::read_to_string(&token_path) {
        Ok(t) => t.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(NodeError::NoToken),
        Err(e) => return Err(io(&token_path, e)),
    };
    if !is_claim_token(&expected) {
        return Err(NodeError::NoToken);
    }
    if !constant_time_eq(expected.as_bytes(), token.trim().as_bytes()) {
        tracing::warn!("claim refused: wrong token");
        return Err(NodeError::WrongToken);
    }
    let provider = provider_ledger
        .identity()
        .ok_or(NodeError::NoProviderIdentity)?;
    let node = load_identity(config)?;
    let expires = now_ns.saturating_add(config.delegation_valid_days.saturating_mul(DAY_NS));
    let delegation = Delegation::sign(provider, node.public_key_der(), &NODE_PERMISSIONS, expires);
    let registered = provider_ledger
        .register_node(RegisterNodeArgs {
            delegation,
            capabilities,
        })
        .await?;
    let record = ClaimRecord {
        node: registered.to_text(),
        provider: provider.principal().to_text(),
        claimed_at_ns: now_ns,
        delegation_expires_at_ns: expires,
    };
    let path = config.claimed_path();
    replace_private(
        &config.data_dir.join(".claimed.json.tmp"),
        &path,
        &serde_json::to_vec_pretty(&record).map_err(|e| io(&path, e))?,
    )?;
    std::fs::remove_file(&token_path).map_err(|e| io(&token_path, e))?;
    tracing::info!(node = %record.node, provider = %record.provider, "node claimed");
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::RngCore;
    use std::os::unix::fs::PermissionsExt;

    /// A deterministic RNG for tests.
    struct Counter(u8);
    impl RngCore for Counter {
        fn next_u32(&mut self) -> u32 {
            self.next_u64() as u32
        }
        fn next_u64(&mut self) -> u64 {
            let mut b = [0u8; 8];
            self.fill_bytes(&mut b);
            u64::from_le_bytes(b)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for d in dest {
                self.0 = self.0.wrapping_add(1);
                *d = self.0;
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }
    impl rand_core::CryptoRng for Counter {}

    pub(crate) fn config(dir: &Path) -> Config {
        Config::parse(
            Path::new("t.toml"),
            &format!(
                "data_dir = \"{}\"\nregion = \"eu\"\ncountry = \"DE\"\n[guest]\nkernel = \"/k\"\nbase_disk = \"/d\"\n",
                dir.display()
            ),
        )
        .unwrap()
    }

    #[test]
    fn init_creates_a_private_key_and_token_once() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(&dir.path().join("data"));
        let s = init(&c, &mut Counter(0)).unwrap();
        assert_eq!(
            s.claim_token.as_deref(),
            Some("0102030405060708090a0b0c0d0e0f10")
        );
        for p in [c.node_key_path(), c.claim_token_path()] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        let again = init(&c, &mut Counter(100)).unwrap();
        assert_eq!(
            again.identity.principal(),
            s.identity.principal(),
            "the key is never replaced"
        );
        assert_eq!(
            again.claim_token, s.claim_token,
            "the token is kept until claimed"
        );
    }

    fn small_caps() -> NodeCapabilities {
        NodeCapabilities {
            cpu_model: "x".into(),
            vcpus: 1,
            ram_gib: 1,
            storage_gib: 1,
            bandwidth_mbps: 1,
            gpus: vec![],
            confidential: dc_ledger_core::Confidential::None,
            region: "eu".into(),
            country: "DE".into(),
            image_hash: String::new(),
        }
    }

    /// A token file left empty (or damaged) is never a token: `init`
    /// replaces it with a fresh one, and a claim against it is refused.
    #[tokio::test]
    async fn an_empty_token_file_is_replaced_and_never_matches() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(&dir.path().join("data"));
        init(&c, &mut Counter(0)).unwrap();
        std::fs::write(c.claim_token_path(), "").unwrap();
        let provider = Identity::from_secret_bytes([9; 32]);
        let client = LedgerClient::connect("http://127.0.0.1:1", Some(provider))
            .await
            .unwrap();
        let caps = small_caps();
        let refused = claim(&c, "", &client, caps, 1).await;
        assert!(matches!(refused, Err(NodeError::NoToken)), "{refused:?}");
        let s = init(&c, &mut Counter(50)).unwrap();
        let token = s.claim_token.unwrap();
        assert!(is_claim_token(&token), "{token}");
        assert_eq!(
            std::fs::read_to_string(c.claim_token_path())
                .unwrap()
                .trim(),
            token
        );
        assert!(!c.data_dir.join(".claim-token.tmp").exists());
    }

    #[tokio::test]
    async fn a_wrong_token_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(&dir.path().join("data"));
        init(&c, &mut Counter(0)).unwrap();
        // The ledger is unreachable: the token is checked before any call.
        let provider = Identity::from_secret_bytes([9; 32]);
        let client = LedgerClient::connect("http://127.0.0.1:1", Some(provider))
            .await
            .unwrap();
        let caps = small_caps();
        let e = claim(
            &c,
            "00000000000000000000000000000000",
            &client,
            caps.clone(),
            1,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, NodeError::WrongToken), "{e}");
        assert!(c.claim_token_path().exists());
        assert!(!c.claimed_path().exists());
        // The right token with an unreachable ledger: refused, nothing changed either.
        let e = claim(&c, "0102030405060708090a0b0c0d0e0f10", &client, caps, 1)
            .await
            .unwrap_err();
        assert!(matches!(e, NodeError::Ledger(_)), "{e}");
        assert!(c.claim_token_path().exists());
        assert!(!c.claimed_path().exists());
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
