//! One typed API to the ledger, used by the appliance and `dcctl`, over two
//! transports:
//!
//! - `http://127.0.0.1:PORT`: the local service `dc-ledger`; updates are
//!   signed [`dc_identity::Envelope`]s with a fresh nonce and a short expiry;
//! - `ic://CANISTER_ID?url=REPLICA_URL`: the canister on the Internet Computer
//!   through `ic-agent`, with the same Candid methods.
//!
//! Every method encodes its argument with Candid and decodes the reply the
//! same way on both transports, so behaviour is identical.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use candid::{CandidType, Nat, Principal};
use dc_identity::{Envelope, Identity};
use dc_ledger_core::dispatch::{decode_bounded, MAX_REPLY_BYTES};
use dc_ledger_core::*;
use rand_core::{OsRng, RngCore};
use serde::de::DeserializeOwned;

/// How long a signed request stays valid.
pub const REQUEST_TTL: Duration = Duration::from_secs(120);
/// Timeout of one HTTP exchange with the local service.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid ledger URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(
        "an identity is needed to {0}; pass --identity or create one with `dcctl identity new`"
    )]
    NoIdentity(String),
    #[error("cannot reach the ledger at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the ledger refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("the ledger refused: {0}")]
    Ledger(#[from] LedgerError),
    #[error("transfer refused: {0}")]
    Transfer(String),
    #[error("cannot decode the ledger's reply to {method}: {reason}")]
    Decode { method: String, reason: String },
    #[error("Internet Computer call failed: {0}")]
    Agent(String),
}

/// Result of every client call.
pub type ClientResult<T> = Result<T, ClientError>;

enum Transport {
    Local {
        base: String,
        http: reqwest::Client,
    },
    Ic {
        agent: ic_agent::Agent,
        canister: Principal,
        url: String,
    },
}

/// A connection to one ledger, optionally acting as one identity.
#[derive(Clone)]
pub struct LedgerClient {
    transport: Arc<Transport>,
    identity: Option<Arc<Identity>>,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Parses `ic://CANISTER_ID?url=REPLICA_URL` into (canister, replica URL).
pub fn parse_ic_url(url: &str) -> ClientResult<(Principal, String)> {
    let bad = |reason: &str| ClientError::BadUrl {
        url: url.into(),
        reason: reason.into(),
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    let canister_text = parsed
        .host_str()
        .ok_or_else(|| bad("missing canister id"))?;
    let canister =
        Principal::from_text(canister_text).map_err(|e| bad(&format!("canister id: {e}")))?;
    let replica = parsed
        .query_pairs()
        .find(|(k, _)| k == "url")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| "https://icp-api.io".into());
    Ok((canister, replica))
}

impl LedgerClient {
    /// Connects to `url` (see the crate docs for the two forms).
    pub async fn connect(url: &str, identity: Option<Identity>) -> ClientResult<Self> {
        let identity = identity.map(Arc::new);
        let transport = if url.starts_with("ic://") {
            let (canister, replica) = parse_ic_url(url)?;
            let mut builder = ic_agent::Agent::builder().with_url(replica.clone());
            if let Some(id) = &identity {
                let basic = ic_agent::identity::BasicIdentity::from_raw_key(&id.secret_bytes());
                builder = builder.with_identity(basic);
            }
            let agent = builder
                .build()
                .map_err(|e| ClientError::Agent(e.to_string()))?;
            if replica.starts_with("http://") {
                // A local replica: trust its root key (never done for mainnet URLs).
                agent.fetch_root_key().await.map_err(|e| {
                    ClientError::Agent(format!("fetching the replica's root key: {e}"))
                })?;
            }
            Transport::Ic {
                agent,
                canister,
                url: url.into(),
            }
        } else if url.starts_with("http://") || url.starts_with("https://") {
            let http = reqwest::Client::builder()
                .timeout(HTTP_TIMEOUT)
                .build()
                .map_err(|e| ClientError::Unreachable {
                    url: url.into(),
                    reason: e.to_string(),
                })?;
            Transport::Local {
                base: url.trim_end_matches('/').to_string(),
                http,
            }
        } else {
            return Err(ClientError::BadUrl {
                url: url.into(),
                reason: "expected http://HOST:PORT or ic://CANISTER_ID?url=REPLICA_URL".into(),
            });
        };
        Ok(LedgerClient {
            transport: Arc::new(transport),
            identity,
        })
    }

    /// The principal this client acts as (anonymous without an identity).
    pub fn principal(&self) -> Principal {
        self.identity
            .as_ref()
            .map_or(Principal::anonymous(), |i| i.principal())
    }

    /// The identity, if any.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_deref()
    }

    fn require_identity(&self, what: &str) -> ClientResult<&Identity> {
        self.identity
            .as_deref()
            .ok_or_else(|| ClientError::NoIdentity(what.into()))
    }

    async fn post_local(
        &self,
        base: &str,
        http: &reqwest::Client,
        path: &str,
        body: Vec<u8>,
    ) -> ClientResult<Vec<u8>> {
        let url = format!("{base}{path}");
        let resp = http
            .post(&url)
            .header("content-type", "application/candid")
            .body(body)
            .send()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: base.into(),
                reason: e.to_string(),
            })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Unreachable {
            url: base.into(),
            reason: e.to_string(),
        })?;
        if !status.is_success() {
            let message = String::from_utf8_lossy(&bytes).trim().to_string();
            return Err(ClientError::Rejected {
                status: status.as_u16(),
                message,
            });
        }
        Ok(bytes.to_vec())
    }

    /// Raw query: Candid argument bytes in, reply bytes out.
    pub async fn query_raw(&self, method: &str, arg: Vec<u8>) -> ClientResult<Vec<u8>> {
        match &*self.transport {
            Transport::Local { base, http } => {
                let body = candid::encode_args((method, serde_bytes::ByteBuf::from(arg))).map_err(
                    |e| ClientError::Decode {
                        method: method.into(),
                        reason: e.to_string(),
                    },
                )?;
                self.post_local(base, http, "/api/v1/query", body).await
            }
            Transport::Ic {
                agent, canister, ..
            } => agent
                .query(canister, method)
                .with_arg(arg)
                .call()
                .await
                .map_err(|e| ClientError::Agent(e.to_string())),
        }
    }

    /// Raw update: signed (local) or sent through the agent (IC).
    pub async fn update_raw(&self, method: &str, arg: Vec<u8>) -> ClientResult<Vec<u8>> {
        let identity = self.require_identity(method)?;
        match &*self.transport {
            Transport::Local { base, http } => {
                let mut nonce = vec![0u8; 16];
                OsRng.fill_bytes(&mut nonce);
                let expires = now_ns() + REQUEST_TTL.as_nanos() as u64;
                let envelope = Envelope::sign(identity, method, arg, nonce, expires);
                self.post_local(base, http, "/api/v1/update", envelope.to_bytes())
                    .await
            }
            Transport::Ic {
                agent, canister, ..
            } => agent
                .update(canister, method)
                .with_arg(arg)
                .call_and_wait()
                .await
                .map_err(|e| ClientError::Agent(e.to_string())),
        }
    }

    /// Typed query.
    pub async fn query<A: CandidType, R: CandidType + DeserializeOwned>(
        &self,
        method: &str,
        arg: A,
    ) -> ClientResult<R> {
        let bytes = candid::encode_one(arg).map_err(|e| ClientError::Decode {
            method: method.into(),
            reason: e.to_string(),
        })?;
        let reply = self.query_raw(method, bytes).await?;
        decode_reply(method, &reply)
    }

    /// Typed query of a method without arguments.
    pub async fn query0<R: CandidType + DeserializeOwned>(&self, method: &str) -> ClientResult<R> {
        let bytes = candid::encode_args(()).map_err(|e| ClientError::Decode {
            method: method.into(),
            reason: e.to_string(),
        })?;
        let reply = self.query_raw(method, bytes).await?;
        decode_reply(method, &reply)
    }

    /// Typed update.
    pub async fn update<A: CandidType, R: CandidType + DeserializeOwned>(
        &self,
        method: &str,
        arg: A,
    ) -> ClientResult<R> {
        let bytes = candid::encode_one(arg).map_err(|e| ClientError::Decode {
            method: method.into(),
            reason: e.to_string(),
        })?;
        let reply = self.update_raw(method, bytes).await?;
        decode_reply(method, &reply)
    }

    /// Where this client points.
    pub fn url(&self) -> String {
        match &*self.transport {
            Transport::Local { base, .. } => base.clone(),
            Transport::Ic { url, .. } => url.clone(),
        }
    }

    // ------------------------------------------------------------- token

    /// Balance of a principal's default account.
    pub async fn balance_of(&self, owner: Principal) -> ClientResult<u64> {
        let n: Nat = self.query("icrc1_balance_of", Account::of(owner)).await?;
        nat_u64("icrc1_balance_of", &n)
    }

    /// ICRC-1 transfer from the caller's default account; returns the block index.
    pub async fn transfer(
        &self,
        to: Account,
        amount_e9s: u64,
        memo: Option<Vec<u8>>,
    ) -> ClientResult<u64> {
        let arg = TransferArg {
            from_subaccount: None,
            to,
            amount: amount_e9s.into(),
            fee: None,
            memo: memo.map(serde_bytes::ByteBuf::from),
            created_at_time: Some(now_ns()),
        };
        let r: Result<Nat, TransferError> = self.update("icrc1_transfer", arg).await?;
        let block = r.map_err(|e| ClientError::Transfer(describe_transfer_error(&e)))?;
        nat_u64("icrc1_transfer", &block)
    }

    /// ICRC-2 approve; returns the block index.
    pub async fn approve(
        &self,
        spender: Account,
        amount_e9s: u64,
        expected_allowance: Option<u64>,
        expires_at: Option<u64>,
    ) -> ClientResult<u64> {
        let arg = ApproveArgs {
            from_subaccount: None,
            spender,
            amount: amount_e9s.into(),
            expected_allowance: expected_allowance.map(Nat::from),
            expires_at,
            fee: None,
            memo: None,
            created_at_time: Some(now_ns()),
        };
        let r: Result<Nat, ApproveError> = self.update("icrc2_approve", arg).await?;
        let block = r.map_err(|e| ClientError::Transfer(format!("{e:?}")))?;
        nat_u64("icrc2_approve", &block)
    }

    /// ICRC-2 transfer_from; returns the block index.
    pub async fn transfer_from(
        &self,
        from: Account,
        to: Account,
        amount_e9s: u64,
    ) -> ClientResult<u64> {
        let arg = TransferFromArgs {
            spender_subaccount: None,
            from,
            to,
            amount: amount_e9s.into(),
            fee: None,
            memo: None,
            created_at_time: Some(now_ns()),
        };
        let r: Result<Nat, TransferFromError> = self.update("icrc2_transfer_from", arg).await?;
        let block = r.map_err(|e| ClientError::Transfer(format!("{e:?}")))?;
        nat_u64("icrc2_transfer_from", &block)
    }

    /// ICRC-2 allowance.
    pub async fn allowance(&self, account: Account, spender: Account) -> ClientResult<Allowance> {
        self.query("icrc2_allowance", AllowanceArgs { account, spender })
            .await
    }

    /// Transfer fee.
    pub async fn fee(&self) -> ClientResult<u64> {
        let n: Nat = self.query0("icrc1_fee").await?;
        nat_u64("icrc1_fee", &n)
    }

    /// ICRC-3 blocks.
    pub async fn blocks(&self, start: u64, length: u64) -> ClientResult<dc_icrc3::GetBlocksResult> {
        self.query(
            "icrc3_get_blocks",
            vec![dc_icrc3::GetBlocksRequest {
                start: start.into(),
                length: length.into(),
            }],
        )
        .await
    }

    /// Ledger totals.
    pub async fn stats(&self) -> ClientResult<LedgerStats> {
        self.query0("ledger_stats").await
    }

    /// Install-time parameters.
    pub async fn params(&self) -> ClientResult<Params> {
        self.query0("get_params").await
    }

    // ------------------------------------------------------------ market

    /// Registers the caller as a provider.
    pub async fn register_provider(&self, profile: ProviderProfile) -> ClientResult<Principal> {
        flatten(self.update("register_provider", profile).await?)
    }

    /// A provider's public record.
    pub async fn provider(&self, p: Principal) -> ClientResult<Option<ProviderInfo>> {
        self.query("get_provider", p).await
    }

    /// Registers a node under the delegation's provider.
    pub async fn register_node(&self, args: RegisterNodeArgs) -> ClientResult<Principal> {
        flatten(self.update("register_node", args).await?)
    }

    /// Revokes one of the caller's nodes.
    pub async fn revoke_node(&self, node: Principal) -> ClientResult<()> {
        flatten(self.update("revoke_node", node).await?)
    }

    /// A node's record.
    pub async fn node(&self, p: Principal) -> ClientResult<Option<NodeInfo>> {
        self.query("get_node", p).await
    }

    /// Publishes an offering; returns its id.
    pub async fn add_offering(&self, spec: OfferingSpec) -> ClientResult<u64> {
        flatten(self.update("add_offering", spec).await?)
    }

    /// Withdraws an offering.
    pub async fn remove_offering(&self, id: u64) -> ClientResult<()> {
        flatten(self.update("remove_offering", id).await?)
    }

    /// An offering by id.
    pub async fn offering(&self, id: u64) -> ClientResult<Option<Offering>> {
        self.query("get_offering", id).await
    }

    /// Ranked matching offers.
    pub async fn search(&self, q: SearchQuery) -> ClientResult<SearchResult> {
        flatten(self.query("search_offerings", q).await?)
    }

    // --------------------------------------------------------- contracts

    /// Pays into escrow and opens a contract.
    pub async fn rent(&self, offering_id: u64, hours: u32) -> ClientResult<Contract> {
        flatten(self.update("rent", RentArgs { offering_id, hours }).await?)
    }

    /// A contract by id.
    pub async fn contract(&self, id: u64) -> ClientResult<Option<Contract>> {
        self.query("get_contract", id).await
    }

    /// Contracts of a party (the caller when `None`).
    pub async fn list_contracts(
        &self,
        party: Option<Principal>,
        offset: u64,
        limit: u32,
    ) -> ClientResult<Vec<Contract>> {
        let args = ListContractsArgs {
            party: Some(party.unwrap_or_else(|| self.principal())),
            offset: Some(offset),
            limit: Some(limit),
        };
        flatten(self.query("list_contracts", args).await?)
    }

    /// Node or provider accepts a contract.
    pub async fn accept_contract(&self, id: u64) -> ClientResult<Contract> {
        flatten(self.update("accept_contract", id).await?)
    }

    /// Provider refuses a contract.
    pub async fn reject_contract(&self, id: u64) -> ClientResult<Contract> {
        flatten(self.update("reject_contract", id).await?)
    }

    /// Node starts provisioning.
    pub async fn start_provisioning(&self, id: u64) -> ClientResult<Contract> {
        flatten(self.update("start_provisioning", id).await?)
    }

    /// Node reports a regular (non-confidential) VM running. A confidential
    /// VM must use [`Self::report_active_with_measurement`]: the ledger
    /// refuses this call for a contract whose offering is sev-snp or tdx.
    pub async fn report_active(
        &self,
        contract_id: u64,
        endpoint: String,
        evidence_hash: [u8; 32],
    ) -> ClientResult<Contract> {
        self.report_active_with_measurement(contract_id, endpoint, evidence_hash, None)
            .await
    }

    /// Node reports the VM running and publishes, for a confidential VM, the
    /// launch measurement it computed before launching it (SEV-SNP
    /// MEASUREMENT; TDX MRTD, RTMR1 and RTMR2). The ledger requires it exactly when the
    /// contract's offering is confidential, and records it on the contract
    /// for developers to compare with the VM's attestation report.
    pub async fn report_active_with_measurement(
        &self,
        contract_id: u64,
        endpoint: String,
        evidence_hash: [u8; 32],
        launch_measurement: Option<Vec<u8>>,
    ) -> ClientResult<Contract> {
        let args = ReportActiveArgs {
            contract_id,
            endpoint,
            evidence_hash: serde_bytes::ByteBuf::from(evidence_hash.to_vec()),
            launch_measurement: launch_measurement.map(serde_bytes::ByteBuf::from),
        };
        flatten(self.update("report_active", args).await?)
    }

    /// Pays for more hours.
    pub async fn extend(&self, contract_id: u64, hours: u32) -> ClientResult<Contract> {
        flatten(
            self.update("extend_contract", ExtendArgs { contract_id, hours })
                .await?,
        )
    }

    /// Ends a contract early.
    pub async fn cancel(&self, id: u64) -> ClientResult<Contract> {
        flatten(self.update("cancel_contract", id).await?)
    }

    /// Sets the custom domains of a contract's VM and whether the node's
    /// ingress sends it a PROXY protocol v2 header, replacing what it had
    /// (an empty list clears them). Only the contract's developer may, while
    /// the contract is not final; a name another non-final contract holds is
    /// refused (`LedgerError::AlreadyRegistered`). The node routes the names
    /// by SNI without terminating TLS, once their DNS points at it; see
    /// `dc_ledger_core::ingress` for the rules.
    pub async fn set_contract_ingress(
        &self,
        contract_id: u64,
        domains: Vec<String>,
        proxy_protocol: bool,
    ) -> ClientResult<Contract> {
        let args = SetIngressArgs {
            contract_id,
            domains,
            proxy_protocol,
        };
        flatten(self.update("set_contract_ingress", args).await?)
    }

    // -------------------------------------------------------- reputation

    /// Reputation of a principal.
    pub async fn reputation(&self, p: Principal) -> ClientResult<u64> {
        self.query("get_reputation", p).await
    }

    /// Spends reputation to lower a counterparty's.
    pub async fn rate(
        &self,
        target: Principal,
        spend: u64,
        reason: String,
    ) -> ClientResult<RateResult> {
        flatten(
            self.update(
                "rate",
                RateArgs {
                    target,
                    spend,
                    reason,
                },
            )
            .await?,
        )
    }

    /// Public ratings concerning a principal.
    pub async fn ratings(&self, p: Principal) -> ClientResult<Vec<RatingRecord>> {
        self.query("list_ratings", p).await
    }

    // ----------------------------------------------------------- rewards

    /// What a node must sign to check in now.
    pub async fn check_in_challenge(&self) -> ClientResult<CheckInChallenge> {
        self.query0("get_check_in_challenge").await
    }

    /// Checks the caller (a node) in for the open block; returns the height.
    pub async fn check_in(&self) -> ClientResult<u64> {
        let node = self.require_identity("check in")?;
        let ch = self.check_in_challenge().await?;
        let msg = check_in_message(ch.block_height, &ch.previous_block_hash, &node.principal());
        let signature = node.sign(dc_identity::Domain::CheckIn, &msg);
        let args = CheckInArgs {
            block_height: ch.block_height,
            previous_block_hash: ch.previous_block_hash,
            signature: serde_bytes::ByteBuf::from(signature.to_vec()),
        };
        flatten(self.update("check_in", args).await?)
    }
}

fn decode_reply<R: CandidType + DeserializeOwned>(method: &str, bytes: &[u8]) -> ClientResult<R> {
    decode_bounded::<(R,)>(method, bytes, MAX_REPLY_BYTES)
        .map(|(r,)| r)
        .map_err(|e| ClientError::Decode {
            method: method.into(),
            reason: e.to_string(),
        })
}

fn flatten<T>(r: Result<T, LedgerError>) -> ClientResult<T> {
    r.map_err(ClientError::Ledger)
}

fn nat_u64(method: &str, n: &Nat) -> ClientResult<u64> {
    u64::try_from(&n.0).map_err(|_| ClientError::Decode {
        method: method.into(),
        reason: format!("{n} exceeds 64 bits"),
    })
}

/// One readable line for an ICRC-1 transfer error.
pub fn describe_transfer_error(e: &TransferError) -> String {
    match e {
        TransferError::BadFee { expected_fee } => {
            format!("bad fee: the ledger's fee is {} e9s", expected_fee.0)
        }
        TransferError::BadBurn { min_burn_amount } => {
            format!("burn below the minimum of {} e9s", min_burn_amount.0)
        }
        TransferError::InsufficientFunds { balance } => {
            format!("insufficient funds: balance is {} e9s", balance.0)
        }
        TransferError::TooOld => "transaction too old".into(),
        TransferError::CreatedInFuture { ledger_time } => {
            format!("created in the future (ledger time {ledger_time})")
        }
        TransferError::TemporarilyUnavailable => "ledger temporarily unavailable".into(),
        TransferError::Duplicate { duplicate_of } => {
            format!("duplicate of block {}", duplicate_of.0)
        }
        TransferError::GenericError {
            error_code,
            message,
        } => format!("{message} (code {})", error_code.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ic_urls_parse_and_bad_ones_are_refused() {
        let (c, r) =
            parse_ic_url("ic://ryjl3-tyaaa-aaaaa-aaaba-cai?url=http://127.0.0.1:4943").unwrap();
        assert_eq!(c.to_text(), "ryjl3-tyaaa-aaaaa-aaaba-cai");
        assert_eq!(r, "http://127.0.0.1:4943");
        let (_, default) = parse_ic_url("ic://ryjl3-tyaaa-aaaaa-aaaba-cai").unwrap();
        assert_eq!(default, "https://icp-api.io");
        assert!(parse_ic_url("ic://not-a-principal?url=http://x").is_err());
        assert!(parse_ic_url("ic://").is_err());
    }

    #[tokio::test]
    async fn unknown_schemes_and_missing_identity_are_clear_errors() {
        assert!(matches!(
            LedgerClient::connect("ftp://x", None).await,
            Err(ClientError::BadUrl { .. })
        ));
        let c = LedgerClient::connect("http://127.0.0.1:1", None)
            .await
            .unwrap();
        assert!(matches!(
            c.transfer(Account::of(Principal::anonymous()), 1, None)
                .await,
            Err(ClientError::NoIdentity(_))
        ));
        assert!(matches!(
            c.balance_of(Principal::anonymous()).await,
            Err(ClientError::Unreachable { .. })
        ));
    }
}
