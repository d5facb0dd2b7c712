//! Leader election on a coordination.k8s.io Lease, for multi-replica installs: only the leader runs
//! the controllers.
//!
//! The algorithm is client-go's `leaderelection`: the holder renews `spec.renewTime` every
//! `retry` period, with one write of the Lease as it last wrote it; a candidate takes over a Lease whose record has not changed for
//! `leaseDurationSeconds` **as measured on its own clock since it last saw a change** (so clock
//! skew between nodes does not matter). Every write is an update with the `resourceVersion` it
//! read: a compare-and-swap, so two candidates can never both win.
//!
//! Fencing: a leader that has not renewed for `duration - 2 × retry` stops leading (the process
//! exits, and Kubernetes restarts it as a candidate) before any other candidate can consider the
//! Lease expired; and until it exits, its client sends no write past that time ([`Fence`]), so a
//! leader that was frozen (not just cut off) writes nothing when it resumes. On SIGTERM the leader stops its controllers, then releases the Lease (empty
//! holder), so a standby takes over at its next retry.
//!
//! Hand-written (about 150 lines) rather than `kube-lease-manager` or `kube-leader-election`:
//! the former keeps reporting leadership while its renewals fail (no fencing), the latter is
//! not released for kube 5.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Timings of the election.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// How long a Lease is valid after its last renewal.
    pub duration: Duration,
    /// How often candidates try, and the leader renews.
    pub retry: Duration,
}

impl Default for Timings {
    /// A standby takes over a killed leader within `duration + retry` (≈ 12s).
    fn default() -> Self {
        Timings { duration: Duration::from_secs(10), retry: Duration::from_secs(2) }
    }
}

/// The write fence of a process under leader election: writes to the API server are allowed only
/// while this process's lease is certainly still its own on its own clock, that is until
/// `duration - 2 × retry` after the start of its last successful renewal (a standby takes over no
/// sooner than `duration` after it saw that renewal). Checked by the client for every write request
/// before it is sent, so a leader frozen past its lease (a stopped VM, `SIGSTOP`, a long GC pause)
/// writes nothing when it resumes: its requests fail at once and the elector fences the process.
/// Lease writes of a candidate that does not lead are let through: they are compare-and-swap.
#[derive(Debug)]
pub struct Fence {
    elected: bool,
    leading: AtomicBool,
    valid_until: Mutex<Option<Instant>>,
}

impl Fence {
    /// No leader election: every write is allowed.
    pub fn open() -> Arc<Self> {
        Arc::new(Fence { elected: false, leading: AtomicBool::new(false), valid_until: Mutex::new(None) })
    }

    /// Under leader election: closed until the Lease is won.
    pub fn elected() -> Arc<Self> {
        Arc::new(Fence { elected: true, leading: AtomicBool::new(false), valid_until: Mutex::new(None) })
    }

    /// Whether a write may be sent now; `lease` for a write to the leader Lease itself.
    pub fn allows(&self, lease: bool) -> bool {
        if !self.elected {
            return true;
        }
        let leading = self.leading.load(Ordering::SeqCst);
        if lease && !leading {
            return true;
        }
        leading && self.valid_until.lock().ok().and_then(|v| *v).is_some_and(|until| Instant::now() < until)
    }

    /// Whether bytes may be written to the API server now: always for a standby (it only reads and
    /// campaigns), while its Lease is certainly held for a leader, never once it lost it.
    pub fn allows_bytes(&self) -> bool {
        !self.elected || !self.leading.load(Ordering::SeqCst) || self.allows(false)
    }

    /// A renewal started at `sent` succeeded: writes are allowed until `sent + valid_for`.
    fn renewed(&self, sent: Instant, valid_for: Duration) {
        if let Ok(mut v) = self.valid_until.lock() {
            *v = Some(sent + valid_for);
        }
        self.leading.store(true, Ordering::SeqCst);
    }

    /// Leadership is over: nothing may be written any more.
    fn close(&self) {
        if let Ok(mut v) = self.valid_until.lock() {
            *v = None;
        }
    }
}

/// What a candidate does with the Lease as it reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// No Lease yet: create it holding it.
    Create,
    /// It is ours: renew it.
    Renew,
    /// Free or expired: take it over.
    TakeOver,
    /// Someone else holds it.
    Wait,
}

/// Decides the step for `me`, given the Lease and how long ago (on this clock) its record last
/// changed.
pub fn step(lease: Option<&LeaseSpec>, me: &str, unchanged_for: Duration) -> Step {
    let Some(spec) = lease else { return Step::Create };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == me {
        return Step::Renew;
    }
    let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
    if holder.is_empty() || unchanged_for >= duration { Step::TakeOver } else { Step::Wait }
}

/// One candidate for the Lease `namespace/name`.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: Timings,
    /// The record last seen (holder, renew time) and when this process first saw it.
    seen: Option<(String, Instant)>,
    /// The Lease as this process last wrote it, while it holds it: the next renewal sends it
    /// without reading it first (client-go's fast path), its resourceVersion still making the
    /// write a compare-and-swap. One request per renewal instead of two.
    held: Option<Lease>,
    fence: Arc<Fence>,
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

impl Elector {
    /// `fence` is the one the client checks its writes against ([`Fence::elected`]).
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timings: Timings,
        fence: Arc<Fence>,
    ) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            timings,
            seen: None,
            held: None,
            fence,
        }
    }

    fn mine(&self, acquire: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timings.duration.as_secs() as i32),
            acquire_time: acquire,
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One round: returns whether this candidate holds the Lease now.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        // Taken, not borrowed: a round cut short by its timeout reads the Lease afresh next time.
        if let Some(mut lease) = self.held.take() {
            if let Some(spec) = lease.spec.as_mut() {
                spec.renew_time = Some(now());
            }
            match self.api.replace(&self.name, &PostParams::default(), &lease).await {
                Ok(written) => {
                    self.held = Some(written);
                    return Ok(true);
                }
                // Someone else wrote since: read what they wrote, below.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        let current = self.api.get_opt(&self.name).await?;
        let spec = current.as_ref().and_then(|l| l.spec.clone());
        let record = spec.as_ref().map(|s| format!("{:?}/{:?}", s.holder_identity, s.renew_time)).unwrap_or_default();
        let since = match &self.seen {
            Some((r, at)) if *r == record => *at,
            _ => {
                self.seen = Some((record, Instant::now()));
                Instant::now()
            }
        };
        let written = match (step(spec.as_ref(), &self.identity, since.elapsed()), current) {
            (Step::Wait, _) => return Ok(false),
            (Step::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                    spec: Some(self.mine(Some(now()), 0)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (step, Some(mut lease)) => {
                let old = lease.spec.take().unwrap_or_default();
                lease.spec = Some(if step == Step::Renew {
                    LeaseSpec { renew_time: Some(now()), ..old }
                } else {
                    info!(previous = ?old.holder_identity, "taking over the leader Lease");
                    self.mine(Some(now()), old.lease_transitions.unwrap_or(0) + 1)
                });
                // The resourceVersion read above makes this a compare-and-swap.
                self.api.replace(&self.name, &PostParams::default(), &lease).await
            }
            (_, None) => return Ok(false),
        };
        match written {
            Ok(lease) => {
                self.held = Some(lease);
                Ok(true)
            }
            // Someone else wrote first (a conflict) or created it (already exists): not ours.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if this candidate holds it, so a standby takes over at once.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else { return Ok(()) };
        let ours = lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(self.identity.as_str());
        if ours {
            let old = lease.spec.take().unwrap_or_default();
            lease.spec = Some(LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(1),
                renew_time: Some(now()),
                ..old
            });
            self.api.replace(&self.name, &PostParams::default(), &lease).await?;
            info!("leader Lease released");
        }
        Ok(())
    }

    /// Campaigns until `stop`: `leading` turns true when the Lease is won, and false when a renewal
    /// has failed for too long (fencing), after which this elector gives up for good.
    pub async fn run(mut self, leading: watch::Sender<bool>, stop: CancellationToken) {
        let fence_after = self.timings.duration.saturating_sub(self.timings.retry * 2);
        let mut renewed: Option<Instant> = None;
        loop {
            // A round that hangs (a slow API server) must not postpone the fencing check.
            let sent = Instant::now();
            let round = tokio::time::timeout(self.timings.retry, self.try_acquire_or_renew()).await;
            match round.unwrap_or(Ok(false)) {
                Ok(true) => {
                    // Measured from when the round started: the API server saw the renewal later.
                    self.fence.renewed(sent, fence_after);
                    if renewed.is_none() {
                        info!(identity = %self.identity, "became the leader");
                        leading.send_replace(true);
                    }
                    renewed = Some(sent);
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election: the Lease could not be read or written"),
            }
            if let Some(at) = renewed
                && at.elapsed() >= fence_after
            {
                warn!(identity = %self.identity, "leadership lost: the Lease was not renewed in time");
                self.fence.close();
                leading.send_replace(false);
                return;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.timings.retry) => {}
            }
        }
        if renewed.is_some()
            && let Err(e) = self.release().await
        {
            warn!(error = %e, "could not release the leader Lease; it expires on its own");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str) -> LeaseSpec {
        LeaseSpec { holder_identity: Some(holder.into()), lease_duration_seconds: Some(10), ..Default::default() }
    }

    #[test]
    fn a_missing_lease_is_created_and_our_own_is_renewed() {
        assert_eq!(step(None, "a", Duration::ZERO), Step::Create);
        assert_eq!(step(Some(&held_by("a")), "a", Duration::from_secs(60)), Step::Renew);
    }

    #[test]
    fn another_holder_is_waited_for_until_its_record_is_stale_on_our_clock() {
        let b = held_by("b");
        assert_eq!(step(Some(&b), "a", Duration::from_secs(9)), Step::Wait);
        assert_eq!(step(Some(&b), "a", Duration::from_secs(10)), Step::TakeOver);
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let released = LeaseSpec { holder_identity: None, lease_duration_seconds: Some(1), ..Default::default() };
        assert_eq!(step(Some(&released), "a", Duration::ZERO), Step::TakeOver);
    }

    #[test]
    fn the_fence_lets_writes_through_only_while_the_lease_is_certainly_held() {
        let open = Fence::open();
        assert!(open.allows(false) && open.allows(true), "no leader election: no fence");
        let f = Fence::elected();
        assert!(!f.allows(false), "a standby writes nothing");
        assert!(f.allows(true), "but campaigns for the Lease (compare-and-swap)");
        assert!(f.allows_bytes(), "and its connections are not fenced");
        f.renewed(Instant::now(), Duration::from_secs(60));
        assert!(f.allows(false) && f.allows(true));
        f.renewed(Instant::now() - Duration::from_secs(7), Duration::from_secs(6));
        assert!(!f.allows(false), "past the renewal's validity: frozen and resumed, say");
        assert!(!f.allows(true), "a leader past its time does not renew either: it fences itself");
        assert!(!f.allows_bytes(), "nor sends a byte of what it had in flight");
        f.renewed(Instant::now(), Duration::from_secs(60));
        f.close();
        assert!(!f.allows(false));
    }

    #[test]
    fn the_leader_fences_itself_before_a_standby_may_take_over() {
        let t = Timings::default();
        // A standby waits `duration` after the last renewal it saw; the leader stops after
        // `duration - 2 × retry`, and checks once per `retry`: it is gone before.
        assert!(t.duration.saturating_sub(t.retry * 2) + t.retry < t.duration);
    }

    #[tokio::test]
    async fn the_holder_renews_with_one_write_and_reads_again_after_a_conflict() {
        use crate::controller::mock_api::{MockApi, status};
        use serde_json::json;
        let api = MockApi::default();
        let lease = |holder: &str, rv: &str| {
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "phaseloop", "namespace": "ops", "resourceVersion": rv},
                "spec": {"holderIdentity": holder, "leaseDurationSeconds": 10}})
        };
        let other = lease("b", "9");
        let puts = std::sync::atomic::AtomicU32::new(0);
        api.on("PUT", "/leases/phaseloop", move |_| {
            // The second renewal finds that "b" took the Lease in between.
            match puts.fetch_add(1, Ordering::SeqCst) {
                0 => (200, lease("a", "2")),
                _ => status(409, "Conflict", "the object has been modified", &[]),
            }
        });
        api.on("POST", "/leases", |r| (201, r.body.clone()));
        let mut elector = Elector::new(api.client(), "ops", "phaseloop", "a", Timings::default(), Fence::elected());

        assert!(elector.try_acquire_or_renew().await.unwrap(), "no Lease yet: created, held");
        assert!(elector.try_acquire_or_renew().await.unwrap(), "renewed");
        api.on("GET", "/leases/phaseloop", move |_| (200, other.clone()));
        assert!(!elector.try_acquire_or_renew().await.unwrap(), "b holds it now: not ours");
        assert!(!elector.try_acquire_or_renew().await.unwrap(), "and b's record is fresh on our clock");

        let sent: Vec<String> = api.requests().iter().map(|r| r.method.clone()).collect();
        assert_eq!(sent, ["GET", "POST", "PUT", "PUT", "GET", "GET"], "a renewal is one PUT; a conflict reads again");
    }
}
