//! Where pending tokens live: [`RedisStore`], [`MemoryStore`], and the [`FallbackStore`]
//! that serves from Redis and falls back to memory by the configured policy.
//!
//! Every store keeps the same contract: one pending token per device (issuing replaces
//! it), a token is consumed at most once, and an expired token is absent at once.

mod blocks_file;
mod fallback;
mod fleet;
mod incarnation;
mod ledger;
mod memory;
mod redis;
mod stale;
mod topology;

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::domain::{DeviceId, Jti};
use crate::registry::{Block, CertificateRecord, Revocation};

pub use blocks_file::{BLOCKS_FILE, BlocksFile};
pub use fallback::FallbackStore;
pub use fleet::{FleetBatch, FleetSource};
pub use ledger::{LEDGER_FILE, Ledger};
pub use memory::MemoryStore;
pub use redis::{
    EVENTS_KEPT, HistoryBatch, LimitSubject, Persistence, ProblemKind, RedisConfig, RedisProblem,
    RedisStore, Shortfall,
};
pub use stale::StaleInRedis;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeOutcome {
    /// The token was pending and is now used up.
    Consumed,
    /// Never issued, already used, replaced, revoked or expired.
    NotFound,
    /// The device is blocked: its token, wherever and whenever it was issued, gets no
    /// certificate.
    Blocked,
}

/// What [`TokenStore::issue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issued {
    Issued,
    /// The device is blocked: nothing was written.
    Blocked,
    /// Redis stopped answering while the token was being written, so it may hold it:
    /// that `jti` must not go into memory as well (another instance could use the copy in
    /// Redis, this one the copy in memory). Issue again with a new `jti`.
    Unsure,
}

/// The single use of a renewal proof: an id for it (from the JWT's `jti`) and when it was
/// made (its `iat`; accepted until 300 s after, as the proof's `exp` must be).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProofUse {
    pub id: u64,
    pub issued_at: u64,
}

impl ProofUse {
    /// Until when (unix s) the proof must be remembered: it is accepted until
    /// [`PROOF_LIFETIME`] after its `iat`, give or take a device's clock skew
    /// ([`crate::clock::DEVICE_CLOCK_SKEW_SECS`]): its `exp` is accepted that late.
    pub fn remembered_until(&self) -> u64 {
        self.issued_at + PROOF_LIFETIME.as_secs() + crate::clock::DEVICE_CLOCK_SKEW_SECS
    }
}

/// How long a renewal proof is accepted after its `iat` (its `exp` may not be later).
pub const PROOF_LIFETIME: Duration = Duration::from_secs(300);

/// What [`CertificateRegistry::renew`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// The new certificate is recorded; `superseded` is the previous one's record when
    /// this renewal revoked it.
    Renewed {
        superseded: Option<CertificateRecord>,
    },
    /// Nothing recorded: the proof was used already.
    ProofUsed,
    /// Nothing recorded: the device is blocked.
    Blocked,
    /// Nothing recorded: the certificate presented is revoked.
    PreviousRevoked,
    /// Nothing recorded: the registry holds no record of the certificate presented for
    /// this device (never recorded, issued elsewhere, or forgotten long after expiry).
    /// What the registry cannot vouch for never renews: its revocation could be unknown.
    PreviousUnknown,
    /// Nothing recorded: the certificate presented was renewed moments ago, for the same
    /// key (a retry whose first answer was lost): its successor, handed out again.
    AlreadyRenewed(Handover),
    /// Nothing recorded: the certificate presented was renewed already (a certificate
    /// renews once; its successor renews next).
    PreviousRenewed,
}

/// How long a renewal's certificate is kept for a retry of that renewal.
pub const HANDOVER_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The certificate a renewal handed out, kept [`HANDOVER_WINDOW`] so that a retry of
/// the renewal (its answer lost, or a 503 after the write) gets it again rather than a
/// refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    pub serial: [u8; 16],
    /// Unix seconds.
    pub not_after: u64,
    pub pem: String,
    /// The renewal proof's `csr_key` of the key it carries: only a retry for that key
    /// gets it.
    pub csr_key: String,
}

impl Handover {
    /// One line of text (the PEM's newlines kept after the first line).
    pub fn pack(&self) -> String {
        format!(
            "{} {} {}\n{}",
            hex::encode_upper(self.serial),
            self.not_after,
            self.csr_key,
            self.pem
        )
    }

    pub fn unpack(text: &str) -> Option<Self> {
        let (head, pem) = text.split_once('\n')?;
        let mut words = head.split(' ');
        let serial = crate::registry::parse_serial(words.next()?)?;
        let not_after = words.next()?.parse().ok()?;
        let csr_key = words.next()?.to_owned();
        Some(Self {
            serial,
            not_after,
            pem: pem.to_owned(),
            csr_key,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store that holds (or may hold) the answer cannot be reached. Only this error
    /// lets the fallback policy turn to memory.
    #[error("token store unreachable: {0}")]
    Unreachable(String),
    /// The store answered, but not with a result: an error reply, or a device being
    /// re-onboarded by too many requests at once. Memory must not step in here: Redis is
    /// up, and a token issued beside it would be a second live token for the device.
    #[error("token store failed: {0}")]
    Failed(String),
    /// The shard that holds this request's keys has fewer online replicas than
    /// `redis.wait_replicas` asks for: refused before anything is written, with why.
    /// Memory must not step in: Redis is up.
    #[error("{0}")]
    ReplicasMissing(String),
    /// Redis lost writes a while ago, and whether this request was already served before
    /// that cannot be told until `retry_after` seconds have passed.
    #[error("token store lost recent writes; retry in {retry_after} s")]
    Unsure { retry_after: u64 },
}

/// How long a signed timestamp must be remembered: it is accepted within `skew` of the
/// server's clock on either side.
pub fn replay_window(skew: Duration) -> Duration {
    skew * 2 + Duration::from_secs(1)
}

/// Which store new tokens go to right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageMode {
    Redis,
    Memory,
    /// Redis is required (fallback `none`) and cannot be reached.
    Unavailable,
}

impl StorageMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageMode::Redis => "redis",
            StorageMode::Memory => "memory",
            StorageMode::Unavailable => "unavailable",
        }
    }
}

/// Counts of pending tokens in Redis, taken by a background SCAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisCounts {
    pub tokens: u64,
    pub devices: u64,
    pub counted_at: SystemTime,
    pub took: Duration,
}

#[derive(Debug, Clone)]
pub struct RedisStats {
    pub connected: bool,
    /// The topology's name, and on a cluster the primaries that passed the last check.
    pub topology: (&'static str, Option<usize>),
    /// `None` until the first count has finished.
    pub counts: Option<RedisCounts>,
    /// Why Redis is not in use, or refused a request's command within the last minute.
    pub problem: Option<RedisProblem>,
    /// Primaries with fewer online replicas than `redis.wait_replicas`, at the last check.
    pub shortfalls: Vec<Shortfall>,
    /// What Redis keeps across a restart; `None` until read.
    pub persistence: Option<Persistence>,
}

#[derive(Debug, Clone)]
pub struct StoreStats {
    pub mode: StorageMode,
    /// `None` when Redis is switched off.
    pub redis: Option<RedisStats>,
    /// Live tokens held in memory (all of them when Redis is off; those issued during an
    /// outage otherwise).
    pub memory_tokens: u64,
}

/// What the store keeps of a pending token beside its jti: what its JWT and enrollment
/// code say, so that a door that gets only the device id can find the credential again
/// (CMP's password-based MAC, RFC 9483 §3.2, whose secret never travels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFacts {
    pub group: String,
    /// The store epoch the token belongs to (see [`TokenStore::consume`]).
    pub epoch: u64,
    /// When it expires, unix seconds (the JWT's `exp`).
    pub expires_at: u64,
}

impl Default for TokenFacts {
    fn default() -> Self {
        Self {
            group: crate::registry::DEFAULT_GROUP.to_owned(),
            epoch: 0,
            expires_at: 0,
        }
    }
}

#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Makes `jti` the one pending token of `device` for `ttl`, replacing any other,
    /// unless the device is blocked. `facts` are kept with it for [`TokenStore::pending`].
    async fn issue(
        &self,
        device: &DeviceId,
        jti: &Jti,
        ttl: Duration,
        facts: &TokenFacts,
    ) -> Result<Issued, StoreError>;

    /// The device's pending token, if it has a live one: its jti and facts.
    async fn pending(&self, device: &DeviceId) -> Result<Option<(Jti, TokenFacts)>, StoreError>;

    /// Uses the token up if it is still pending, and records `certificate` in the same
    /// atomic step: a certificate is recorded exactly when its token is consumed.
    /// Exactly one of any number of concurrent calls with the same token gets
    /// `Consumed`. `epoch` is the store epoch the token was issued in
    /// ([`TokenStore::epoch`]): a store that lost writes since refuses it, since it
    /// cannot know whether the token was used.
    async fn consume(
        &self,
        device: &DeviceId,
        jti: &Jti,
        epoch: u64,
        certificate: Option<&CertificateRecord>,
    ) -> Result<ConsumeOutcome, StoreError>;

    /// Drops the device's pending token; `true` when there was one.
    async fn revoke_device(&self, device: &DeviceId) -> Result<bool, StoreError>;

    /// Remembers the signed timestamp `ts` of `device`, which is accepted within `skew`
    /// of the server's clock: `true` the first time, `false` for a replay. Used to accept
    /// each signed onboarding request once.
    async fn first_use(
        &self,
        device: &DeviceId,
        ts: u64,
        skew: Duration,
    ) -> Result<bool, StoreError>;

    async fn stats(&self) -> StoreStats;

    /// The epoch a token issued now belongs to. It moves when the store notices it lost
    /// writes, so that [`TokenStore::consume`] can refuse tokens from before.
    fn epoch(&self) -> u64 {
        0
    }
}

/// The revoked certificates that are not expired yet, and the revision of that list: the
/// moment (unix milliseconds) of its latest revocation, 0 before any. Every instance
/// reads the same revision, which is what CRL numbers are made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevokedList {
    pub revision: u64,
    pub entries: Vec<RevokedCertificate>,
}

/// One entry of a [`RevokedList`]: what a CRL needs, and until when it needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevokedCertificate {
    pub serial: [u8; 16],
    pub revocation: Revocation,
    /// Unix seconds: past it, the entry leaves the CRL.
    pub not_after: u64,
}

/// The certificates issued: records written by [`TokenStore::consume`], looked up and
/// revoked here.
#[async_trait]
pub trait CertificateRegistry: Send + Sync + 'static {
    async fn certificate(&self, serial: &[u8; 16])
    -> Result<Option<CertificateRecord>, StoreError>;

    async fn certificates_of(
        &self,
        device: &DeviceId,
    ) -> Result<Vec<CertificateRecord>, StoreError>;

    /// Revokes the certificate; answers its record as it now stands (with the first
    /// revocation's time and reason when it was revoked already), `None` when unknown.
    async fn revoke(
        &self,
        serial: &[u8; 16],
        revocation: Revocation,
    ) -> Result<Option<CertificateRecord>, StoreError>;

    /// The moment of the latest revocation (unix ms), cheap enough to poll.
    async fn revision(&self) -> Result<u64, StoreError>;

    async fn revoked(&self) -> Result<RevokedList, StoreError>;

    /// Puts a serial the registry holds no record of on the revoked list, until
    /// `entry.not_after` (RFC 5280 §5.3: a CRL entry needs only the serial). A serial
    /// listed before keeps its first revocation, which is answered. The caller checks that
    /// no record exists: a recorded certificate is revoked through its record.
    async fn list_unrecorded(
        &self,
        entry: RevokedCertificate,
    ) -> Result<RevokedCertificate, StoreError>;

    /// Records a certificate the CA signed that the registry does not know (issued
    /// before the registry, or elsewhere); a record already there stands. Answers the
    /// record that stands.
    async fn import(&self, record: &CertificateRecord) -> Result<CertificateRecord, StoreError>;

    /// Records `record`, the certificate that renews `previous`, in one atomic step with
    /// the checks that must hold at that moment: the device is not blocked, `previous`
    /// is recorded for the device, not renewed before and not revoked, and `proof` was
    /// not used before. `previous` then names `record` as its successor, and `handover`
    /// is kept for a retry ([`Renewal::AlreadyRenewed`]). With `supersede`, `previous`
    /// is revoked in the same step.
    async fn renew(
        &self,
        previous: &[u8; 16],
        proof: Option<ProofUse>,
        record: &CertificateRecord,
        handover: &Handover,
        supersede: Option<Revocation>,
    ) -> Result<Renewal, StoreError>;

    /// The certificate that renewed `serial`, if it was renewed.
    async fn successor_of(&self, serial: &[u8; 16]) -> Result<Option<[u8; 16]>, StoreError>;

    /// Blocks the device; answers the block that stands (the first one, when it was
    /// blocked already).
    async fn block(&self, device: &DeviceId, block: Block) -> Result<Block, StoreError>;

    /// Lifts the device's block; `true` when there was one.
    async fn unblock(&self, device: &DeviceId) -> Result<bool, StoreError>;

    async fn blocked(&self, device: &DeviceId) -> Result<Option<Block>, StoreError>;
}
