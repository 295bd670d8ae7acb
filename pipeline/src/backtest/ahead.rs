//! The history read ahead of a backtest's pass: a thread of its own reads
//! the files in time order, parses each event and finds its label, and
//! hands the pass batches of owned events through a bounded channel, so
//! that reading and deciding overlap on two cores.
//!
//! Order is kept: one thread reads, and batches arrive in the order it
//! filled them. The pass sends each spent batch back to be filled again,
//! so the steady state allocates only what parsing an event allocates.
//!
//! What it is not: it touches no feature, model or rule — those are the
//! pass's, in order, on its own thread.

use std::ops::Range;
use std::sync::mpsc;
use std::thread::JoinHandle;

use verdict_core::{Action, Event, EventParser, RejectionKind};
use verdict_history::{HistoryReader, ReaderStats};

use super::{Labels, PassError};

/// Events per batch: enough to make a hand-over cheap beside the work.
const BATCH: usize = 256;
/// Batches filled ahead of the pass: bounds the memory read ahead.
const AHEAD: usize = 8;

/// One event read ahead.
pub struct Item {
    /// The event, or why it does not parse.
    pub parsed: Result<Event, RejectionKind>,
    event_id: Range<u32>,
    pub timestamp_ms: i64,
    /// Fraud (`true`), legitimate, or unknown.
    pub label: Option<bool>,
    pub recorded: Option<Recorded>,
}

/// A recorded decision, its text and numbers in the batch's buffers.
pub struct Recorded {
    pub decision: Action,
    hits: Range<u32>,
    shadow_hits: Range<u32>,
    scores: Range<u32>,
    pub degraded: bool,
}

/// A run of events, in order, and the buffers their text and numbers
/// live in.
#[derive(Default)]
pub struct Batch {
    pub items: Vec<Item>,
    text: String,
    /// A recorded hit: its rule name in `text`, its action.
    hits: Vec<(Range<u32>, Action)>,
    scores: Vec<f64>,
}

impl Batch {
    fn clear(&mut self) {
        self.items.clear();
        self.text.clear();
        self.hits.clear();
        self.scores.clear();
    }

    fn push_text(&mut self, s: &str) -> Range<u32> {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        start..self.text.len() as u32
    }

    pub fn event_id(&self, item: &Item) -> &str {
        &self.text[range(&item.event_id)]
    }

    /// A recorded decision's hits (rule name, action).
    pub fn hits<'a>(&'a self, r: &Recorded) -> impl Iterator<Item = (&'a str, Action)> + 'a {
        self.hits_in(r.hits.clone())
    }

    pub fn shadow_hits<'a>(&'a self, r: &Recorded) -> impl Iterator<Item = (&'a str, Action)> + 'a {
        self.hits_in(r.shadow_hits.clone())
    }

    fn hits_in(&self, at: Range<u32>) -> impl Iterator<Item = (&str, Action)> + '_ {
        self.hits[range(&at)]
            .iter()
            .map(|(name, action)| (&self.text[range(name)], *action))
    }

    /// A recorded decision's scores, in the model's order.
    pub fn scores(&self, r: &Recorded) -> &[f64] {
        &self.scores[range(&r.scores)]
    }
}

fn range(r: &Range<u32>) -> Range<usize> {
    r.start as usize..r.end as usize
}

/// How the thread reads.
pub struct Reading {
    /// Parses the events (a clone of the engine's).
    pub parser: EventParser,
    /// Whether the pass compares only events with a recorded decision
    /// (the baseline is the log's).
    pub records: bool,
}

/// What the reading thread gives back when it ends.
pub struct Finished {
    pub stats: ReaderStats,
    pub labels: Labels,
}

/// The reading thread and its two channels.
pub struct ReadAhead {
    batches: tokio::sync::mpsc::Receiver<Result<Batch, PassError>>,
    spent: mpsc::Sender<Batch>,
    thread: Option<JoinHandle<Finished>>,
}

impl ReadAhead {
    /// Starts reading `reader` on a thread of its own.
    pub fn start(
        mut reader: HistoryReader,
        read: Reading,
        mut labels: Labels,
    ) -> std::io::Result<ReadAhead> {
        let (tx, batches) = tokio::sync::mpsc::channel(AHEAD);
        let (spent, recycled) = mpsc::channel::<Batch>();
        let thread = std::thread::Builder::new()
            .name("backtest-read".into())
            .spawn(move || {
                loop {
                    let mut batch = recycled.try_recv().unwrap_or_default();
                    batch.clear();
                    let more = match fill(&mut batch, &mut reader, &read, &mut labels) {
                        Ok(more) => more,
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            break;
                        }
                    };
                    if !batch.items.is_empty() && tx.blocking_send(Ok(batch)).is_err() {
                        // The pass stopped (a time limit, an error).
                        break;
                    }
                    if !more {
                        break;
                    }
                }
                Finished {
                    stats: reader.stats().clone(),
                    labels,
                }
            })?;
        Ok(ReadAhead {
            batches,
            spent,
            thread: Some(thread),
        })
    }

    /// The next batch in order; `None` once the history is read.
    pub async fn next(&mut self) -> Option<Result<Batch, PassError>> {
        self.batches.recv().await
    }

    /// Hands a batch back to be filled again.
    pub fn recycle(&self, batch: Batch) {
        let _ = self.spent.send(batch);
    }

    /// Stops reading (if it has not ended) and waits for the thread: it
    /// ends at its next hand-over, as the channel is closed.
    pub fn finish(mut self) -> Finished {
        self.batches.close();
        // Unblocks a thread waiting to hand over a batch.
        while self.batches.try_recv().is_ok() {}
        let thread = self.thread.take().expect("finished once");
        match thread.join() {
            Ok(finished) => finished,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// Fills `batch` with up to [`BATCH`] events; false once the history is
/// read to its end. An event is labelled only when the pass compares it:
/// it parses, and it has a recorded decision or `records` is false (the
/// baseline is decided, not read).
fn fill(
    batch: &mut Batch,
    reader: &mut HistoryReader,
    read: &Reading,
    labels: &mut Labels,
) -> Result<bool, PassError> {
    while batch.items.len() < BATCH {
        let Some(ev) = reader.next()? else {
            return Ok(false);
        };
        let parsed = read.parser.parse(ev.event).map_err(|r| r.kind());
        let compared = parsed.is_ok() && (ev.recorded.is_some() || !read.records);
        let label = match labels {
            _ if !compared => None,
            Labels::None => None,
            Labels::Field(f) => f.classify(ev.event_id, ev.event)?,
            Labels::Chargebacks(c) => c.label(ev.event_id),
        };
        let recorded = ev.recorded.map(|rec| {
            let mut hits = |list: verdict_history::Hits<'_>| {
                let start = batch.hits.len() as u32;
                for h in list.iter() {
                    let name = batch.push_text(h.rule);
                    batch.hits.push((name, h.action));
                }
                start..batch.hits.len() as u32
            };
            let (hits, shadow_hits) = (hits(rec.hits()), hits(rec.shadow_hits()));
            let start = batch.scores.len() as u32;
            batch.scores.extend(rec.scores().map(|(_, v)| v));
            Recorded {
                decision: rec.decision,
                hits,
                shadow_hits,
                scores: start..batch.scores.len() as u32,
                degraded: rec.degraded(),
            }
        });
        let event_id = batch.push_text(ev.event_id);
        batch.items.push(Item {
            parsed,
            event_id,
            timestamp_ms: ev.timestamp_ms,
            label,
            recorded,
        });
    }
    Ok(true)
}
