//! ICRC-3 building blocks for the Decent Cloud ledger, as pure logic.
//!
//! * [`Value`]: the ICRC-3 generic value (the block format) with the standard's
//!   Candid shape and its representation-independent hash ([`Value::hash`]).
//! * [`HashTree`]: the IC hash tree, its digest and CBOR encoding, and the
//!   certified tip of the log ([`tip_tree`], [`tip_certified_data`]) that
//!   `icrc3_get_tip_certificate` serves.
//! * [`leb128_u64`] and friends: the (S)LEB128 encodings the hashing relies on.
//! * The Candid types of the ICRC-3 endpoints ([`GetBlocksRequest`],
//!   [`GetBlocksResult`], [`ICRC3DataCertificate`], ...).
//!
//! Nothing here performs I/O or needs randomness, so the crate builds both
//! natively and for `wasm32-unknown-unknown` (the canister).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod hash_tree;
mod leb128;
mod types;
mod value;

pub use hash_tree::{
    tip_certified_data, tip_tree, HashTree, LAST_BLOCK_HASH_LABEL, LAST_BLOCK_INDEX_LABEL,
};
pub use leb128::{leb128_nat, leb128_u64, sleb128_i64, sleb128_int};
pub use types::{
    ArchivedBlocks, BlockWithId, GetArchivesArgs, GetArchivesResult, GetBlocksArgs,
    GetBlocksCallback, GetBlocksRequest, GetBlocksResult, ICRC3ArchiveInfo, ICRC3DataCertificate,
    SupportedBlockType,
};
pub use value::{MapBuilder, Value};

/// SHA-256 of `bytes`, the hash function used throughout ICRC-3 and the IC hash tree.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).into()
}
