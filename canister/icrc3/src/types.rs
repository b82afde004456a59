//! Candid types of the ICRC-3 endpoints, field names as in the standard.

use candid::types::reference::Func;
use candid::{CandidType, Nat, Principal};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::value::Value;

/// One range of blocks: `record { start : nat; length : nat }`.
#[derive(CandidType, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct GetBlocksRequest {
    /// Index of the first block.
    pub start: Nat,
    /// Number of blocks.
    pub length: Nat,
}

/// The argument of `icrc3_get_blocks`: `vec record { start : nat; length : nat }`.
pub type GetBlocksArgs = Vec<GetBlocksRequest>;

/// A block with its index: `record { id : nat; block : Value }`.
#[derive(CandidType, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct BlockWithId {
    /// Index of the block in the log.
    pub id: Nat,
    /// The block.
    pub block: Value,
}

/// The archive callback reference, with Candid type
/// `func (vec record { start : nat; length : nat }) -> (GetBlocksResult) query`.
///
/// This is what `candid::define_function!` generates, written out so it can
/// also implement `serde::Serialize` (as a `{ principal, method }` struct).
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct GetBlocksCallback(pub Func);

impl GetBlocksCallback {
    /// A reference to method `method` of canister `principal`.
    pub fn new(principal: Principal, method: impl Into<String>) -> Self {
        Self(Func {
            principal,
            method: method.into(),
        })
    }
}

impl From<Func> for GetBlocksCallback {
    fn from(f: Func) -> Self {
        Self(f)
    }
}

impl CandidType for GetBlocksCallback {
    fn _ty() -> candid::types::Type {
        candid::func!((GetBlocksArgs) -> (GetBlocksResult) query)
    }

    fn idl_serialize<S: candid::types::Serializer>(&self, serializer: S) -> Result<(), S::Error> {
        self.0.idl_serialize(serializer)
    }
}

impl Serialize for GetBlocksCallback {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Func", 2)?;
        s.serialize_field("principal", &self.0.principal)?;
        s.serialize_field("method", &self.0.method)?;
        s.end()
    }
}

/// Blocks held by an archive:
/// `record { args : vec GetBlocksRequest; callback : func (...) -> (GetBlocksResult) query }`.
#[derive(CandidType, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ArchivedBlocks {
    /// The ranges to request from the archive.
    pub args: GetBlocksArgs,
    /// The archive method to call with `args`.
    pub callback: GetBlocksCallback,
}

/// The result of `icrc3_get_blocks`.
#[derive(CandidType, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct GetBlocksResult {
    /// Total number of blocks in the log.
    pub log_length: Nat,
    /// Blocks served by this canister.
    pub blocks: Vec<BlockWithId>,
    /// Where to fetch the blocks held by archives.
    pub archived_blocks: Vec<ArchivedBlocks>,
}

/// The result of `icrc3_get_tip_certificate` (inside an `opt`):
/// `record { certificate : blob; hash_tree : blob }`.
#[derive(CandidType, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ICRC3DataCertificate {
    /// The subnet's certificate (`ic0.data_certificate`), CBOR.
    pub certificate: ByteBuf,
    /// The CBOR-encoded hash tree ([`crate::HashTree::to_cbor`]).
    pub hash_tree: ByteBuf,
}

/// One archive: `record { canister_id : principal; start : nat; end : nat }`.
#[derive(CandidType, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ICRC3ArchiveInfo {
    /// The archive canister.
    pub canister_id: Principal,
    /// First block index it holds.
    pub start: Nat,
    /// Last block index it holds (inclusive).
    pub end: Nat,
}

/// The argument of `icrc3_get_archives`: `record { from : opt principal }`.
#[derive(CandidType, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct GetArchivesArgs {
    /// List archives after this one (in the order the ledger keeps them).
    pub from: Option<Principal>,
}

/// The result of `icrc3_get_archives`.
pub type GetArchivesResult = Vec<ICRC3ArchiveInfo>;

/// One element of `icrc3_supported_block_types`: `record { block_type : text; url : text }`.
#[derive(CandidType, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct SupportedBlockType {
    /// The block type, e.g. `"1xfer"`.
    pub block_type: String,
    /// URL of the standard that defines it.
    pub url: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use candid::{Decode, Encode};

    fn sample_result() -> GetBlocksResult {
        let block = Value::map_builder()
            .text("btype", "1xfer")
            .nat("ts", 1_699_218_263)
            .blob("phash", [3u8; 32])
            .value(
                "tx",
                Value::map_builder()
                    .nat128("amt", u128::MAX)
                    .value(
                        "from",
                        Value::Array(vec![Value::blob(vec![1, 2, 3]), Value::int(-7)]),
                    )
                    .build(),
            )
            .build();
        GetBlocksResult {
            log_length: Nat::from(10u64),
            blocks: vec![
                BlockWithId {
                    id: Nat::from(8u64),
                    block: block.clone(),
                },
                BlockWithId {
                    id: Nat::from(9u64),
                    block: Value::Map(vec![]),
                },
            ],
            archived_blocks: vec![ArchivedBlocks {
                args: vec![GetBlocksRequest {
                    start: Nat::from(0u64),
                    length: Nat::from(8u64),
                }],
                callback: GetBlocksCallback::new(
                    Principal::from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 1, 1]),
                    "icrc3_get_blocks",
                ),
            }],
        }
    }

    #[test]
    fn get_blocks_result_round_trips() {
        let result = sample_result();
        let bytes = Encode!(&result).unwrap();
        let back = Decode!(&bytes, GetBlocksResult).unwrap();
        assert_eq!(result, back);
    }

    #[test]
    fn other_types_round_trip() {
        let cert = ICRC3DataCertificate {
            certificate: ByteBuf::from(vec![1, 2, 3]),
            hash_tree: ByteBuf::from(crate::tip_tree(5, [1; 32]).to_cbor()),
        };
        let archives: GetArchivesResult = vec![ICRC3ArchiveInfo {
            canister_id: Principal::management_canister(),
            start: Nat::from(0u64),
            end: Nat::from(99u64),
        }];
        let args = GetArchivesArgs {
            from: Some(Principal::anonymous()),
        };
        let types = vec![SupportedBlockType {
            block_type: "1xfer".into(),
            url: "https://github.com/dfinity/ICRC-1/tree/main/standards/ICRC-1".into(),
        }];
        let req: GetBlocksArgs = vec![GetBlocksRequest {
            start: Nat::from(1u64),
            length: Nat::from(2u64),
        }];
        let bytes = Encode!(&Some(cert.clone()), &archives, &args, &types, &req).unwrap();
        let (c, a, g, t, r) = Decode!(
            &bytes,
            Option<ICRC3DataCertificate>,
            GetArchivesResult,
            GetArchivesArgs,
            Vec<SupportedBlockType>,
            GetBlocksArgs
        )
        .unwrap();
        assert_eq!((c, a, g, t, r), (Some(cert), archives, args, types, req));
    }

    #[test]
    fn callback_has_query_func_type() {
        let ty = GetBlocksCallback::ty();
        match ty.as_ref() {
            candid::types::TypeInner::Func(f) => {
                assert_eq!(f.modes, vec![candid::types::FuncMode::Query]);
                assert_eq!(f.args.len(), 1);
                assert_eq!(f.rets.len(), 1);
                assert_eq!(f.args[0], GetBlocksArgs::ty());
            }
            other => panic!("not a func: {other:?}"),
        }
    }

    #[test]
    fn callback_serializes_with_serde() {
        // Any serde format works; candid's own encoding is covered above.
        let cb = GetBlocksCallback::new(Principal::anonymous(), "m");
        let mut buf = Vec::new();
        ciborium::ser::into_writer(&cb, &mut buf).unwrap();
        assert!(!buf.is_empty());
    }
}
