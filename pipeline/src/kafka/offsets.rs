//! Which input offsets a lane may commit: plain synchronous bookkeeping,
//! owned by the lane's deciding task alone (no lock), fed by what the lane
//! reads, produces and hears acknowledged.
//!
//! Per partition the lane owns:
//! - an *epoch*, new on every assignment, so an event read before its
//!   partition was revoked is never produced after (it is dropped, and the
//!   partition's next owner decides it again from the committed offset);
//!   a partition the lane keeps through a rebalance keeps its epoch and
//!   nothing of it is dropped;
//! - every event read and not yet behind the safe offset, in read order,
//!   with where it stands: being decided, produced and waiting for its
//!   acknowledgement, or done;
//! - the *safe* offset: the next one to commit, past which every event's
//!   output is acknowledged. It only ever advances over a contiguous
//!   acknowledged prefix, so a commit never runs ahead of an output.
//!
//! In exactly-once mode nothing waits for acknowledgements: the outputs
//! and the offsets are committed together in one transaction, so an
//! offset is safe as soon as its output is produced inside it.

use std::collections::{BTreeMap, VecDeque};

/// The assignment generation of one partition in one lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch(u64);

/// Where one event read stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Being decided.
    Reading,
    /// Produced, waiting for its acknowledgement.
    Produced,
    /// Acknowledged (or safe without one: inside a transaction, or its
    /// output was already on the topic).
    Done,
}

#[derive(Debug)]
struct Part {
    epoch: Epoch,
    /// Every event read and not yet behind the safe offset, in read order
    /// (offsets increase, so an event is found by binary search).
    events: VecDeque<(i64, Stage)>,
    /// Everything before it is safe to commit.
    safe: Option<i64>,
    /// What was last handed to a commit.
    committed: Option<i64>,
}

impl Part {
    fn find(&mut self, offset: i64) -> Option<&mut Stage> {
        let i = self
            .events
            .binary_search_by_key(&offset, |(o, _)| *o)
            .ok()?;
        Some(&mut self.events[i].1)
    }

    /// Moves the safe offset over the done prefix.
    fn advance(&mut self) {
        while let Some(&(o, Stage::Done)) = self.events.front() {
            self.safe = Some(o + 1);
            self.events.pop_front();
        }
    }

    fn count(&self, stage: Stage) -> usize {
        self.events.iter().filter(|(_, s)| *s == stage).count()
    }
}

/// The bookkeeping of one lane.
#[derive(Debug)]
pub struct Offsets {
    /// Transactions: an offset is safe once produced.
    transactional: bool,
    parts: BTreeMap<i32, Part>,
    next_epoch: u64,
    /// Produced and not yet acknowledged, over every partition.
    pending: usize,
}

/// What a revoked partition leaves behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub partition: i32,
    /// The offset to commit before the partition goes, if any is safe
    /// (synchronously, so the next owner starts from it).
    pub commit: Option<i64>,
    /// Events of it still being decided or awaiting their acknowledgement:
    /// their outputs are dropped (or not counted), and the next owner
    /// decides them again. Zero after a complete drain.
    pub abandoned: usize,
}

impl Offsets {
    pub fn new(transactional: bool) -> Offsets {
        Offsets {
            transactional,
            parts: BTreeMap::new(),
            next_epoch: 1,
            pending: 0,
        }
    }

    /// `partition` is now this lane's, read from its committed offset: it
    /// starts afresh with a new epoch.
    pub fn assign(&mut self, partition: i32) -> Epoch {
        let epoch = Epoch(self.next_epoch);
        self.next_epoch += 1;
        if let Some(old) = self.parts.insert(
            partition,
            Part {
                epoch,
                events: VecDeque::new(),
                safe: None,
                committed: None,
            },
        ) {
            self.pending -= old.count(Stage::Produced);
        }
        epoch
    }

    /// The epoch of `partition`, when the lane owns it.
    pub fn epoch(&self, partition: i32) -> Option<Epoch> {
        self.parts.get(&partition).map(|p| p.epoch)
    }

    pub fn owns(&self, partition: i32) -> bool {
        self.parts.contains_key(&partition)
    }

    /// The partitions the lane owns.
    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.parts.keys().copied()
    }

    /// The event at `offset` of `partition` was read and is being decided.
    pub fn read(&mut self, partition: i32, offset: i64) {
        if let Some(p) = self.parts.get_mut(&partition) {
            debug_assert!(p.events.back().is_none_or(|(o, _)| *o < offset));
            p.events.push_back((offset, Stage::Reading));
        }
    }

    /// The event at `offset` was read and already has its output on the
    /// topic (written before the partition came to this lane): it is done
    /// in its turn, without being decided again.
    pub fn already_decided(&mut self, partition: i32, offset: i64) {
        if let Some(p) = self.parts.get_mut(&partition) {
            p.events.push_back((offset, Stage::Done));
            p.advance();
        }
    }

    /// The output of the event at `offset`, read in `epoch`, is about to be
    /// produced. False when its partition was revoked (or revoked and
    /// assigned again) since it was read: the output must be dropped.
    pub fn produce(&mut self, partition: i32, epoch: Epoch, offset: i64) -> bool {
        let transactional = self.transactional;
        let Some(p) = self.parts.get_mut(&partition) else {
            return false;
        };
        if p.epoch != epoch {
            return false;
        }
        let Some(stage) = p.find(offset) else {
            return false;
        };
        if *stage != Stage::Reading {
            return false;
        }
        if transactional {
            *stage = Stage::Done;
            p.advance();
        } else {
            *stage = Stage::Produced;
            self.pending += 1;
        }
        true
    }

    /// The output of the event at `offset` was acknowledged by the broker.
    /// Acknowledgements may come in any order; the safe offset advances
    /// over the acknowledged prefix only. An acknowledgement of a partition
    /// the lane no longer tracks is ignored.
    pub fn ack(&mut self, partition: i32, offset: i64) {
        let Some(p) = self.parts.get_mut(&partition) else {
            return;
        };
        if let Some(stage) = p.find(offset)
            && *stage == Stage::Produced
        {
            *stage = Stage::Done;
            self.pending -= 1;
        }
        p.advance();
    }

    /// Outputs produced and not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// True when every event read of `partitions` has its output produced
    /// and acknowledged (or, transactional, produced).
    pub fn drained(&self, partitions: &[i32]) -> bool {
        partitions
            .iter()
            .all(|p| self.parts.get(p).is_none_or(|p| p.events.is_empty()))
    }

    /// The offsets to commit now (partition, next offset) — every safe
    /// offset not yet handed to a commit — marked as handed.
    pub fn take_commit(&mut self) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for (&partition, p) in &mut self.parts {
            if let Some(safe) = p.safe
                && p.committed != Some(safe)
            {
                out.push((partition, safe));
                p.committed = Some(safe);
            }
        }
        out
    }

    /// A commit of these partitions failed: their safe offsets are handed
    /// to the next commit again.
    pub fn commit_failed(&mut self, partitions: &[i32]) {
        for p in partitions {
            if let Some(p) = self.parts.get_mut(p) {
                p.committed = None;
            }
        }
    }

    /// Every safe offset is handed to the next commit again (the last
    /// commit, synchronous, covers what an asynchronous one may not have
    /// finished).
    pub fn recommit_all(&mut self) {
        for p in self.parts.values_mut() {
            p.committed = None;
        }
    }

    /// The committable offsets of every partition, without marking them
    /// (a transaction commits every partition it covers).
    pub fn safe_offsets(&self) -> Vec<(i32, i64)> {
        self.parts
            .iter()
            .filter_map(|(&partition, p)| p.safe.map(|s| (partition, s)))
            .collect()
    }

    /// `partitions` are taken from the lane: forgets them and says what
    /// each leaves behind.
    pub fn revoke(&mut self, partitions: &[i32]) -> Vec<Released> {
        let mut out = Vec::new();
        for &partition in partitions {
            let Some(p) = self.parts.remove(&partition) else {
                continue;
            };
            self.pending -= p.count(Stage::Produced);
            out.push(Released {
                partition,
                // Committed again even when an asynchronous commit already
                // carried it: that one may not have completed.
                commit: p.safe,
                abandoned: p.events.len(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn produced(o: &mut Offsets, partition: i32, offsets: std::ops::Range<i64>) {
        let e = o.epoch(partition).unwrap();
        for off in offsets {
            o.read(partition, off);
            assert!(o.produce(partition, e, off));
        }
    }

    #[test]
    fn acknowledgements_out_of_order_advance_over_the_prefix_only() {
        let mut o = Offsets::new(false);
        o.assign(0);
        produced(&mut o, 0, 10..15);
        o.ack(0, 12);
        o.ack(0, 11);
        assert_eq!(o.take_commit(), [], "10 is not acknowledged yet");
        o.ack(0, 10);
        assert_eq!(o.take_commit(), [(0, 13)]);
        assert_eq!(o.take_commit(), [], "handed to a commit once");
        o.ack(0, 14);
        assert_eq!(o.take_commit(), [], "13 is still missing");
        assert_eq!(o.pending(), 1);
        o.ack(0, 13);
        assert_eq!(o.take_commit(), [(0, 15)]);
        assert_eq!(o.pending(), 0);
    }

    #[test]
    fn gaps_in_offsets_are_not_waited_for() {
        // Compaction and transaction markers leave offsets that are never
        // read: the safe offset is the one after the last acknowledged.
        let mut o = Offsets::new(false);
        let e = o.assign(3);
        for off in [5, 9, 20] {
            o.read(3, off);
            assert!(o.produce(3, e, off));
        }
        o.ack(3, 20);
        o.ack(3, 5);
        assert_eq!(o.take_commit(), [(3, 6)]);
        o.ack(3, 9);
        assert_eq!(o.take_commit(), [(3, 21)]);
    }

    #[test]
    fn a_duplicate_or_unknown_acknowledgement_changes_nothing() {
        let mut o = Offsets::new(false);
        o.assign(0);
        produced(&mut o, 0, 0..3);
        o.ack(0, 1);
        o.ack(0, 1);
        assert_eq!(o.pending(), 2);
        o.ack(0, 99);
        o.ack(7, 0);
        assert_eq!(o.pending(), 2);
        assert_eq!(o.take_commit(), []);
    }

    #[test]
    fn partitions_are_tracked_apart() {
        let mut o = Offsets::new(false);
        o.assign(0);
        o.assign(1);
        produced(&mut o, 0, 0..2);
        produced(&mut o, 1, 0..2);
        o.ack(1, 0);
        o.ack(1, 1);
        assert_eq!(o.take_commit(), [(1, 2)]);
        assert!(o.drained(&[1]));
        assert!(!o.drained(&[0]));
    }

    #[test]
    fn a_revoked_partition_drops_outputs_read_before_and_keeps_the_others() {
        let mut o = Offsets::new(false);
        let e0 = o.assign(0);
        let e1 = o.assign(1);
        for p in [0, 1] {
            o.read(p, 0);
            o.read(p, 1);
        }
        assert!(o.produce(0, e0, 0));
        o.ack(0, 0);
        let released = o.revoke(&[0]);
        assert_eq!(
            released,
            [Released {
                partition: 0,
                commit: Some(1),
                abandoned: 1
            }]
        );
        assert!(!o.produce(0, e0, 1), "read before the revoke: dropped");
        // Partition 1 was kept: nothing of it is dropped.
        assert!(o.produce(1, e1, 0));
        assert!(o.produce(1, e1, 1));
        // Assigned again: a new epoch; what was read in the old one stays
        // dropped.
        let again = o.assign(0);
        assert_ne!(again, e0);
        assert!(!o.produce(0, e0, 1));
        o.read(0, 1);
        assert!(o.produce(0, again, 1));
    }

    #[test]
    fn a_revoke_forgets_unacknowledged_outputs() {
        let mut o = Offsets::new(false);
        o.assign(0);
        produced(&mut o, 0, 0..4);
        o.ack(0, 0);
        assert_eq!(o.pending(), 3);
        let released = o.revoke(&[0]);
        assert_eq!(released[0].commit, Some(1));
        assert_eq!(released[0].abandoned, 3);
        assert_eq!(o.pending(), 0);
        assert!(!o.owns(0));
        o.ack(0, 1);
        assert_eq!(o.take_commit(), []);
    }

    #[test]
    fn a_failed_commit_is_handed_to_the_next_one() {
        let mut o = Offsets::new(false);
        o.assign(0);
        o.assign(1);
        produced(&mut o, 0, 0..1);
        produced(&mut o, 1, 0..1);
        o.ack(0, 0);
        o.ack(1, 0);
        assert_eq!(o.take_commit(), [(0, 1), (1, 1)]);
        o.commit_failed(&[1]);
        assert_eq!(o.take_commit(), [(1, 1)]);
        o.recommit_all();
        assert_eq!(o.take_commit(), [(0, 1), (1, 1)]);
    }

    #[test]
    fn transactional_offsets_are_safe_once_produced() {
        let mut o = Offsets::new(true);
        let e = o.assign(2);
        o.read(2, 7);
        o.read(2, 8);
        assert!(o.produce(2, e, 7));
        assert!(!o.drained(&[2]), "one event is still being decided");
        assert!(o.produce(2, e, 8));
        assert!(o.drained(&[2]));
        assert_eq!(o.pending(), 0);
        assert_eq!(o.safe_offsets(), [(2, 9)]);
    }

    #[test]
    fn events_already_decided_count_as_acknowledged_in_order() {
        let mut o = Offsets::new(false);
        let e = o.assign(0);
        o.already_decided(0, 4);
        assert_eq!(o.take_commit(), [(0, 5)]);
        // Read before an already-decided one, produced after it.
        o.read(0, 5);
        o.already_decided(0, 6);
        assert!(o.produce(0, e, 5));
        assert_eq!(o.take_commit(), [], "5 is not acknowledged yet");
        o.ack(0, 5);
        assert_eq!(o.take_commit(), [(0, 7)]);
        assert_eq!(o.pending(), 0);
        assert!(o.drained(&[0]));
    }

    #[test]
    fn drained_waits_for_reads_and_acknowledgements() {
        let mut o = Offsets::new(false);
        let e = o.assign(0);
        o.read(0, 0);
        assert!(!o.drained(&[0]));
        assert!(o.produce(0, e, 0));
        assert!(!o.drained(&[0]));
        o.ack(0, 0);
        assert!(o.drained(&[0]));
        assert!(
            o.drained(&[5]),
            "a partition not owned has nothing to drain"
        );
    }
}
