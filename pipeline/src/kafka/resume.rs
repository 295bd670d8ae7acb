//! Resuming a partition after its last output, so that no event is decided
//! twice across a handoff or a crash, whatever the broker did with the
//! last commit.
//!
//! Every output (decision or dead letter) carries its input position in a
//! `verdict.input` header (`<partition>:<offset>`) and is produced to the
//! partition of its topic with the number of its input partition, when
//! the topic has that many (else where its key hashes). The outputs of one
//! input partition are then written in input order, each output partition
//! a prefix of what its producer sent (the producer is idempotent).
//!
//! When a partition is assigned, the newest outputs on its output
//! partitions are read back, newest first, until one older than the
//! committed offset: the input offsets at or past the committed offset
//! that already have an output are not decided again — only read into the
//! features. The commit that failed during a rebalance (a broker refuses
//! commits once the group is rejoining) or that a crash never made costs
//! nothing then. At most `kafka.resume_scan_max_records` outputs are read
//! per output partition; past that the rest are decided again (never
//! lost), which is logged.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;

use super::config::consumer_config;

/// The header that carries an output's input position.
pub const INPUT_HEADER: &str = "verdict.input";

/// Writes `<partition>:<offset>` into `out`, reused.
pub fn encode_input(out: &mut Vec<u8>, partition: i32, offset: i64) {
    out.clear();
    out.extend_from_slice(itoa::Buffer::new().format(partition).as_bytes());
    out.push(b':');
    out.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
}

/// The input position of a `verdict.input` header value.
pub fn decode_input(value: &[u8]) -> Option<(i32, i64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (p, o) = text.split_once(':')?;
    Some((p.parse().ok()?, o.parse().ok()?))
}

/// The output partition an output of input `partition` goes to, in a
/// topic of `partitions` partitions: the same number when there is one.
pub fn output_partition(partition: i32, partitions: i32) -> Option<i32> {
    (partition < partitions).then_some(partition)
}

/// What a scan of one output partition found, newest first.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    /// Input offsets at or past the committed offset that have an output.
    pub decided: Vec<i64>,
    /// The scan reached an output older than the committed offset (or the
    /// start of the partition): nothing more is to be found.
    pub complete: bool,
}

/// Folds the inputs of one output partition's records, read newest first,
/// into what was found for input `partition` from `committed` on. Stops
/// (complete) at the first of its outputs before `committed`.
pub fn fold_newest_first(
    records: impl IntoIterator<Item = (i32, i64)>,
    partition: i32,
    committed: i64,
    found: &mut Found,
) {
    for (p, o) in records {
        if p != partition {
            continue;
        }
        if o < committed {
            found.complete = true;
            return;
        }
        found.decided.push(o);
    }
}

/// Reads the newest outputs of input `partition` on `topic`'s
/// `output_partition`, back to the first one before `committed`, at most
/// `max_records`. Blocking (the Kafka thread's).
pub fn scan(
    k: &KafkaConfig,
    lane: usize,
    topic: &str,
    output_partition: i32,
    partition: i32,
    committed: i64,
    max_records: i64,
) -> Result<Found, String> {
    let timeout = Duration::from_secs(10);
    let consumer: BaseConsumer = consumer_config(k, lane)
        .set("group.id", format!("{}-resume", k.group_id))
        .set("client.id", format!("verdict-lane-{lane}-resume"))
        .set("enable.partition.eof", "true")
        .set("statistics.interval.ms", "0")
        .create()
        .map_err(|e| format!("cannot create the resume consumer: {e}"))?;
    let (low, high) = consumer
        .fetch_watermarks(topic, output_partition, timeout)
        .map_err(|e| format!("cannot read the watermarks of {topic}/{output_partition}: {e}"))?;
    let mut found = Found::default();
    // The oldest offset read so far. A broker may answer a fetch from
    // inside a record batch with the batches after it (tansu does), so the
    // next, older read goes on up to what was really seen, not up to where
    // the last one started.
    let mut seen_from = high;
    let mut start = high;
    let chunk = 1_000i64;
    while start > low && !found.complete && high - start < max_records {
        start = (start - chunk).max(low);
        let (first, mut records) =
            read_range(&consumer, topic, output_partition, start, seen_from)?;
        records.reverse();
        fold_newest_first(records, partition, committed, &mut found);
        if let Some(first) = first {
            seen_from = seen_from.min(first);
        }
    }
    if start <= low && seen_from <= low {
        found.complete = true;
    }
    found.decided.sort_unstable();
    found.decided.dedup();
    Ok(found)
}

/// The first offset a read was answered with, and the input positions of
/// the records it read.
type RangeRead = (Option<i64>, Vec<(i32, i64)>);

/// The input positions of the records from `start` up to `end` of one
/// partition (a record without the header counts for nothing), and the
/// first offset the broker answered with.
fn read_range(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    start: i64,
    end: i64,
) -> Result<RangeRead, String> {
    let mut first = None;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(start))
        .map_err(|e| e.to_string())?;
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if m.offset() >= end {
                    break;
                }
                first.get_or_insert(m.offset());
                if let Some(headers) = m.headers()
                    && let Some(h) = headers.iter().find(|h| h.key == INPUT_HEADER)
                    && let Some(input) = h.value.and_then(decode_input)
                {
                    out.push(input);
                }
                if m.offset() + 1 >= end {
                    break;
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(format!("reading {topic}/{partition}: {e}")),
            None if Instant::now() > until => {
                return Err(format!(
                    "reading {topic}/{partition} {start}..{end}: nothing came in 30 s"
                ));
            }
            None => {}
        }
    }
    Ok((first, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_positions_round_trip_and_bad_values_are_none() {
        let mut buf = Vec::new();
        for (p, o) in [(0, 0), (7, 1 << 40), (i32::MAX, i64::MAX)] {
            encode_input(&mut buf, p, o);
            assert_eq!(decode_input(&buf), Some((p, o)));
        }
        for bad in [&b""[..], b"3", b"3:", b":4", b"x:1", b"1:y", b"\xff:1"] {
            assert_eq!(decode_input(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_newest_outputs_are_kept_back_to_the_committed_offset() {
        let mut found = Found::default();
        // Newest first; other partitions' outputs interleave.
        let records = [(2, 15), (1, 9), (2, 14), (2, 13), (2, 11), (2, 10), (2, 9)];
        fold_newest_first(records, 2, 11, &mut found);
        assert_eq!(found.decided, [15, 14, 13, 11]);
        assert!(found.complete, "stopped at 10, before the committed 11");
        let mut more = Found::default();
        fold_newest_first([(1, 4), (3, 3)], 2, 11, &mut more);
        assert!(more.decided.is_empty() && !more.complete);
    }

    #[test]
    fn outputs_go_to_their_input_partition_when_there_is_one() {
        assert_eq!(output_partition(3, 6), Some(3));
        assert_eq!(output_partition(5, 6), Some(5));
        assert_eq!(output_partition(6, 6), None);
    }
}
