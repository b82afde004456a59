//! The service: one committer thread owns every change to the ledger.
//!
//! HTTP handlers verify signed envelopes in parallel and queue the call. The
//! committer takes everything queued (a batch), applies each call through the
//! core's Candid dispatcher, journals the batch with one `fdatasync`, and only
//! then answers. Queries read the ledger under a shared lock, which the
//! committer holds while a batch is applied and synced, so no reader ever
//! sees a change before it is durable.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use candid::Principal;
use dc_identity::Envelope;
use dc_ledger_core::dispatch::{self, DispatchError, Mode};
use dc_ledger_core::Ledger;
use tokio::sync::{mpsc, oneshot};

use crate::nonces::NonceCache;
use crate::store::{Entry, Store, StoreError};

/// Longest an envelope may be valid for.
pub const MAX_ENVELOPE_TTL_NS: u64 = 5 * 60 * 1_000_000_000;
/// Largest request body.
pub const MAX_REQUEST_BYTES: usize = dispatch::MAX_ARG_BYTES + 4 * 1024;
/// Most requests applied per journal sync.
const MAX_BATCH: usize = 4_096;
/// Snapshot after this many journal entries or bytes.
const SNAPSHOT_EVERY_ENTRIES: u64 = 200_000;
const SNAPSHOT_EVERY_BYTES: u64 = 256 * 1024 * 1024;

/// The source of time: a parameter so tests can control it.
pub trait Clock: Send + Sync + 'static {
    fn now_ns(&self) -> u64;
}

/// Wall-clock time.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }
}

/// Why a request was refused before or instead of reaching the ledger.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("request of {0} bytes exceeds the limit of {MAX_REQUEST_BYTES}")]
    TooLarge(usize),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("signature refused: {0}")]
    Unauthenticated(String),
    #[error("replayed request: nonce already used by {0}")]
    Replayed(Principal),
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    #[error("ledger storage failed: {0}")]
    Storage(String),
    #[error("the ledger is shutting down")]
    ShuttingDown,
}

/// A call the committer applies.
struct Call {
    caller: Principal,
    method: String,
    arg: Vec<u8>,
    nonce: Vec<u8>,
    expires_at_ns: u64,
    reply: oneshot::Sender<Result<Vec<u8>, ServiceError>>,
}

enum Work {
    Call(Call),
    Tick,
    Snapshot(oneshot::Sender<Result<(), String>>),
}

/// Handle to the running service, shared by HTTP handlers.
#[derive(Clone)]
pub struct Service {
    ledger: Arc<RwLock<Ledger>>,
    work: mpsc::UnboundedSender<Work>,
    clock: Arc<dyn Clock>,
}

/// How the service was opened.
pub struct Opened {
    pub service: Service,
    pub replayed: u64,
    pub truncated_bytes: u64,
    pub created: bool,
    pub committer: std::thread::JoinHandle<()>,
}

impl Service {
    /// Opens (or, with `genesis`, creates) the ledger in `dir` and starts the
    /// committer thread.
    pub fn open(
        dir: PathBuf,
        genesis: Option<dc_ledger_core::Genesis>,
        clock: Arc<dyn Clock>,
    ) -> Result<Opened, anyhow::Error> {
        let (store, ledger, nonces, replayed, truncated_bytes, created) = if Store::exists(&dir) {
            let (store, rec) = Store::open(&dir)?;
            (
                store,
                rec.ledger,
                rec.nonces,
                rec.replayed,
                rec.truncated_bytes,
                false,
            )
        } else {
            let Some(genesis) = genesis else {
                anyhow::bail!(
                    "no ledger in {}; pass --genesis FILE.toml to create one",
                    dir.display()
                );
            };
            let ledger =
                Ledger::new(genesis).map_err(|e| anyhow::anyhow!("invalid genesis: {e}"))?;
            let store = Store::create(&dir, &ledger)?;
            (store, ledger, NonceCache::default(), 0, 0, true)
        };
        let ledger = Arc::new(RwLock::new(ledger));
        let (tx, rx) = mpsc::unbounded_channel();
        let committer = {
            let ledger = ledger.clone();
            let clock = clock.clone();
            std::thread::Builder::new()
                .name("dc-ledger-commit".into())
                .spawn(move || {
                    let run = std::panic::AssertUnwindSafe(|| {
                        commit_loop(ledger, store, nonces, rx, clock)
                    });
                    if std::panic::catch_unwind(run).is_err() {
                        // Stop rather than limp on with a poisoned ledger; a
                        // restart recovers exactly what is durable.
                        tracing::error!("the committer panicked; stopping");
                        std::process::exit(70);
                    }
                })?
        };
        Ok(Opened {
            service: Service {
                ledger,
                work: tx,
                clock,
            },
            replayed,
            truncated_bytes,
            created,
            committer,
        })
    }

    /// Current time of the service's clock.
    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    /// Verifies a signed envelope and applies its update durably.
    pub async fn update(&self, body: &[u8]) -> Result<Vec<u8>, ServiceError> {
        if body.len() > MAX_REQUEST_BYTES {
            return Err(ServiceError::TooLarge(body.len()));
        }
        let envelope = Envelope::from_bytes(body, MAX_REQUEST_BYTES)
            .map_err(|e| ServiceError::Malformed(e.to_string()))?;
        let caller = envelope
            .verify(self.clock.now_ns(), MAX_ENVELOPE_TTL_NS)
            .map_err(|e| ServiceError::Unauthenticated(e.to_string()))?;
        match dispatch::mode_of(&envelope.method) {
            Some(Mode::Update) => {}
            Some(Mode::Query) => return Err(DispatchError::NotAnUpdate(envelope.method).into()),
            None => return Err(DispatchError::UnknownMethod(envelope.method).into()),
        }
        let (reply, rx) = oneshot::channel();
        let call = Call {
            caller,
            method: envelope.method,
            arg: envelope.arg,
            nonce: envelope.nonce,
            expires_at_ns: envelope.expires_at_ns,
            reply,
        };
        self.work
            .send(Work::Call(call))
            .map_err(|_| ServiceError::ShuttingDown)?;
        rx.await.map_err(|_| ServiceError::ShuttingDown)?
    }

    /// Answers a query (unsigned; the caller is anonymous).
    pub fn query(&self, method: &str, arg: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let ledger = self
            .ledger
            .read()
            .map_err(|_| ServiceError::Storage("ledger lock poisoned".into()))?;
        Ok(dispatch::query(
            &ledger,
            Principal::anonymous(),
            method,
            arg,
        )?)
    }

    /// Reads the ledger directly (status pages, tests).
    pub fn with_ledger<R>(&self, f: impl FnOnce(&Ledger) -> R) -> Result<R, ServiceError> {
        let ledger = self
            .ledger
            .read()
            .map_err(|_| ServiceError::Storage("ledger lock poisoned".into()))?;
        Ok(f(&ledger))
    }

    /// Lets time pass in the ledger (called periodically).
    pub fn tick(&self) {
        let _ = self.work.send(Work::Tick);
    }

    /// Writes a snapshot now (on shutdown).
    pub async fn snapshot(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.work
            .send(Work::Snapshot(tx))
            .map_err(|_| "shutting down".to_string())?;
        rx.await.map_err(|_| "shutting down".to_string())?
    }
}

fn commit_loop(
    ledger: Arc<RwLock<Ledger>>,
    mut store: Store,
    mut nonces: NonceCache,
    mut rx: mpsc::UnboundedReceiver<Work>,
    clock: Arc<dyn Clock>,
) {
    // The committer's time never runs backwards, so a nonce pruned at T can
    // never meet an envelope that is still valid at the committer's time.
    // Across restarts too: it starts at the recovered ledger's time (its last
    // committed call or block), so a clock stepped back before a restart
    // cannot reopen the window of requests already applied.
    let mut last_now = ledger.read().map_or(0, |l| l.time_ns());
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let mut entries = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let mut snapshot_requests = Vec::new();
        let Ok(mut guard) = ledger.write() else {
            tracing::error!("ledger lock poisoned; stopping");
            return;
        };
        let now = clock.now_ns().max(last_now);
        last_now = now;
        nonces.prune(now);
        for work in batch {
            match work {
                Work::Call(call) => {
                    // Checked again here: a request may have expired while
                    // queued, and its nonce may already be pruned.
                    if call.expires_at_ns <= now {
                        replies.push((
                            call.reply,
                            Err(ServiceError::Unauthenticated(
                                "the request expired before it could be applied".into(),
                            )),
                        ));
                        continue;
                    }
                    if nonces.contains(&call.caller, &call.nonce) {
                        replies.push((call.reply, Err(ServiceError::Replayed(call.caller))));
                        continue;
                    }
                    nonces.insert(&call.caller, &call.nonce, call.expires_at_ns);
                    match dispatch::update(&mut guard, call.caller, now, &call.method, &call.arg) {
                        Ok(out) => {
                            entries.push(if out.committed {
                                Entry::Call {
                                    now_ns: now,
                                    caller: call.caller,
                                    method: call.method,
                                    arg: call.arg,
                                    nonce: call.nonce,
                                    expires_at_ns: call.expires_at_ns,
                                }
                            } else {
                                Entry::Refused {
                                    caller: call.caller,
                                    nonce: call.nonce,
                                    expires_at_ns: call.expires_at_ns,
                                }
                            });
                            replies.push((call.reply, Ok(out.reply)));
                        }
                        Err(e) => {
                            entries.push(Entry::Refused {
                                caller: call.caller,
                                nonce: call.nonce,
                                expires_at_ns: call.expires_at_ns,
                            });
                            replies.push((call.reply, Err(e.into())));
                        }
                    }
                }
                Work::Tick => {
                    // Journal only ticks that changed something; a tick that
                    // changes nothing leaves the ledger untouched.
                    if guard.tick(now) {
                        entries.push(Entry::Tick { now_ns: now });
                    }
                }
                Work::Snapshot(tx) => snapshot_requests.push(tx),
            }
        }
        if let Err(e) = store.append(&entries) {
            // The in-memory ledger is now ahead of the disk: answer nothing as
            // done and stop, so a restart recovers exactly what is durable.
            tracing::error!(error = %e, "journal write failed; stopping the ledger");
            for (reply, _) in replies {
                let _ = reply.send(Err(ServiceError::Storage(e.to_string())));
            }
            std::process::exit(70);
        }
        let wants = store.wants_snapshot(SNAPSHOT_EVERY_ENTRIES, SNAPSHOT_EVERY_BYTES);
        if wants || !snapshot_requests.is_empty() {
            let result = store
                .write_snapshot(&guard, &nonces)
                .map_err(|e: StoreError| e.to_string());
            if let Err(e) = &result {
                tracing::error!(error = %e, "snapshot failed; the journal still holds everything");
            }
            for tx in snapshot_requests {
                let _ = tx.send(result.clone());
            }
        }
        drop(guard);
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    use candid::Nat;
    use dc_identity::Identity;
    use dc_ledger_core::{Account, TransferArg};

    struct ManualClock(AtomicU64);

    impl Clock for ManualClock {
        fn now_ns(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    const MINUTE_NS: u64 = 60_000_000_000;

    /// A request applied, its nonce pruned once it expired and left out of
    /// a snapshot; then a restart with the wall clock stepped back into the
    /// request's validity (an RTC error before NTP, a restored VM): the
    /// committer's time resumes from the ledger's, so the request counts as
    /// expired and is not applied twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_clock_stepped_back_across_a_restart_reopens_no_request() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, bob) = (
            Identity::from_secret_bytes([1; 32]),
            Identity::from_secret_bytes([2; 32]),
        );
        let t1 = 1_800_000_000 * 1_000_000_000u64;
        let text = format!(
            "treasury = \"{}\"\n[params]\nblock_interval_secs = 600\n\
             [[balances]]\nprincipal = \"{}\"\namount_e9s = 1000000000000\n",
            Identity::from_secret_bytes([250; 32]).principal(),
            alice.principal()
        );
        let genesis = crate::genesis::parse("genesis.toml", &text, t1).unwrap();
        let clock = Arc::new(ManualClock(AtomicU64::new(t1)));
        let transfer = |nonce: u8, expires_at_ns: u64| {
            let arg = candid::encode_one(TransferArg {
                from_subaccount: None,
                to: Account::of(bob.principal()),
                amount: Nat::from(7u64),
                fee: None,
                memo: None,
                created_at_time: None,
            })
            .unwrap();
            Envelope::sign(
                &alice,
                "icrc1_transfer",
                arg,
                vec![nonce; 16],
                expires_at_ns,
            )
            .to_bytes()
        };
        let bob_balance = |s: &Service| {
            s.with_ledger(|l| l.balance_of(&Account::of(bob.principal())))
                .unwrap()
        };

        let opened = Service::open(dir.path().join("data"), Some(genesis), clock.clone()).unwrap();
        let first = transfer(1, t1 + 4 * MINUTE_NS);
        opened.service.update(&first).await.unwrap();
        clock.0.store(t1 + 6 * MINUTE_NS, Ordering::SeqCst);
        opened
            .service
            .update(&transfer(2, t1 + 10 * MINUTE_NS))
            .await
            .unwrap();
        opened.service.snapshot().await.unwrap();
        assert_eq!(bob_balance(&opened.service), 14);
        drop(opened.service);
        opened.committer.join().unwrap();

        clock.0.store(t1 + MINUTE_NS, Ordering::SeqCst);
        let reopened = Service::open(dir.path().join("data"), None, clock.clone()).unwrap();
        assert_eq!(bob_balance(&reopened.service), 14);
        let err = reopened.service.update(&first).await.unwrap_err();
        assert!(
            matches!(err, ServiceError::Unauthenticated(ref m) if m.contains("expired")),
            "{err}"
        );
        assert_eq!(bob_balance(&reopened.service), 14, "applied once only");
    }
}
