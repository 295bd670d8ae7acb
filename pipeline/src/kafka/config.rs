//! The Kafka clients' settings: Verdict's own, then the raw librdkafka
//! properties of `[kafka] consumer_properties` and `producer_properties`,
//! except those Verdict cannot honour safely, which are refused with the
//! reason before any client is created.

use rdkafka::ClientConfig;

use crate::config::KafkaConfig;

/// The consumer's settings: offsets committed by Verdict only, after the
/// outputs of their events are acknowledged.
pub fn consumer_config(k: &KafkaConfig, lane: usize) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("group.id", &k.group_id)
        .set("client.id", format!("verdict-lane-{lane}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Consumer lag per partition comes from librdkafka's statistics.
        .set("statistics.interval.ms", "5000");
    if k.exactly_once {
        c.set("isolation.level", "read_committed");
    }
    for (key, v) in &k.consumer_properties {
        if key == "group.instance.id" {
            // Static membership: every lane is a member of its own.
            c.set(key, format!("{v}-lane-{lane}"));
        } else {
            c.set(key, v);
        }
    }
    c
}

/// The producer's settings: every record acknowledged by all in-sync
/// replicas, idempotent so retries neither duplicate nor reorder;
/// transactional in exactly-once mode.
pub fn producer_config(k: &KafkaConfig, lane: usize) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true");
    if k.exactly_once {
        c.set(
            "transactional.id",
            format!("{}-lane-{lane}", k.transactional_id_prefix()),
        );
    }
    for (key, v) in &k.producer_properties {
        c.set(key, v);
    }
    c
}

/// Every raw property of `k` that Verdict cannot honour safely, each with
/// the reason and what to do instead. Empty when all can be used.
pub fn unsafe_properties(k: &KafkaConfig) -> Vec<String> {
    let mut refused = Vec::new();
    let is = |v: &str, values: &[&str]| values.iter().any(|x| v.eq_ignore_ascii_case(x));
    for (key, v) in &k.consumer_properties {
        let why = match key.as_str() {
            "enable.auto.commit" if !is(v, &["false"]) => Some(
                "Verdict commits an offset only once the outputs of every event before it are \
                 acknowledged; an automatic commit could commit events that have no decision yet",
            ),
            "enable.auto.offset.store" if !is(v, &["false"]) => Some(
                "Verdict stores the offsets it commits itself, after the outputs are acknowledged",
            ),
            "auto.offset.reset" if !is(v, &["earliest", "smallest", "beginning"]) => Some(
                "a partition without a committed offset would start at its end, and the events \
                 already on it would never be decided; Verdict reads such a partition from its \
                 start",
            ),
            "isolation.level" if k.exactly_once && !is(v, &["read_committed"]) => {
                Some("exactly-once reads only committed transactions; leave isolation.level unset")
            }
            "group.id" => Some("the consumer group is [kafka] group_id"),
            "bootstrap.servers" | "metadata.broker.list" => Some("the brokers are [kafka] brokers"),
            "enable.partition.eof" if !is(v, &["false"]) => Some(
                "Verdict reads partitions as endless streams; end-of-partition events are not used",
            ),
            _ => None,
        };
        if let Some(why) = why {
            refused.push(format!(
                "consumer property `{key}` = `{v}` cannot be honoured: {why}"
            ));
        }
    }
    for (key, v) in &k.producer_properties {
        let why = match key.as_str() {
            "acks" | "request.required.acks" if !is(v, &["all", "-1"]) => Some(
                "an output acknowledged by fewer than all in-sync replicas can be lost after its \
                 input offset is committed",
            ),
            "enable.idempotence" if !is(v, &["true"]) => {
                Some("without idempotence a retried output can be written twice or out of order")
            }
            "transactional.id" => Some(
                "transactional ids are derived from [kafka] transactional_id, one per lane; set \
                 that and kafka.exactly_once instead",
            ),
            "bootstrap.servers" | "metadata.broker.list" => Some("the brokers are [kafka] brokers"),
            _ => None,
        };
        if let Some(why) = why {
            refused.push(format!(
                "producer property `{key}` = `{v}` cannot be honoured: {why}"
            ));
        }
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(consumer: &[(&str, &str)], producer: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            consumer_properties: consumer
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            producer_properties: producer
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..KafkaConfig::default()
        }
    }

    #[test]
    fn safe_properties_pass() {
        let k = with(
            &[
                ("partition.assignment.strategy", "cooperative-sticky"),
                ("session.timeout.ms", "6000"),
                ("enable.auto.commit", "false"),
                ("auto.offset.reset", "earliest"),
                ("security.protocol", "SASL_SSL"),
            ],
            &[
                ("linger.ms", "5"),
                ("acks", "all"),
                ("compression.type", "lz4"),
            ],
        );
        assert_eq!(unsafe_properties(&k), Vec::<String>::new());
    }

    #[test]
    fn unsafe_properties_are_refused_with_the_reason() {
        let k = with(
            &[
                ("enable.auto.commit", "true"),
                ("auto.offset.reset", "latest"),
                ("group.id", "other"),
            ],
            &[("acks", "1"), ("enable.idempotence", "false")],
        );
        let refused = unsafe_properties(&k);
        assert_eq!(refused.len(), 5, "{refused:#?}");
        assert!(
            refused[0].contains("`auto.offset.reset` = `latest`"),
            "{refused:#?}"
        );
        assert!(
            refused
                .iter()
                .any(|r| r.contains("`acks` = `1`") && r.contains("lost"))
        );
        let mut eos = with(&[("isolation.level", "read_uncommitted")], &[]);
        assert!(unsafe_properties(&eos).is_empty());
        eos.exactly_once = true;
        assert_eq!(unsafe_properties(&eos).len(), 1);
    }

    #[test]
    fn static_membership_is_one_member_per_lane() {
        let k = with(&[("group.instance.id", "pod-0")], &[]);
        assert_eq!(
            consumer_config(&k, 1).get("group.instance.id"),
            Some("pod-0-lane-1")
        );
    }
}
