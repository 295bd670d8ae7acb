//! Catching the feature store up on an assigned partition before its
//! events are decided.
//!
//! Velocity features are only right if the store holds every event of a
//! partition before the one being decided. [`Applied`] knows, per
//! partition, the next offset whose event is in the store: seeded from the
//! restored snapshot's positions, advanced by every event the lanes read.
//! When a partition is assigned and the store is behind its committed
//! offset (the gap between the snapshot and a crash, or a partition this
//! instance never held), the partition stays paused while [`catch_up`]
//! reads the missing events again into the features only — not deciding
//! them; the latest `kafka.catch_up_max_events` at most: for a partition
//! never held, from the oldest the broker keeps — then it is resumed. Its
//! other partitions flow meanwhile; `/readyz` waits for the catch-up.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::engine::Engine;
use crate::metrics::Metrics;

use super::config::consumer_config;

/// Per partition of the events topic, the next offset whose event is not
/// yet in the feature store. Shared by the lanes, so a partition moving
/// between lanes of one instance needs no catch-up.
pub struct Applied(dashmap::DashMap<i32, i64>);

impl Applied {
    /// Seeded from a restored snapshot's positions (`topic/partition` →
    /// next offset) of `topic`.
    pub fn from_snapshot(topic: &str, positions: &BTreeMap<String, i64>) -> Applied {
        let map = dashmap::DashMap::new();
        for (key, &offset) in positions {
            if let Some((t, p)) = key.rsplit_once('/')
                && t == topic
                && let Ok(p) = p.parse::<i32>()
            {
                map.insert(p, offset);
            }
        }
        Applied(map)
    }

    /// The event at `offset` of `partition` is in the store.
    pub fn advance(&self, partition: i32, offset: i64) {
        self.0
            .entry(partition)
            .and_modify(|next| *next = (*next).max(offset + 1))
            .or_insert(offset + 1);
    }

    pub fn get(&self, partition: i32) -> Option<i64> {
        self.0.get(&partition).map(|v| *v)
    }
}

/// Events of one assigned partition to read again into the features:
/// offsets `from..to` (`to` is the committed offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp {
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

/// The catch-ups `parts` need, given their committed offsets: a partition
/// whose store position is behind its committed offset reads the events in
/// between again, at most `max_events` of them. `earliest` answers the
/// first offset the broker keeps of a partition the store never saw.
pub fn plan(
    committed: &TopicPartitionList,
    applied: &Applied,
    max_events: u64,
    mut earliest: impl FnMut(i32) -> i64,
) -> Vec<CatchUp> {
    let mut jobs = Vec::new();
    for e in committed.elements() {
        // Nothing committed: the partition is read, and every event
        // decided, from its start.
        let Offset::Offset(to) = e.offset() else {
            continue;
        };
        let p = e.partition();
        let from = match applied.get(p) {
            Some(next) => next,
            None => earliest(p),
        };
        let from = from.max(to.saturating_sub(max_events as i64));
        if from < to {
            jobs.push(CatchUp {
                partition: p,
                from,
                to,
            });
        }
    }
    jobs
}

/// Reads the events of `jobs` again into the feature store (not deciding
/// them) with a consumer of its own, outside the group. Gives a partition
/// up (logged) when the broker has nothing for it for half a minute; stops
/// early on shutdown. Blocking: runs on a thread of its own.
pub fn catch_up(
    lane: usize,
    engine: &Engine,
    applied: &Applied,
    metrics: &Metrics,
    k: &KafkaConfig,
    jobs: &[CatchUp],
    stop: &AtomicBool,
) {
    let started = Instant::now();
    let consumer: BaseConsumer = match consumer_config(k, lane)
        .set("group.id", format!("{}-catch-up", k.group_id))
        .set("client.id", format!("verdict-lane-{lane}-catch-up"))
        .set("enable.partition.eof", "true")
        .set("statistics.interval.ms", "0")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(lane, error = %e, "cannot create the catch-up consumer");
            return;
        }
    };
    let mut tpl = TopicPartitionList::new();
    for j in jobs {
        let _ = tpl.add_partition_offset(&k.events_topic, j.partition, Offset::Offset(j.from));
    }
    if let Err(e) = consumer.assign(&tpl) {
        tracing::warn!(lane, error = %e, "cannot assign the catch-up consumer");
        return;
    }
    let mut remaining: HashMap<i32, i64> = jobs.iter().map(|j| (j.partition, j.to)).collect();
    let total: i64 = jobs.iter().map(|j| j.to - j.from).sum();
    let (mut replayed, mut unparsable) = (0u64, 0u64);
    let mut last_message = Instant::now();
    let mut last_report = Instant::now();
    while !remaining.is_empty() && !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last_message = Instant::now();
                let (p, o) = (m.partition(), m.offset());
                let Some(&to) = remaining.get(&p) else {
                    continue;
                };
                if o >= to {
                    remaining.remove(&p);
                    continue;
                }
                // No stream clock: the lane's clock of the partition starts
                // at the first event it decides, so the events after the
                // gap are judged by their own order from there.
                if engine.replay_features(m.payload().unwrap_or_default(), None) {
                    replayed += 1;
                } else {
                    unparsable += 1;
                }
                applied.advance(p, o);
                if o + 1 >= to {
                    remaining.remove(&p);
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                remaining.remove(&p);
            }
            Some(Err(e)) => tracing::warn!(lane, error = %e, "catch-up consumer error"),
            None if last_message.elapsed() > Duration::from_secs(30) => {
                tracing::warn!(
                    lane,
                    partitions = ?remaining.keys().collect::<Vec<_>>(),
                    "the broker sent nothing for 30 s; deciding on without the rest of \
                     these partitions' events in the features"
                );
                break;
            }
            None => {}
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            tracing::info!(lane, replayed, of = total, "catching the features up");
            last_report = Instant::now();
        }
    }
    metrics.features_replayed(replayed);
    tracing::info!(
        lane,
        replayed,
        unparsable,
        secs = format!("{:.1}", started.elapsed().as_secs_f64()),
        "feature catch-up done"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(offsets: &[(i32, Option<i64>)]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for &(p, o) in offsets {
            let offset = o.map_or(Offset::Invalid, Offset::Offset);
            tpl.add_partition_offset("events", p, offset).unwrap();
        }
        tpl
    }

    #[test]
    fn only_partitions_behind_their_committed_offset_catch_up() {
        let applied = Applied::from_snapshot(
            "events",
            &[
                ("events/0".into(), 40),
                ("events/1".into(), 90),
                ("other/2".into(), 5),
            ]
            .into(),
        );
        let jobs = plan(
            &committed(&[(0, Some(100)), (1, Some(90)), (2, Some(30)), (3, None)]),
            &applied,
            1_000,
            |_| 10,
        );
        assert_eq!(
            jobs,
            [
                CatchUp {
                    partition: 0,
                    from: 40,
                    to: 100
                },
                // Never seen by the store (the other topic's position does
                // not count): from the broker's earliest.
                CatchUp {
                    partition: 2,
                    from: 10,
                    to: 30
                },
            ]
        );
    }

    #[test]
    fn a_catch_up_reads_at_most_the_latest_max_events() {
        let applied = Applied::from_snapshot("events", &BTreeMap::new());
        let jobs = plan(&committed(&[(0, Some(1_000_000))]), &applied, 500, |_| 0);
        assert_eq!(jobs[0].from, 999_500);
        assert!(plan(&committed(&[(0, Some(5))]), &applied, 0, |_| 0).is_empty());
    }
}
