//! The queue runner: claims due recipients under a lease, sends each message to each
//! destination over pooled connections within the concurrency limits, records every outcome,
//! and makes the reports that are owed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use trimaran_core::delivery::{self, Resolved};
use trimaran_core::store::{
    now_unix, LocalDelivery, QueueOutcome, QueueRecord, QueueResult, QueueStatus, Store,
};
use trimaran_core::Core;

use crate::client::{ClientError, Connection, Dial, Envelope, RecipientParams, Reply};
use crate::route::{Destination, Host, RouteError, Router};
use crate::sign::{signing_domain, Signer};
use crate::transport::{self, Prepared};

/// Most recipients claimed at once; more wait in the store for the next claim.
const CLAIM_BATCH: usize = 500;
/// Claimed recipients in flight beyond which no more are claimed.
const MAX_IN_FLIGHT: usize = 2000;
/// How often the queue is looked at when nothing wakes the runner (other processes' mail,
/// retries coming due).
const POLL: Duration = Duration::from_secs(1);
/// How long an idle connection is kept for the next message to the same destination.
const IDLE_KEEP: Duration = Duration::from_secs(10);
/// How often keys are reloaded, so that `trimaran dkim generate` takes effect while running.
const KEY_RELOAD: Duration = Duration::from_secs(60);
/// How often reports are looked for.
const REPORT_EVERY: Duration = Duration::from_secs(2);

pub struct Runner {
    pub(crate) core: Arc<Core>,
    pub(crate) router: Router,
    tls: Arc<rustls::ClientConfig>,
    /// This process's name on the leases it takes.
    pub(crate) owner: String,
    signer: Mutex<Arc<Signer>>,
    connections: Arc<Semaphore>,
    per_destination: Mutex<HashMap<Destination, Arc<Semaphore>>>,
    idle: Mutex<HashMap<Destination, Vec<(Instant, Connection)>>>,
    /// Recipients this process holds leases on.
    in_flight: Mutex<HashSet<i64>>,
    /// Set when the process is asked to stop: nothing more is claimed.
    stopping: std::sync::atomic::AtomicBool,
}

/// One message's recipients at one destination: one SMTP transaction.
struct Job {
    records: Vec<QueueRecord>,
}

impl Runner {
    pub fn new(core: Arc<Core>) -> Result<Arc<Runner>, String> {
        let config = &core.config.outbound;
        let router = Router::new(config)?;
        let owner = format!(
            "{}/{}/{:08x}",
            core.config.hostname,
            std::process::id(),
            rand32()
        );
        Ok(Arc::new(Runner {
            router,
            tls: crate::client::opportunistic_tls(),
            owner,
            signer: Mutex::new(Arc::new(Signer::default())),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            per_destination: Mutex::new(HashMap::new()),
            idle: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashSet::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            core,
        }))
    }

    fn store(&self) -> &Store {
        &self.core.store
    }

    fn lease(&self) -> i64 {
        self.core.config.outbound.lease as i64
    }

    /// Runs forever: claims, sends, renews leases, reports.
    pub async fn run(self: Arc<Self>) {
        tracing::info!(owner = %self.owner, "outbound queue runner started");
        tokio::spawn(self.clone().renew_leases());
        tokio::spawn(self.clone().report_loop());
        tokio::spawn(self.clone().close_idle());
        let mut keys_loaded: Option<Instant> = None;
        let mut failing = false;
        while !self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            if keys_loaded.is_none_or(|t| t.elapsed() >= KEY_RELOAD) {
                self.reload_keys().await;
                keys_loaded = Some(Instant::now());
            }
            let room = MAX_IN_FLIGHT.saturating_sub(self.in_flight.lock().unwrap().len());
            let claimed = if room == 0 {
                Ok(Vec::new())
            } else {
                let now = now_unix();
                self.store()
                    .meta()
                    .queue_claim(&self.owner, now, now + self.lease(), room.min(CLAIM_BATCH))
                    .await
            };
            match claimed {
                Ok(records) if !records.is_empty() => {
                    failing = false;
                    let full = records.len() >= room.min(CLAIM_BATCH);
                    self.dispatch(records).await;
                    if full {
                        continue;
                    }
                }
                Ok(_) => failing = false,
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "claiming queued mail failed; retrying");
                    }
                    failing = true;
                }
            }
            let _ = tokio::time::timeout(POLL, self.core.queue_wake.notified()).await;
        }
    }

    /// Stops claiming and waits, up to `grace`, for the transactions under way to finish and
    /// be recorded: a send cut off between the peer's 250 and our record of it would be sent
    /// again by whoever takes the lease over. Returns how many recipients were left.
    pub async fn stop(&self, grace: Duration) -> usize {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.core.queue_wake.notify_one();
        let deadline = Instant::now() + grace;
        loop {
            let left = self.in_flight.lock().unwrap().len();
            if left == 0 || Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn reload_keys(&self) {
        match self.store().meta().dkim_keys().await {
            Ok(keys) => {
                let signer = Signer::new(keys);
                tracing::debug!(domains = signer.domains(), "DKIM keys loaded");
                *self.signer.lock().unwrap() = Arc::new(signer);
            }
            Err(e) => tracing::warn!(error = %e, "loading DKIM keys failed; keeping the old ones"),
        }
    }

    /// Splits claimed recipients into transactions by message and destination and starts the
    /// lanes that send them.
    async fn dispatch(self: &Arc<Self>, mut records: Vec<QueueRecord>) {
        {
            // A lease of ours that lapsed while we were still at it (a stalled store) comes
            // back in a claim: the work is already under way here, so it is not started twice.
            let mut in_flight = self.in_flight.lock().unwrap();
            records.retain(|r| in_flight.insert(r.recipient_id));
        }
        let mut local: Vec<QueueRecord> = Vec::new();
        let mut by_dest: HashMap<Destination, Vec<Job>> = HashMap::new();
        let mut groups: HashMap<(i64, String), Vec<QueueRecord>> = HashMap::new();
        for record in records {
            let domain = trimaran_core::store::domain_of(&record.recipient)
                .unwrap_or("")
                .to_ascii_lowercase();
            groups
                .entry((record.queue_id, domain))
                .or_default()
                .push(record);
        }
        let mut ours: HashMap<String, bool> = HashMap::new();
        for ((_, domain), records) in groups {
            let known = match ours.get(&domain) {
                Some(&local) => Ok(local),
                None => self.store().meta().domain_exists(&domain).await,
            };
            if let Ok(local) = known {
                ours.insert(domain.clone(), local);
            }
            // A held message's local recipients wait in the queue too (RFC 4865).
            match known {
                Ok(true) => local.extend(records),
                Ok(false) => by_dest
                    .entry(self.router.destination(&domain))
                    .or_default()
                    .push(Job { records }),
                Err(e) => {
                    tracing::warn!(error = %e, "domain lookup failed; retrying soon");
                    self.release(&records).await;
                }
            }
        }
        if !local.is_empty() {
            let runner = self.clone();
            tokio::spawn(async move { runner.deliver_locally(local).await });
        }
        for (dest, jobs) in by_dest {
            let limit = self.core.config.outbound.max_connections_per_destination;
            let lanes = jobs.len().min(limit);
            let queue = Arc::new(Mutex::new(VecDeque::from(jobs)));
            for _ in 0..lanes {
                let runner = self.clone();
                let dest = dest.clone();
                let queue = queue.clone();
                tokio::spawn(async move { runner.lane(dest, queue).await });
            }
        }
    }

    fn destination_slots(&self, dest: &Destination) -> Arc<Semaphore> {
        let limit = self.core.config.outbound.max_connections_per_destination;
        self.per_destination
            .lock()
            .unwrap()
            .entry(dest.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(limit)))
            .clone()
    }

    /// Sends jobs for one destination, one after another on one connection.
    async fn lane(self: Arc<Self>, dest: Destination, jobs: Arc<Mutex<VecDeque<Job>>>) {
        let Ok(_dest_slot) = self.destination_slots(&dest).acquire_owned().await else {
            return;
        };
        let Ok(_slot) = self.connections.clone().acquire_owned().await else {
            return;
        };
        let mut hosts: Option<Result<Vec<Host>, RouteError>> = None;
        let mut conn: Option<Connection> = self.take_idle(&dest);
        loop {
            let Some(job) = jobs.lock().unwrap().pop_front() else {
                break;
            };
            let outcomes = self.send_job(&dest, &mut hosts, &mut conn, &job).await;
            self.settle(&job.records, outcomes).await;
        }
        if let Some(c) = conn {
            self.keep_idle(dest, c);
        }
        drop(_slot);
    }

    fn take_idle(&self, dest: &Destination) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap();
        let list = idle.get_mut(dest)?;
        while let Some((since, conn)) = list.pop() {
            if since.elapsed() < IDLE_KEEP {
                return Some(conn);
            }
            tokio::spawn(conn.quit());
        }
        None
    }

    fn keep_idle(&self, dest: Destination, conn: Connection) {
        self.idle
            .lock()
            .unwrap()
            .entry(dest)
            .or_default()
            .push((Instant::now(), conn));
    }

    async fn close_idle(self: Arc<Self>) {
        loop {
            tokio::time::sleep(IDLE_KEEP / 2).await;
            let stale: Vec<Connection> = {
                let mut idle = self.idle.lock().unwrap();
                let mut stale = Vec::new();
                for list in idle.values_mut() {
                    let (old, fresh): (Vec<_>, Vec<_>) = std::mem::take(list)
                        .into_iter()
                        .partition(|(since, _)| since.elapsed() >= IDLE_KEEP);
                    *list = fresh;
                    stale.extend(old.into_iter().map(|(_, c)| c));
                }
                idle.retain(|_, l| !l.is_empty());
                stale
            };
            for conn in stale {
                conn.quit().await;
            }
            // Destinations nobody is sending to lose their counters (there may be many).
            let limit = self.core.config.outbound.max_connections_per_destination;
            self.per_destination
                .lock()
                .unwrap()
                .retain(|_, slots| slots.available_permits() < limit);
        }
    }

    /// One transaction; returns one outcome per record.
    async fn send_job(
        &self,
        dest: &Destination,
        hosts: &mut Option<Result<Vec<Host>, RouteError>>,
        conn: &mut Option<Connection>,
        job: &Job,
    ) -> Vec<Outcome> {
        let first = &job.records[0];
        let n = job.records.len();
        let all = |f: Failure| (0..n).map(|_| Err(f.clone())).collect();
        let bytes = match self.store().read_blob(&first.hash).await {
            Ok(b) => b,
            Err(e) => {
                return all(Failure::Temporary(format!(
                    "4.3.0 reading the message: {e}"
                )))
            }
        };
        let envelope = Envelope {
            sender: first.sender.clone(),
            recipients: job
                .records
                .iter()
                .map(|r| RecipientParams {
                    address: r.recipient.clone(),
                    notify: r.notify.map(|n| n.to_param()),
                    orcpt: r.orcpt.clone(),
                })
                .collect(),
            body: None,
            smtputf8: false,
            ret: first.envelope.ret.map(|r| r.as_str()),
            envid: first.envelope.envid.clone(),
        };
        // Up to two tries: an idle connection the peer has closed meanwhile fails at once, and
        // deserves a fresh one rather than a retry in minutes.
        for attempt in 0..2 {
            let fresh = conn.is_none();
            if fresh {
                if hosts.is_none() {
                    *hosts = Some(self.router.hosts(dest).await);
                }
                match hosts.as_ref().expect("just set") {
                    Ok(list) => match self.connect(list).await {
                        Ok(c) => *conn = Some(c),
                        Err(f) => return all(f),
                    },
                    Err(e) if e.is_permanent() => return all(Failure::Permanent(e.to_string())),
                    Err(e) => return all(Failure::Temporary(e.to_string())),
                }
            }
            let c = conn.as_mut().expect("connected");
            // The message is the sender's, and parsing it must not take the lane down with
            // its claimed work (that would sit leased and renewed forever): a panic here is
            // our fault, so temporary (G2), and logged.
            let prepared = std::panic::catch_unwind(|| {
                transport::prepare(&bytes, first, &envelope, &c.extensions)
            });
            let prepared = match prepared {
                Ok(Ok(p)) => p,
                Ok(Err(reason)) => return all(Failure::Permanent(reason)),
                Err(_) => {
                    tracing::error!(queue_id = first.queue_id, "preparing a message panicked");
                    return all(Failure::Temporary(
                        "4.3.0 internal error preparing the message".into(),
                    ));
                }
            };
            let Prepared {
                message,
                body,
                smtputf8,
            } = prepared;
            let message = self.sign(&message, &first.sender);
            let envelope = Envelope {
                body,
                smtputf8,
                ..envelope.clone()
            };
            match c.send(&envelope, &message).await {
                Ok(replies) => {
                    // RFC 3461 §5.2: a peer with DSN carries the request on; without, a
                    // requested success report is ours to make, as "relayed".
                    let status = if c.extensions.dsn {
                        QueueStatus::Sent
                    } else {
                        QueueStatus::Relayed
                    };
                    let peer = c.peer.clone();
                    return replies
                        .into_iter()
                        .map(|reply| {
                            if reply.is_positive() {
                                Ok(Success {
                                    status,
                                    detail: reply.to_string(),
                                    peer: Some(peer.clone()),
                                })
                            } else if reply.is_permanent() {
                                Err(Failure::Peer(peer.clone(), reply))
                            } else {
                                Err(Failure::PeerTemporary(peer.clone(), reply))
                            }
                        })
                        .collect();
                }
                Err(e) => {
                    let peer = c.peer.clone();
                    if let Some(old) = conn.take() {
                        tokio::spawn(old.quit());
                    }
                    if let Some(reply) = e.permanent_reply() {
                        return all(Failure::Peer(peer, reply.clone()));
                    }
                    if let ClientError::Refused(_, reply) = &e {
                        return all(Failure::PeerTemporary(peer, reply.clone()));
                    }
                    if attempt == 0 && !fresh {
                        continue;
                    }
                    return all(Failure::Temporary(format!("4.4.2 {e}")));
                }
            }
        }
        all(Failure::Temporary("4.4.2 connection lost".into()))
    }

    fn sign(&self, message: &[u8], sender: &str) -> Vec<u8> {
        let signer = self.signer.lock().unwrap().clone();
        let signature = std::panic::catch_unwind(|| {
            signing_domain(message, sender).and_then(|d| signer.signature(&d, message))
        })
        .unwrap_or_else(|_| {
            tracing::error!("DKIM signing panicked; sending unsigned");
            None
        });
        match signature {
            Some(mut header) => {
                header.extend_from_slice(message);
                header
            }
            None => message.to_vec(),
        }
    }

    /// Tries the hosts in order, each of their addresses, until one greets us (RFC 5321 §5.1:
    /// a failed host sends us to the next one).
    async fn connect(&self, hosts: &[Host]) -> Result<Connection, Failure> {
        let config = &self.core.config;
        let timeout = Duration::from_secs(config.outbound.timeout);
        let mut last = Failure::Temporary("4.4.1 no host answered".into());
        for host in hosts {
            for addr in &host.addrs {
                let dial = |tls| Dial {
                    addr: *addr,
                    host: &host.name,
                    helo: &config.hostname,
                    tls,
                    timeout,
                };
                match Connection::open(dial(Some(self.tls.clone()))).await {
                    Ok(c) => return Ok(c),
                    // RFC 7435 §3: a TLS failure with opportunistic TLS falls back to clear.
                    Err(ClientError::Tls(..)) => match Connection::open(dial(None)).await {
                        Ok(c) => return Ok(c),
                        Err(e) => last = Failure::Temporary(format!("4.4.1 {e}")),
                    },
                    Err(e) => {
                        tracing::debug!(host = %host.name, %addr, error = %e, "host failed; trying the next");
                        last = Failure::Temporary(format!("4.4.1 {e}"));
                    }
                }
            }
        }
        Err(last)
    }

    /// Local recipients of held messages: into their INBOX, once (the delivery id is the
    /// recipient's, so a retry after a crash finds the copy already made).
    async fn deliver_locally(self: Arc<Self>, records: Vec<QueueRecord>) {
        let wait = self.core.config.store_wait();
        let mut outcomes = Vec::new();
        for r in &records {
            let result = match delivery::resolve(self.store(), &r.recipient).await {
                Ok(Resolved::Local { accounts, .. }) if !accounts.is_empty() => {
                    let copy = async {
                        let bytes = self.store().read_blob(&r.hash).await?;
                        // RFC 5321 §4.4: the final delivery adds Return-Path.
                        let mut raw = format!("Return-Path: <{}>\r\n", r.sender).into_bytes();
                        raw.extend_from_slice(&bytes);
                        let message = delivery::prepare(raw, now_unix()).await?;
                        delivery::deliver(
                            self.store(),
                            format!("queue-local-{}-{}", r.queue_id, r.recipient_id),
                            Some(LocalDelivery { message, accounts }),
                            None,
                            wait,
                        )
                        .await
                    };
                    match copy.await {
                        Ok(_) => Ok(Success {
                            status: QueueStatus::Delivered,
                            detail: "250 2.0.0 delivered to the mailbox".into(),
                            peer: None,
                        }),
                        Err(e) => Err(Failure::Temporary(format!("4.3.0 store: {e}"))),
                    }
                }
                Ok(_) => Err(Failure::Permanent("5.1.1 no such local user".into())),
                Err(e) => Err(Failure::Temporary(format!("4.3.0 store: {e}"))),
            };
            outcomes.push(result);
        }
        self.settle(&records, outcomes).await;
    }

    /// Turns replies and failures into queue outcomes and records them.
    async fn settle(&self, records: &[QueueRecord], outcomes: Vec<Outcome>) {
        let now = now_unix();
        let mut settled = Vec::with_capacity(records.len());
        for (r, outcome) in records.iter().zip(outcomes) {
            let failed = QueueResult::Done(QueueStatus::Failed);
            let (result, detail, remote_mta) = match outcome {
                Ok(s) => (QueueResult::Done(s.status), s.detail, s.peer),
                Err(Failure::Permanent(reason)) => (failed, reason, None),
                Err(Failure::Peer(peer, reply)) => (failed, reply.to_string(), Some(peer)),
                Err(Failure::PeerTemporary(peer, reply)) => {
                    let (result, detail) = self.retry_or_expire(r, now, reply.to_string());
                    (result, detail, Some(peer))
                }
                Err(Failure::Temporary(reason)) => {
                    let (result, detail) = self.retry_or_expire(r, now, reason);
                    (result, detail, None)
                }
            };
            settled.push(QueueOutcome {
                recipient_id: r.recipient_id,
                detail,
                remote_mta,
                result,
            });
        }
        let ids: Vec<i64> = records.iter().map(|r| r.recipient_id).collect();
        let wait = self.core.config.store_wait();
        let store = self.store();
        let owner = &self.owner;
        if let Err(e) =
            delivery::retry(wait, || store.meta().queue_settle(owner, now, &settled)).await
        {
            // The leases run out and the work is done again: at worst a duplicate, never a loss.
            tracing::error!(error = %e, "recording delivery results failed");
        }
        for o in &settled {
            match o.result {
                QueueResult::Done(status) => tracing::info!(
                    recipient_id = o.recipient_id, status = status.as_str(), detail = %o.detail, "queue: settled"),
                QueueResult::Retry(at) => tracing::info!(
                    recipient_id = o.recipient_id, retry_in = at - now, detail = %o.detail, "queue: deferred"),
            }
        }
        let mut in_flight = self.in_flight.lock().unwrap();
        for id in ids {
            in_flight.remove(&id);
        }
        drop(in_flight);
        self.core.queue_wake.notify_one();
    }

    /// A temporary failure: the next attempt with exponential backoff, or failure once the
    /// message's lifetime is over (RFC 5321 §4.5.4.1).
    fn retry_or_expire(&self, r: &QueueRecord, now: i64, detail: String) -> (QueueResult, String) {
        let config = &self.core.config.outbound;
        let deadline = r.clock_start() + config.lifetime as i64;
        if now >= deadline {
            let days = config.lifetime as f64 / 86400.0;
            return (
                QueueResult::Done(QueueStatus::Failed),
                format!("4.4.7 message expired after {days:.1} days; last error: {detail}"),
            );
        }
        let exp = r.attempts.clamp(0, 20) as u32;
        let delay = config
            .retry_base
            .saturating_mul(1u64 << exp)
            .min(config.retry_max) as i64;
        // A little spread, so that a destination's backlog does not all come due together.
        let jitter = (r.recipient_id.rem_euclid(10) * delay) / 100;
        (
            QueueResult::Retry((now + delay + jitter).min(deadline)),
            detail,
        )
    }

    /// Gives claimed work back at once (nothing was tried).
    async fn release(&self, records: &[QueueRecord]) {
        let now = now_unix();
        let outcomes: Vec<QueueOutcome> = records
            .iter()
            .map(|r| QueueOutcome {
                recipient_id: r.recipient_id,
                detail: r.last_error.clone().unwrap_or_default(),
                remote_mta: None,
                result: QueueResult::Retry(now + 5),
            })
            .collect();
        let _ = self
            .store()
            .meta()
            .queue_settle(&self.owner, now, &outcomes)
            .await;
        let mut in_flight = self.in_flight.lock().unwrap();
        for r in records {
            in_flight.remove(&r.recipient_id);
        }
    }

    /// Keeps the leases of work in progress from running out (a third of the lease apart).
    async fn renew_leases(self: Arc<Self>) {
        let every = Duration::from_secs((self.lease() as u64 / 3).max(1));
        loop {
            tokio::time::sleep(every).await;
            let ids: Vec<i64> = self.in_flight.lock().unwrap().iter().copied().collect();
            if ids.is_empty() {
                continue;
            }
            let until = now_unix() + self.lease();
            if let Err(e) = self
                .store()
                .meta()
                .queue_renew(&self.owner, &ids, until)
                .await
            {
                tracing::warn!(error = %e, "renewing queue leases failed");
            }
        }
    }

    async fn report_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(REPORT_EVERY).await;
            if let Err(e) = crate::notify::make_reports(&self).await {
                tracing::warn!(error = %e, "making delivery reports failed; retrying");
            }
        }
    }
}

/// One recipient accepted.
pub(crate) struct Success {
    status: QueueStatus,
    detail: String,
    peer: Option<String>,
}

pub(crate) type Outcome = Result<Success, Failure>;

#[derive(Clone, Debug)]
pub(crate) enum Failure {
    /// Our own finding that can never succeed (no such domain, conversion impossible).
    Permanent(String),
    /// Try later.
    Temporary(String),
    /// The peer refused the whole transaction for good (e.g. MAIL FROM 5xx).
    Peer(String, Reply),
    /// The peer refused the whole transaction for now.
    PeerTemporary(String, Reply),
}

fn rand32() -> u32 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u32::from_le_bytes(b)
}
