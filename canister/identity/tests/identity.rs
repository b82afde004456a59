//! Tests of dc-identity through its public API.

use dc_identity::*;
use proptest::prelude::*;
use sha2::{Digest, Sha224};

/// RFC 8032 section 7.1, TEST 1.
const RFC8032_SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
/// Computed independently (Python: hashlib.sha224, zlib.crc32, base64.b32encode).
const RFC8032_PRINCIPAL: &str = "e73il-iz5tp-nkgt7-idxyw-ngkah-47bpv-qdase-pzde6-g6vwc-a3eql-jae";

/// RFC 8410 section 10.3 private key (PKCS#8 v1) and its public key (section 10.1; checked
/// with `openssl pkey -pubout`).
const RFC8410_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC
-----END PRIVATE KEY-----
";
const RFC8410_SECRET: &str = "d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842";
const RFC8410_PUBLIC: &str = "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1";

fn bytes32(hex_str: &str) -> [u8; 32] {
    hex::decode(hex_str).unwrap().try_into().unwrap()
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn pem(der: &[u8]) -> String {
    let body = base64(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

/// PKCS#8 v1 (RFC 8410 layout).
fn pkcs8_v1(secret: &[u8; 32]) -> String {
    let mut der = hex::decode("302e020100300506032b657004220420").unwrap();
    der.extend_from_slice(secret);
    pem(&der)
}

/// PKCS#8 v2 with the public key (RFC 5958: `[1] IMPLICIT BIT STRING`), as ring >= 0.17
/// (current `dfx identity export`) writes it.
fn pkcs8_v2(secret: &[u8; 32], public: &[u8; 32]) -> String {
    let mut der = hex::decode("3051020101300506032b657004220420").unwrap();
    der.extend_from_slice(secret);
    der.extend_from_slice(&hex::decode("812100").unwrap());
    der.extend_from_slice(public);
    pem(&der)
}

/// PKCS#8 v2 as ring < 0.17 (older dfx) wrote it, with a constructed `[1]` tag.
fn pkcs8_v2_legacy(secret: &[u8; 32], public: &[u8; 32]) -> String {
    let mut der = hex::decode("3053020101300506032b657004220420").unwrap();
    der.extend_from_slice(secret);
    der.extend_from_slice(&hex::decode("a123032100").unwrap());
    der.extend_from_slice(public);
    pem(&der)
}

fn alice() -> Identity {
    Identity::from_secret_bytes([1; 32])
}

fn bob() -> Identity {
    Identity::from_secret_bytes([2; 32])
}

// ---------------------------------------------------------------- keys and principals

#[test]
fn known_answer_public_key_der_and_principal() {
    let id = Identity::from_secret_bytes(bytes32(RFC8032_SECRET));
    assert_eq!(id.public_key_raw(), bytes32(RFC8032_PUBLIC));
    let der = id.public_key_der();
    assert_eq!(
        hex::encode(&der),
        format!("302a300506032b6570032100{RFC8032_PUBLIC}")
    );
    assert_eq!(der_encode_public_key(&bytes32(RFC8032_PUBLIC)), der);
    assert_eq!(
        der_decode_public_key(&der).unwrap(),
        bytes32(RFC8032_PUBLIC)
    );
    assert_eq!(id.principal().to_text(), RFC8032_PRINCIPAL);
    assert_eq!(
        principal_of_public_key_der(&der).to_text(),
        RFC8032_PRINCIPAL
    );
}

#[test]
fn principal_structure() {
    for id in [alice(), bob(), Identity::from_secret_bytes([0; 32])] {
        let der = id.public_key_der();
        let p = id.principal();
        let bytes = p.as_slice();
        assert_eq!(bytes.len(), 29);
        assert_eq!(bytes[28], 0x02);
        assert_eq!(&bytes[..28], Sha224::digest(&der).as_slice());
        assert_eq!(Principal::from_text(p.to_text()).unwrap(), p);
    }
}

#[test]
fn der_decode_is_exact() {
    let der = alice().public_key_der();
    assert_eq!(der.len(), 44);
    assert!(matches!(
        der_decode_public_key(&der[..43]),
        Err(IdentityError::InvalidPublicKeyDer { len: 43 })
    ));
    let mut long = der.clone();
    long.push(0);
    assert!(der_decode_public_key(&long).is_err());
    let mut bad_prefix = der.clone();
    bad_prefix[8] ^= 1; // the algorithm OID
    assert!(der_decode_public_key(&bad_prefix).is_err());
    assert!(der_decode_public_key(&alice().public_key_raw()).is_err());
    assert!(der_decode_public_key(&[]).is_err());
}

#[test]
fn pem_known_answer_and_round_trip() {
    let rfc = Identity::from_pem(RFC8410_PEM).unwrap();
    assert_eq!(rfc.public_key_raw(), bytes32(RFC8410_PUBLIC));
    // The test's PEM builder reproduces the RFC's text, so it can be trusted below.
    assert_eq!(pkcs8_v1(&bytes32(RFC8410_SECRET)), RFC8410_PEM);

    let secret = bytes32(RFC8032_SECRET);
    let id = Identity::from_secret_bytes(secret);
    let v1 = Identity::from_pem(&pkcs8_v1(&secret)).unwrap();
    assert_eq!(v1.public_key_raw(), id.public_key_raw());

    // to_pem writes exactly the v2 layout that dfx writes, and reads back.
    let written = id.to_pem();
    assert_eq!(*written, pkcs8_v2(&secret, &id.public_key_raw()));
    let back = Identity::from_pem(&written).unwrap();
    assert_eq!(back.principal(), id.principal());
    // CRLF line endings and surrounding whitespace are accepted.
    let crlf = format!("\n{}\n", written.replace('\n', "\r\n"));
    assert_eq!(
        Identity::from_pem(&crlf).unwrap().principal(),
        id.principal()
    );
}

#[test]
fn pem_with_mismatching_public_key_is_refused() {
    let secret = [7; 32];
    let other = bob().public_key_raw();
    for pem in [pkcs8_v2(&secret, &other), pkcs8_v2_legacy(&secret, &other)] {
        let err = Identity::from_pem(&pem).unwrap_err();
        assert!(
            matches!(err, IdentityError::PemPublicKeyMismatch { .. }),
            "{err}"
        );
    }
}

#[test]
fn legacy_ring_pem_loads() {
    let id = Identity::from_secret_bytes([7; 32]);
    let pem = pkcs8_v2_legacy(&[7; 32], &id.public_key_raw());
    assert_eq!(
        Identity::from_pem(&pem).unwrap().principal(),
        id.principal()
    );
    // Any other byte layout under the legacy header is still refused.
    let mut der_pem = pem.replace("MFMC", "MFMD");
    assert!(Identity::from_pem(&der_pem).is_err());
    der_pem = pem.replace("PRIVATE KEY", "PUBLIC KEY");
    assert!(Identity::from_pem(&der_pem).is_err());
}

#[test]
fn bad_pem_is_refused() {
    for bad in [
        "",
        "not a pem",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        &RFC8410_PEM.replace("PRIVATE KEY", "PUBLIC KEY"),
        &RFC8410_PEM.replace("MC4C", "MC5C"),
    ] {
        assert!(
            matches!(Identity::from_pem(bad), Err(IdentityError::InvalidPem(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn debug_does_not_leak_secret() {
    let id = Identity::from_secret_bytes(bytes32(RFC8032_SECRET));
    let shown = format!("{id:?}");
    assert!(shown.contains(RFC8032_PRINCIPAL), "{shown}");
    assert!(
        !shown.contains(RFC8032_SECRET) && !shown.contains("157"),
        "{shown}"
    );
}

#[test]
fn generate_uses_the_rng() {
    struct Counter(u8);
    impl rand_core::RngCore for Counter {
        fn next_u32(&mut self) -> u32 {
            rand_core::impls::next_u32_via_fill(self)
        }
        fn next_u64(&mut self) -> u64 {
            rand_core::impls::next_u64_via_fill(self)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            dest.fill(self.0);
            self.0 += 1;
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }
    impl rand_core::CryptoRng for Counter {}
    let mut rng = Counter(1);
    let a = Identity::generate(&mut rng);
    let b = Identity::generate(&mut rng);
    assert_eq!(a.principal(), alice().principal());
    assert_eq!(b.principal(), bob().principal());
}

// ---------------------------------------------------------------- key files

#[cfg(feature = "keystore")]
#[test]
fn create_file_load_and_no_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/identity.pem");
    let created = Identity::create_file(&path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let loaded = Identity::load(&path).unwrap();
    assert_eq!(loaded.principal(), created.principal());
    let before = std::fs::read(&path).unwrap();

    let err = Identity::create_file(&path).unwrap_err();
    assert!(
        matches!(err, IdentityError::AlreadyExists(ref p) if *p == path),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // No staging files are left behind.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("identity.pem")]);

    // Two files get two different keys.
    let second = Identity::create_file(&dir.path().join("second.pem")).unwrap();
    assert_ne!(second.principal(), created.principal());
}

#[cfg(feature = "keystore")]
#[test]
fn load_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    assert!(matches!(
        Identity::load(&missing),
        Err(IdentityError::Io { ref path, .. }) if *path == missing
    ));
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "garbage").unwrap();
    assert!(matches!(
        Identity::load(&garbage),
        Err(IdentityError::InvalidPem(_))
    ));
    // dfx's format loads.
    let dfx = dir.path().join("dfx.pem");
    let id = alice();
    std::fs::write(&dfx, pkcs8_v2(&[1; 32], &id.public_key_raw())).unwrap();
    assert_eq!(Identity::load(&dfx).unwrap().principal(), id.principal());
}

// ---------------------------------------------------------------- signatures

#[test]
fn domain_separation_layout() {
    assert_eq!(
        domain_separated(Domain::LedgerRequest, b"xy"),
        b"\x14dc-ledger-request-v1xy".to_vec()
    );
    assert_eq!(
        domain_separated(Domain::NodeDelegation, b""),
        b"\x15dc-node-delegation-v1".to_vec()
    );
    assert_eq!(
        domain_separated(Domain::CheckIn, b"z"),
        b"\x0edc-check-in-v1z".to_vec()
    );
    assert_eq!(
        domain_separated(Domain::Custom("ab"), b"c"),
        b"\x02abc".to_vec()
    );
}

#[test]
fn signatures_verify_and_fail() {
    let id = alice();
    let der = id.public_key_der();
    let msg = b"hello ledger";
    let sig = id.sign(Domain::CheckIn, msg);
    verify(&der, Domain::CheckIn, msg, &sig).unwrap();

    let bad = |r: Result<(), IdentityError>| matches!(r, Err(IdentityError::BadSignature));
    assert!(bad(verify(&der, Domain::LedgerRequest, msg, &sig)));
    assert!(bad(verify(
        &der,
        Domain::Custom("dc-check-in-v2"),
        msg,
        &sig
    )));
    let mut flipped_msg = msg.to_vec();
    flipped_msg[3] ^= 0x10;
    assert!(bad(verify(&der, Domain::CheckIn, &flipped_msg, &sig)));
    for i in [0, 31, 32, 63] {
        let mut flipped = sig;
        flipped[i] ^= 1;
        assert!(
            verify(&der, Domain::CheckIn, msg, &flipped).is_err(),
            "bit in byte {i}"
        );
    }
    assert!(bad(verify(
        &bob().public_key_der(),
        Domain::CheckIn,
        msg,
        &sig
    )));
    assert!(matches!(
        verify(&der, Domain::CheckIn, msg, &sig[..63]),
        Err(IdentityError::InvalidSignatureLength { len: 63 })
    ));
    assert!(matches!(
        verify(&der[1..], Domain::CheckIn, msg, &sig),
        Err(IdentityError::InvalidPublicKeyDer { len: 43 })
    ));
    assert!(verify(&id.public_key_raw(), Domain::CheckIn, msg, &sig).is_err());
}

// ---------------------------------------------------------------- delegations

const NOW: u64 = 1_700_000_000_000_000_000;
const HOUR: u64 = 3_600_000_000_000;

#[test]
fn delegation_verifies_and_allows() {
    let provider = alice();
    let node = bob();
    let d = Delegation::sign(
        &provider,
        node.public_key_der(),
        &[
            Permission::ReportStatus,
            Permission::CheckIn,
            Permission::CheckIn,
        ],
        NOW + HOUR,
    );
    assert_eq!(
        d.permissions,
        vec![Permission::CheckIn, Permission::ReportStatus]
    );
    let v = d.verify(NOW).unwrap();
    assert_eq!(
        v,
        VerifiedDelegation {
            provider: provider.principal(),
            node: node.principal(),
            permissions: vec![Permission::CheckIn, Permission::ReportStatus],
            expires_at_ns: NOW + HOUR,
        }
    );
    assert_eq!(d.provider().unwrap(), provider.principal());
    assert_eq!(d.node().unwrap(), node.principal());
    assert!(d.allows(Permission::CheckIn));
    assert!(d.allows(Permission::ReportStatus));
    assert!(!d.allows(Permission::AcceptContracts));

    v.authorize(node.principal(), Permission::CheckIn).unwrap();
    assert!(matches!(
        v.authorize(provider.principal(), Permission::CheckIn),
        Err(IdentityError::WrongSigner { .. })
    ));
    assert!(matches!(
        v.authorize(node.principal(), Permission::AcceptContracts),
        Err(IdentityError::MissingPermission {
            required: Permission::AcceptContracts
        })
    ));
}

#[test]
fn delegation_expiry() {
    let d = Delegation::sign(
        &alice(),
        bob().public_key_der(),
        &[Permission::CheckIn],
        NOW,
    );
    assert!(d.verify(NOW - 1).is_ok());
    assert!(matches!(
        d.verify(NOW),
        Err(IdentityError::Expired {
            expires_at_ns: NOW,
            now_ns: NOW
        })
    ));
    assert!(d.verify(NOW + 1).is_err());
}

#[test]
fn delegation_tampering_is_refused() {
    let d = Delegation::sign(
        &alice(),
        bob().public_key_der(),
        &[Permission::CheckIn],
        NOW + HOUR,
    );
    let refused = |t: Delegation| t.verify(NOW).is_err();

    let mut t = d.clone();
    t.permissions.push(Permission::ReportStatus);
    assert!(refused(t));
    let mut t = d.clone();
    t.permissions = vec![Permission::AcceptContracts];
    assert!(refused(t));
    let mut t = d.clone();
    t.permissions.clear();
    assert!(refused(t));
    let mut t = d.clone();
    t.expires_at_ns += 1;
    assert!(refused(t));
    let mut t = d.clone();
    t.node_public_key = Identity::from_secret_bytes([3; 32]).public_key_der();
    assert!(refused(t));
    let mut t = d.clone();
    t.node_public_key.push(0);
    assert!(matches!(
        t.verify(NOW),
        Err(IdentityError::InvalidPublicKeyDer { .. })
    ));
    let mut t = d.clone();
    t.signature[10] ^= 1;
    assert!(refused(t));

    // Signed by a key other than the one it names as provider.
    let mut forged = Delegation::sign(
        &Identity::from_secret_bytes([9; 32]),
        bob().public_key_der(),
        &[Permission::CheckIn],
        NOW + HOUR,
    );
    forged.provider_public_key = alice().public_key_der();
    assert!(matches!(
        forged.verify(NOW),
        Err(IdentityError::BadSignature)
    ));

    // Non-canonical permission lists are refused even when signed.
    let mut dup = d.clone();
    dup.permissions = vec![Permission::CheckIn, Permission::CheckIn];
    dup.signature = alice()
        .sign(Domain::NodeDelegation, &dup.signing_payload())
        .to_vec();
    assert!(matches!(
        dup.verify(NOW),
        Err(IdentityError::NonCanonicalPermissions { .. })
    ));
}

#[test]
fn delegation_payload_is_length_prefixed() {
    let d = Delegation::sign(&alice(), vec![1, 2, 3], &[Permission::AcceptContracts], 5);
    let mut expected = Vec::new();
    expected.extend_from_slice(&44u64.to_be_bytes());
    expected.extend_from_slice(&alice().public_key_der());
    expected.extend_from_slice(&3u64.to_be_bytes());
    expected.extend_from_slice(&[1, 2, 3]);
    expected.extend_from_slice(&1u64.to_be_bytes());
    expected.push(1);
    expected.extend_from_slice(&5u64.to_be_bytes());
    assert_eq!(d.signing_payload(), expected);
    // A signature over the payload verifies, but the bad node key DER is refused.
    assert!(matches!(
        d.verify(0),
        Err(IdentityError::InvalidPublicKeyDer { len: 3 })
    ));
}

#[test]
fn delegation_candid_round_trip() {
    let d = Delegation::sign(
        &alice(),
        bob().public_key_der(),
        &[Permission::CheckIn],
        NOW,
    );
    let bytes = candid::encode_one(&d).unwrap();
    let back: Delegation = candid::decode_one(&bytes).unwrap();
    assert_eq!(back, d);
}

// ---------------------------------------------------------------- envelopes

const MAX_TTL: u64 = 5 * 60 * 1_000_000_000;
const MAX_BYTES: usize = 64 * 1024;

fn envelope() -> Envelope {
    Envelope::sign(
        &alice(),
        "icrc1_transfer",
        candid::encode_one(42u64).unwrap(),
        vec![7; 16],
        NOW + MAX_TTL,
    )
}

#[test]
fn envelope_round_trip_and_verify() {
    let e = envelope();
    let bytes = e.to_bytes();
    assert!(bytes.starts_with(b"DIDL"));
    let back = Envelope::from_bytes(&bytes, MAX_BYTES).unwrap();
    assert_eq!(back, e);
    assert_eq!(back.verify(NOW, MAX_TTL).unwrap(), alice().principal());

    // A large argument, near the size bound, still decodes within the decoding quota.
    let big = Envelope::sign(
        &alice(),
        "m",
        vec![0xab; MAX_BYTES - 256],
        vec![1; 32],
        NOW + 1,
    );
    let bytes = big.to_bytes();
    assert!(bytes.len() <= MAX_BYTES, "{}", bytes.len());
    assert_eq!(Envelope::from_bytes(&bytes, MAX_BYTES).unwrap(), big);
}

#[test]
fn envelope_expiry_window() {
    let e = envelope();
    assert!(e.verify(NOW, MAX_TTL).is_ok());
    assert!(e.verify(NOW + MAX_TTL - 1, MAX_TTL).is_ok());
    assert!(matches!(
        e.verify(NOW + MAX_TTL, MAX_TTL),
        Err(IdentityError::Expired { .. })
    ));
    assert!(matches!(
        e.verify(NOW - 1, MAX_TTL),
        Err(IdentityError::ExpiryTooFar { .. })
    ));
    assert!(matches!(
        e.verify(NOW, MAX_TTL - 1),
        Err(IdentityError::ExpiryTooFar { .. })
    ));
    // No overflow near the end of time.
    let late = Envelope::sign(&alice(), "m", vec![], vec![0; 16], u64::MAX);
    assert!(late.verify(u64::MAX - 1, u64::MAX).is_ok());
}

#[test]
fn envelope_tampering_is_refused() {
    let e = envelope();
    let refused = |t: Envelope| t.verify(NOW, MAX_TTL).is_err();
    let mut t = e.clone();
    t.method = "icrc1_transfeR".into();
    assert!(refused(t));
    let mut t = e.clone();
    t.arg.push(0);
    assert!(refused(t));
    let mut t = e.clone();
    t.nonce[0] ^= 1;
    assert!(refused(t));
    let mut t = e.clone();
    t.expires_at_ns -= 1;
    assert!(refused(t));
    let mut t = e.clone();
    t.sender_public_key = bob().public_key_der();
    assert!(refused(t));
    let mut t = e.clone();
    t.signature.pop();
    assert!(refused(t));
    // Moving bytes between fields changes the payload.
    let mut t = e.clone();
    t.method.push('x');
    t.arg.remove(0);
    assert!(refused(t));
}

#[test]
fn envelope_payload_is_length_prefixed() {
    let e = Envelope::sign(&alice(), "ab", vec![1, 2, 3], vec![9; 16], 5);
    let mut expected = Vec::new();
    expected.extend_from_slice(&44u64.to_be_bytes());
    expected.extend_from_slice(&alice().public_key_der());
    expected.extend_from_slice(&2u64.to_be_bytes());
    expected.extend_from_slice(b"ab");
    expected.extend_from_slice(&3u64.to_be_bytes());
    expected.extend_from_slice(&[1, 2, 3]);
    expected.extend_from_slice(&16u64.to_be_bytes());
    expected.extend_from_slice(&[9; 16]);
    expected.extend_from_slice(&5u64.to_be_bytes());
    assert_eq!(e.signing_payload(), expected);
    verify(
        &alice().public_key_der(),
        Domain::LedgerRequest,
        &expected,
        &e.signature,
    )
    .unwrap();
}

#[test]
fn envelope_nonce_length() {
    for (len, ok) in [(0, false), (15, false), (16, true), (32, true), (33, false)] {
        let e = Envelope::sign(&alice(), "m", vec![], vec![1; len], NOW + 1);
        assert_eq!(e.verify(NOW, MAX_TTL).is_ok(), ok, "nonce of {len} bytes");
    }
}

#[test]
fn envelope_from_bytes_bounds() {
    let bytes = envelope().to_bytes();
    assert!(matches!(
        Envelope::from_bytes(&bytes, bytes.len() - 1),
        Err(IdentityError::TooLarge { .. })
    ));
    assert!(Envelope::from_bytes(&bytes, bytes.len()).is_ok());
    for garbage in [
        &b""[..],
        b"DIDL",
        b"garbage",
        &bytes[..bytes.len() - 1],
        b"DIDL\x01\x6d\x7f\x01\x00\xff\xff\xff\xff\x0f",
    ] {
        assert!(matches!(
            Envelope::from_bytes(garbage, MAX_BYTES),
            Err(IdentityError::Decode { .. })
        ));
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(Envelope::from_bytes(&trailing, MAX_BYTES).is_err());
    // A tiny message whose extra argument is a huge vector of nulls exhausts the quota.
    let bomb = candid::encode_args((envelope(), vec![(); 10_000_000])).unwrap();
    assert!(bomb.len() < bytes.len() + 64);
    assert!(matches!(
        Envelope::from_bytes(&bomb, MAX_BYTES),
        Err(IdentityError::Decode { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn from_bytes_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..512), didl in any::<bool>()) {
        let mut bytes = if didl { b"DIDL".to_vec() } else { Vec::new() };
        bytes.extend_from_slice(&tail);
        let _ = Envelope::from_bytes(&bytes, MAX_BYTES);
    }

    #[test]
    fn mutated_envelopes_never_panic(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let mut bytes = BYTES.get_or_init(|| envelope().to_bytes()).clone();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        if let Ok(e) = Envelope::from_bytes(&bytes, MAX_BYTES) {
            let _ = e.verify(NOW, MAX_TTL);
        }
    }
}
