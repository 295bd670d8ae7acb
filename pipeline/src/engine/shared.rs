//! The shared stage: the features of the kinds placed `shared`, read and
//! updated in Redis for a burst of events at once.
//!
//! A source that decides a live stream (a Kafka lane, the HTTP task) keeps
//! one [`Burst`]. [`Engine::prepare_in`](super::Engine::prepare_in) adds
//! each event's entity operations to it, in source order, after the local
//! features; [`Burst::send`], once the source has read what is available,
//! hands the burst to its runner task (or, with `chains` above 1, its
//! entities to their chains' runners). A runner executes one call of the
//! store after another — so a lane's events reach Redis in the order it
//! read them — each one commit round trip (a second for the entities that
//! were not as the runner presumed them) with the store's deadline, holding
//! every burst that queued while the last was out (up to
//! [`MAX_OPERATIONS_PER_ROUND_TRIP`] operations). An event's
//! [`Engine::finish`](super::Engine::finish) awaits its burst's reply
//! before the event is scored; a burst that failed or missed its deadline
//! leaves the event's shared features missing and its decision `degraded`,
//! so a decision never waits for Redis longer than the deadline.
//!
//! Not here: the script, the protocol and the windows' arithmetic
//! (`verdict_features::shared`, and the local store's entities). Sources
//! that see every event of the stream (replay, export, backtests) place
//! every kind local and make no burst.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::Shared;
use tokio::sync::{mpsc, oneshot};
use verdict_core::Event;
use verdict_features::FeatureStore;
use verdict_features::UpdateOutcome;
use verdict_features::shared::{Known, SharedBatch, SharedErrorKind, SharedObserver, SharedStore};

use super::Observer;

/// What an event of a burst awaits: the executed burst (its replies, or
/// none if it failed). Cloning it is an `Arc`'s clone.
pub(crate) type Reply = Shared<oneshot::Receiver<Arc<SharedBatch>>>;

/// Where one prepared event's shared features come from: its burst's
/// reply and its place in the burst.
pub(crate) struct Ticket {
    reply: Reply,
    n: usize,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("n", &self.n).finish()
    }
}

/// A burst sent to the runner, and where its reply goes.
type Job = (SharedBatch, oneshot::Sender<Arc<SharedBatch>>);

/// Most entity operations the runner sends in one round trip. Bursts that
/// queue while Redis answers go out together, up to this; a burst that
/// would pass it waits for the next round trip (one larger than it goes
/// alone). Bounds a round trip's time, so that one slow pipeline does not
/// carry many bursts past the deadline at once.
pub(crate) const MAX_OPERATIONS_PER_ROUND_TRIP: usize = 512;

/// A runner: one call of the store at a time, in the order the bursts came,
/// so that a lane's events reach Redis in the order it read them (each of
/// the lane's runners has its own entities). A source
/// that reads faster than Redis answers queues bursts here; each round trip
/// takes what has queued (backpressure is the source's own in-flight
/// bound: its events wait for these replies before they are decided).
async fn run(
    store: Arc<SharedStore>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    failing: Arc<AtomicBool>,
) {
    let config = store.config();
    let mut known = Known::new(config.known_entities / config.chains.max(1));
    let mut carried: Option<Job> = None;
    let mut batches: Vec<SharedBatch> = Vec::new();
    let mut replies: Vec<oneshot::Sender<Arc<SharedBatch>>> = Vec::new();
    loop {
        let (batch, reply) = match carried.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut operations = batch.operations();
        batches.push(batch);
        replies.push(reply);
        while operations < MAX_OPERATIONS_PER_ROUND_TRIP {
            let Ok(job) = jobs.try_recv() else { break };
            if operations + job.0.operations() > MAX_OPERATIONS_PER_ROUND_TRIP {
                carried = Some(job);
                break;
            }
            operations += job.0.operations();
            batches.push(job.0);
            replies.push(job.1);
        }
        // The source's runners share whether it is failing: it says so
        // once, whichever of them meets the failure first.
        match store.execute_all(&mut batches, &mut known).await {
            Ok(()) => {
                if failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("shared feature store answers again: shared features are back");
                }
            }
            Err(e) => {
                if !failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        error = %e,
                        "shared features missing: decisions are made without them and marked degraded until the shared store answers"
                    );
                }
            }
        }
        for (batch, reply) in batches.drain(..).zip(replies.drain(..)) {
            let _ = reply.send(Arc::new(batch));
        }
    }
}

/// One source's bursts of shared-store operations. Without shared kinds
/// (or for a source that makes none) it is inactive and costs nothing.
pub struct Burst {
    inner: Option<Inner>,
}

struct Inner {
    features: Arc<FeatureStore>,
    batch: SharedBatch,
    /// The reply of the burst being filled, made with its first event.
    current: Option<(oneshot::Sender<Arc<SharedBatch>>, Reply)>,
    /// One runner per chain of round trips; a burst's entities are split
    /// among them, each entity always to the same one.
    runners: Vec<mpsc::UnboundedSender<Job>>,
}

impl Burst {
    /// A burst that sends nothing: every kind is local.
    pub fn none() -> Burst {
        Burst { inner: None }
    }

    /// A source's bursts to `store`, run by a task of their own on the
    /// current runtime (so: call from within it).
    pub(crate) fn new(store: Arc<SharedStore>, features: Arc<FeatureStore>) -> Burst {
        let batch = features.shared_batch(store.config());
        let failing = Arc::new(AtomicBool::new(false));
        let runners = (0..store.config().chains.max(1))
            .map(|_| {
                let (runner, jobs) = mpsc::unbounded_channel::<Job>();
                tokio::spawn(run(store.clone(), jobs, failing.clone()));
                runner
            })
            .collect();
        Burst {
            inner: Some(Inner {
                batch,
                features,
                current: None,
                runners,
            }),
        }
    }

    /// Whether this burst sends anything.
    pub fn is_active(&self) -> bool {
        self.inner.is_some()
    }

    /// Adds `event`'s shared-entity operations (after its local features
    /// gave `outcome`); its ticket, if the burst is active.
    pub(crate) fn push(&mut self, event: &Event, outcome: UpdateOutcome) -> Option<Ticket> {
        let inner = self.inner.as_mut()?;
        let n = inner.batch.events();
        inner.features.push_shared(event, outcome, &mut inner.batch);
        let (_, reply) = inner.current.get_or_insert_with(|| {
            let (tx, rx) = oneshot::channel();
            (tx, rx.shared())
        });
        Some(Ticket {
            reply: reply.clone(),
            n,
        })
    }

    /// Sends the events pushed since the last call to Redis, as one
    /// burst. Call when the source has read what is available for now.
    pub fn send(&mut self) {
        let Some(inner) = self.inner.as_mut() else {
            return;
        };
        let Some((reply, _)) = inner.current.take() else {
            return;
        };
        let fresh = inner.batch.empty_like();
        let mut batch = std::mem::replace(&mut inner.batch, fresh);
        // A runner that has stopped drops the reply: the events read their
        // shared features missing.
        if let [runner] = &inner.runners[..] {
            let _ = runner.send((batch, reply));
            return;
        }
        let parts: Vec<_> = batch
            .split(inner.runners.len())
            .into_iter()
            .zip(&inner.runners)
            .map(|(part, runner)| {
                let part = part?;
                let (tx, rx) = oneshot::channel();
                runner.send((part, tx)).ok()?;
                Some(rx)
            })
            .collect();
        tokio::spawn(async move {
            let parts = futures::future::join_all(parts.into_iter().map(|rx| async move {
                match rx {
                    Some(rx) => rx.await.ok(),
                    None => None,
                }
            }))
            .await;
            batch.rejoin(&parts);
            let _ = reply.send(Arc::new(batch));
        });
    }
}

/// Reads an event's shared features from its burst's reply into
/// `features`; false when they are missing (the burst failed, or the
/// runner is gone).
pub(crate) async fn read(ticket: Ticket, features: &mut [verdict_core::Value]) -> bool {
    match ticket.reply.await {
        Ok(batch) => batch.read(ticket.n, features),
        Err(_) => false,
    }
}

/// Reports the shared store's batches to the metrics, once attached.
pub(crate) struct SharedMetrics(pub Arc<Observer>);

impl SharedObserver for SharedMetrics {
    fn completed(&self, operations: usize, elapsed: Duration) {
        if let Some(m) = self.0.metrics.get() {
            m.shared_completed(operations, elapsed);
        }
    }

    fn failed(&self, kind: SharedErrorKind, operations: usize) {
        if let Some(m) = self.0.metrics.get() {
            m.shared_failed(kind.as_str(), operations);
        }
    }

    fn retried(&self, entities: usize) {
        if let Some(m) = self.0.metrics.get() {
            m.shared_retried(entities);
        }
    }
}
