"""A real Kafka client (confluent-kafka) for Verdict's end-to-end test.

    client.py produce BROKERS TOPIC FILE
        Produces every line of FILE (JSON lines) to TOPIC, keyed by the
        line's user_id when it has one, and waits for every acknowledgement.

    client.py collect BROKERS EVENTS_FILE DECISIONS_TOPIC DEAD_TOPIC TIMEOUT_S
        Reads decisions and dead letters from the start until every line of
        EVENTS_FILE is accounted for (a decision for its event_id, or a dead
        letter for its original bytes) or the timeout passes. Prints a JSON
        report; exits 0 only when nothing is missing.
"""

import json
import sys
import time

from confluent_kafka import Consumer, Producer


def produce(brokers, topic, path):
    p = Producer({"bootstrap.servers": brokers, "acks": "all", "linger.ms": 5})
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
    left = p.flush(60)
    if left or failed:
        print(f"produce: {left} unflushed, {len(failed)} failed: {failed[:3]}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"produced": n}))


def collect(brokers, events_path, decisions_topic, dead_topic, timeout_s):
    expected_ids = {}
    expected_dead = set()
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
                expected_dead.add(line)
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
    dead_originals = set()
    deadline = time.time() + timeout_s

    def missing():
        return [
            i for i in expected_ids if i not in decided and i not in dead_ids
        ] + [o for o in expected_dead if o not in dead_originals]

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
                dead_originals.add(original.encode())
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
        "missing": len(lost),
        "missing_sample": [x if isinstance(x, str) else x.decode(errors="replace") for x in lost[:5]],
    }
    print(json.dumps(report))
    sys.exit(0 if not lost else 1)


def main():
    cmd, *args = sys.argv[1:]
    if cmd == "produce":
        produce(*args)
    elif cmd == "collect":
        collect(args[0], args[1], args[2], args[3], float(args[4]))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
