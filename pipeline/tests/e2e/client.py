"""A real Kafka client (confluent-kafka) for Verdict's end-to-end test.

    client.py produce BROKERS TOPIC FILE [--one-per-batch] [--rate N]
        Produces every line of FILE (JSON lines) to TOPIC, keyed by the
        line's user_id when it has one, and waits for every acknowledgement.
        With --one-per-batch every record is a record batch of its own; with
        --rate N, N records per second of wall-clock time.

    client.py collect BROKERS EVENTS_FILE DECISIONS_TOPIC DEAD_TOPIC TIMEOUT_S [EVENTS_TOPIC GROUP]
        Reads decisions and dead letters from the start until every line of
        EVENTS_FILE is accounted for (a decision for its event_id, or a dead
        letter for its original bytes) or the timeout passes. Prints a JSON
        report; exits 0 only when nothing is missing. When something is
        missing and EVENTS_TOPIC and GROUP are given, the report also says
        where the missing events sit on EVENTS_TOPIC (partition, offsets)
        and GROUP's committed offsets, to tell a broker that lost records
        from a consumer that skipped them.
"""

import json
import sys
import time
from collections import Counter

from confluent_kafka import Consumer, Producer


def produce(brokers, topic, path, *options):
    config = {"bootstrap.servers": brokers, "acks": "all", "linger.ms": 5}
    if "--one-per-batch" in options:
        config["batch.num.messages"] = 1
    rate = None
    if "--rate" in options:
        rate = float(options[options.index("--rate") + 1])
    started = time.time()
    p = Producer(config)
    failed = []

    def done(err, _msg):
        if err is not None:
            failed.append(str(err))

    n = 0
    with open(path, "rb") as f:
        for line in f:
            line = line.rstrip(b"\n")
            key = None
            try:
                key = json.loads(line).get("user_id")
            except Exception:
                pass
            if not isinstance(key, str):
                key = None
            while True:
                try:
                    p.produce(topic, value=line, key=key, on_delivery=done)
                    break
                except BufferError:
                    p.poll(0.1)
            n += 1
            p.poll(0)
            if rate is not None:
                ahead = n / rate - (time.time() - started)
                if ahead > 0:
                    time.sleep(ahead)
    left = p.flush(60)
    if left or failed:
        print(f"produce: {left} unflushed, {len(failed)} failed: {failed[:3]}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"produced": n}))


def locate(brokers, topic, group, wanted):
    """Where the events of `wanted` (event ids) sit on `topic`, per
    partition, and the committed offsets of `group`."""
    from confluent_kafka import TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": f"e2e-locate-{time.time()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    partitions = list(c.list_topics(topic, timeout=10).topics[topic].partitions)
    c.assign([TopicPartition(topic, p, 0) for p in partitions])
    open_parts = set(partitions)
    found = {}
    ends = {}
    deadline = time.time() + 60
    while open_parts and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == -191:  # _PARTITION_EOF
                ends[m.partition()] = m.offset()
                open_parts.discard(m.partition())
            continue
        try:
            event_id = json.loads(m.value()).get("event_id")
        except Exception:
            continue
        if event_id in wanted:
            found.setdefault(m.partition(), []).append(m.offset())
    c.close()
    g = Consumer({"bootstrap.servers": brokers, "group.id": group})
    committed = g.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
    g.close()
    return {
        "on_topic": sum(len(v) for v in found.values()),
        "by_partition": {
            p: {"count": len(v), "first": min(v), "last": max(v)} for p, v in found.items()
        },
        "partition_ends": ends,
        "committed": {tp.partition: tp.offset for tp in committed},
    }


def collect(brokers, events_path, decisions_topic, dead_topic, timeout_s, events_topic=None, group=None):
    expected_ids = {}
    # Malformed lines can repeat: each occurrence is owed one dead letter.
    expected_dead = Counter()
    with open(events_path, "rb") as f:
        for line in f:
            line = line.rstrip(b"\n")
            try:
                event = json.loads(line)
                event_id = event["event_id"] if isinstance(event, dict) else None
            except Exception:
                event_id = None
            if isinstance(event_id, str):
                expected_ids[event_id] = line
            else:
                expected_dead[line] += 1
    c = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": f"e2e-collector-{time.time()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([decisions_topic, dead_topic])
    decided = {}
    dead = 0
    dead_ids = set()
    dead_originals = Counter()
    deadline = time.time() + timeout_s

    def missing():
        return [
            i for i in expected_ids if i not in decided and i not in dead_ids
        ] + [o for o, n in expected_dead.items() if dead_originals[o] < n]

    while time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            if not missing():
                break
            continue
        if m.error():
            continue
        record = json.loads(m.value())
        if m.topic() == decisions_topic:
            decided[record["event_id"]] = decided.get(record["event_id"], 0) + 1
        else:
            dead += 1
            original = record.get("original")
            if original is not None:
                dead_originals[original.encode()] += 1
                try:
                    dead_ids.add(json.loads(original)["event_id"])
                except Exception:
                    pass
    c.close()
    lost = missing()
    report = {
        "events": len(expected_ids) + len(expected_dead),
        "decided": len(decided),
        "dead_letters": dead,
        "duplicates": sum(n - 1 for n in decided.values()),
        "duplicate_dead_letters": sum(
            max(0, n - expected_dead[o]) for o, n in dead_originals.items() if o in expected_dead
        ),
        "duplicate_sample": [i for i, n in decided.items() if n > 1][:5],
        "missing": len(lost),
        "missing_sample": [x if isinstance(x, str) else x.decode(errors="replace") for x in lost[:5]],
    }
    if lost and events_topic and group:
        report["missing_located"] = locate(
            brokers, events_topic, group, {x for x in lost if isinstance(x, str)}
        )
    print(json.dumps(report))
    sys.exit(0 if not lost else 1)


def main():
    cmd, *args = sys.argv[1:]
    if cmd == "produce":
        produce(*args)
    elif cmd == "collect":
        collect(args[0], args[1], args[2], args[3], float(args[4]), *args[5:7])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
