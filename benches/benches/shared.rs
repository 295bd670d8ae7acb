//! What sharing devices and IPs in Redis costs, against keeping every kind
//! local: the engine decides the generator's traffic as a Kafka lane does
//! (bursts prepared in order, one shared-store round trip per burst, then
//! scored and decided), on one thread, against a `redis-server` of its own
//! on a loopback port (the machine's other core).
//!
//! Printed for each placement, in one run:
//! - throughput, closed loop: events/s and µs of this process's CPU per
//!   event (Redis's own CPU per event beside it), and Redis commands and
//!   round trips per event; the shared store's deadline is 2 s there, as a
//!   closed loop queues by design;
//! - latency at half load: events arriving one by one at half of the
//!   shared placement's throughput, each lane burst being what has arrived
//!   since the last; p50 and p99 from arrival to decision, with the
//!   default deadline (50 ms), after a first second not measured, in
//!   `ROUNDS` (3) rounds alternating the two placements, and what sharing
//!   adds between their median rounds.
//!
//! Both placements decide the same events the same way (one process sees
//! every event: shared windows equal local ones), which the run asserts.
//!
//! ```sh
//! cargo bench -p verdict-benches --bench shared          # 200k events, 10 s at half load
//! EVENTS=500000 SECONDS=20 cargo bench -p verdict-benches --bench shared
//! CHAINS=1 cargo bench -p verdict-benches --bench shared  # round-trip chains per lane
//! KNOWN=1000000 cargo bench -p verdict-benches --bench shared  # states a lane remembers
//! cargo test -p verdict-benches --bench shared           # a few events: a smoke test
//! ```
//! PIN=1 cargo bench -p verdict-benches --bench shared     # Redis on a core of its own
//! Needs `redis-server` (scripts/ensure-redis.sh), or VERDICT_REDIS_SERVER.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use verdict::config::Config;
use verdict::engine::{Engine, StreamClock};
use verdict_core::{Action, Position};
use verdict_features::shared::SharedConfig;
use verdict_gen::{GenConfig, Generator};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `redis-server` on a free loopback port, stopped when dropped.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let binary = std::env::var_os("VERDICT_REDIS_SERVER").unwrap_or("redis-server".into());
        let mut command = match pinning() {
            Some((_, redis_cpu)) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &redis_cpu.to_string()]).arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        let child = command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (scripts/ensure-redis.sh installs it)");
        let redis = Redis {
            child,
            port,
            _dir: dir,
        };
        let until = Instant::now() + Duration::from_secs(20);
        while !redis.command("PING").starts_with("+PONG") {
            assert!(Instant::now() < until, "redis-server does not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn command(&self, line: &str) -> String {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let _ = write!(s, "{line}\r\n");
        let mut buf = vec![0; 64 * 1024];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Reads (`MGET`: one per shared entity per burst), commits
    /// (`EVALSHA` of the commit script: one per changed entity per burst,
    /// more on a conflict) and commands processed (the script's own calls
    /// included) so far.
    fn commands(&self) -> [u64; 3] {
        let info = self.command("INFO all");
        let calls = |name: &str| -> u64 {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
                .and_then(|v| v.split(',').next()?.parse().ok())
                .unwrap_or(0)
        };
        let total = info
            .lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        [calls("mget"), calls("evalsha"), total]
    }

    /// Microseconds of Redis per call of each command that ran, from
    /// `INFO commandstats` (a script's calls are inside its EVALSHA's).
    fn usec_per_call(&self) -> String {
        self.command("INFO commandstats")
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let per = rest
                    .split(',')
                    .find_map(|f| f.strip_prefix("usec_per_call="))?;
                Some(format!("{name} {per}"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The server's CPU time so far.
    fn cpu(&self) -> Duration {
        cpu_of(&format!("/proc/{}/stat", self.child.id()))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User plus system CPU time of a process, from its `/proc/…/stat`.
fn cpu_of(stat: &str) -> Duration {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Fields 14 and 15 (utime, stime), counted after the command's ")".
    Duration::from_secs_f64((ticks(11) + ticks(12)) as f64 / 100.0)
}

/// What one pass measured.
#[derive(Default)]
struct Pass {
    events: usize,
    elapsed: Duration,
    cpu: Duration,
    bursts: usize,
    latencies_us: Vec<u64>,
    outcomes: [usize; 3],
    degraded: usize,
}

impl Pass {
    fn percentile(&mut self, q: f64) -> f64 {
        self.latencies_us.sort_unstable();
        let i = ((self.latencies_us.len() as f64 - 1.0) * q).round() as usize;
        self.latencies_us.get(i).copied().unwrap_or(0) as f64
    }
}

/// How long a latency pass runs before its decisions are measured.
const WARMUP: Duration = Duration::from_secs(1);

/// Decides `events` as a lane does: at most `MAX_BURST` events prepared
/// in a burst, at most `IN_FLIGHT` in flight. With `rate`, event `i`
/// arrives at `i / rate` s and a burst is what has arrived; without, all
/// have arrived at the start (closed loop).
fn pass(engine: &Engine, events: &[Vec<u8>], rate: Option<f64>) -> Pass {
    const MAX_BURST: usize = 256;
    const IN_FLIGHT: usize = 4_096;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut burst = engine.burst();
        let mut window = FuturesOrdered::new();
        let mut out = Vec::with_capacity(4096);
        let mut p = Pass::default();
        let started = Instant::now();
        let cpu = cpu_of("/proc/self/stat");
        let due = |i: usize| match rate {
            Some(r) => started + Duration::from_secs_f64(i as f64 / r),
            None => started,
        };
        // Whether event i has arrived (closed loop: all have, no clock read).
        let arrived = |i: usize| rate.is_none() || due(i) <= Instant::now();
        let mut next = 0;
        let mut clock = StreamClock::new();
        while next < events.len() || !window.is_empty() {
            let ready = next < events.len() && arrived(next);
            // Read again once a whole burst fits, as a lane reads a batch.
            if ready && window.len() + MAX_BURST <= IN_FLIGHT {
                let mut n = 0;
                while next < events.len()
                    && n < MAX_BURST
                    && window.len() < IN_FLIGHT
                    && arrived(next)
                {
                    let line = next as u64 + 1;
                    let position = || Position::File {
                        file: "generated".into(),
                        line,
                    };
                    if let Ok(prepared) = engine.prepare_in(
                        &mut burst,
                        &mut clock,
                        &events[next],
                        position,
                        due(next),
                    ) {
                        window.push_back(engine.finish(prepared));
                    }
                    next += 1;
                    n += 1;
                }
                burst.send();
                p.bursts += 1;
                continue;
            }
            // Closed loop, or every event read: the next decision. Else
            // the next decision or the next arrival, whichever comes first
            // (a timer only where there is an arrival to wait for).
            let decision = if rate.is_none() || next == events.len() {
                window.next().await
            } else {
                tokio::select! {
                    biased;
                    d = window.next(), if !window.is_empty() => d,
                    _ = tokio::time::sleep_until(due(next).into()) => None,
                }
            };
            if let Some(d) = decision {
                out.clear();
                d.decision.write_json(&mut out);
                p.events += 1;
                // The first moments (connections, scripts, a fresh
                // engine's tables) are not the steady state measured.
                if rate.is_some_and(|_| started.elapsed() >= WARMUP) {
                    p.latencies_us.push(d.decision.latency_us);
                }
                p.degraded += usize::from(d.decision.degraded);
                p.outcomes[match d.decision.decision {
                    Action::Approve => 0,
                    Action::Review => 1,
                    Action::Deny => 2,
                }] += 1;
            }
        }
        p.elapsed = started.elapsed();
        p.cpu = cpu_of("/proc/self/stat").saturating_sub(cpu);
        p
    })
}

/// With `PIN=1` (on a machine of two cores or more), Redis runs on the
/// last core and this process on the others, as Redis runs on a machine of
/// its own in production: on shared cores the scheduler pauses Redis for a
/// time slice (milliseconds; a `GET` then takes 6 ms in Redis's slow log)
/// whenever this process's threads want both cores, and the p99 measures
/// that. Pinned, the shared store's connection and the deciding thread
/// share one core. The CPUs of this process, and Redis's.
fn pinning() -> Option<(String, usize)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let wanted = std::env::var("PIN").is_ok_and(|v| v == "1");
    let taskset = Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (wanted && cores >= 2 && taskset).then(|| (format!("0-{}", cores - 2), cores - 1))
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    if let Some((mine, redis_cpu)) = pinning() {
        // Every thread of this process now and later (they inherit it).
        let pinned = Command::new("taskset")
            .args(["-a", "-p", "-c", &mine, &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(pinned, "taskset could not pin this process to CPUs {mine}");
        eprintln!("shared bench: this process on CPUs {mine}, redis-server on CPU {redis_cpu}");
    }
    let (users, events, seconds) = if benching {
        (
            env_usize("USERS", 100_000) as u32,
            env_usize("EVENTS", 200_000),
            env_usize("SECONDS", 10),
        )
    } else {
        (1_000, 500, 1)
    };
    let redis = Redis::start();
    let mut local = Config::load(&root().join("verdict.toml")).expect("verdict.toml loads");
    local.engine.rules_watch_ms = 0;
    let mut generator = Generator::new(GenConfig {
        users,
        events_per_sec: 100.0,
        ..GenConfig::default()
    });
    let traffic: Vec<Vec<u8>> = (0..events).map(|_| generator.next_event().bytes).collect();
    // The throughput pass queues by design (a closed loop, 4096 events in
    // flight): its round trips get a deadline out of the way, so that it
    // measures what Redis and this process can do. The latency pass keeps
    // the default deadline.
    let shared = |prefix: &str, deadline_ms: u64| {
        let mut c = local.clone();
        for kind in ["device", "ip"] {
            c.features.placement.insert(kind.into(), "shared".into());
        }
        c.features.shared = Some(SharedConfig {
            urls: vec![format!("redis://127.0.0.1:{}", redis.port)],
            key_prefix: prefix.into(),
            deadline_ms,
            chains: env_usize("CHAINS", SharedConfig::default().chains),
            known_entities: env_usize("KNOWN", SharedConfig::default().known_entities),
            ..SharedConfig::default()
        });
        c
    };
    eprintln!(
        "shared bench: {events} events ({users} users); redis-server on port {}",
        redis.port
    );

    // Throughput, closed loop.
    let local_pass = pass(&Engine::load(&local).expect("loads"), &traffic, None);
    let (commands, redis_cpu) = (redis.commands(), redis.cpu());
    let shared_pass = pass(
        &Engine::load(&shared("tput", 2_000)).expect("loads"),
        &traffic,
        None,
    );
    let after = redis.commands();
    let [reads, commits, commands] = [0, 1, 2].map(|i| after[i] - commands[i]);
    let redis_cpu = redis.cpu().saturating_sub(redis_cpu);
    let per = |d: Duration, p: &Pass| d.as_secs_f64() * 1e6 / p.events as f64;
    let rate = |p: &Pass| p.events as f64 / p.elapsed.as_secs_f64();
    for (name, p) in [("all-local", &local_pass), ("shared", &shared_pass)] {
        println!(
            "shared/throughput/{name}: {} events in {:.2} s: {:.0} events/s, {:.2} µs of CPU per event, {} bursts, {} degraded",
            p.events,
            p.elapsed.as_secs_f64(),
            rate(p),
            per(p.cpu, p),
            p.bursts,
            p.degraded,
        );
    }
    println!(
        "  shared: {:.0}% of all-local throughput; +{:.2} µs of Verdict's CPU per event, {:.2} µs of Redis's; per event {:.3} entity reads (MGET) and {:.3} commits (EVALSHA), {:.2} Redis commands with the script's own, {:.4} bursts",
        100.0 * rate(&shared_pass) / rate(&local_pass),
        per(shared_pass.cpu, &shared_pass) - per(local_pass.cpu, &local_pass),
        per(redis_cpu, &shared_pass),
        reads as f64 / shared_pass.events as f64,
        commits as f64 / shared_pass.events as f64,
        commands as f64 / shared_pass.events as f64,
        shared_pass.bursts as f64 / shared_pass.events as f64,
    );
    println!("  Redis µs per call: {}", redis.usec_per_call());
    assert_eq!(
        local_pass.outcomes, shared_pass.outcomes,
        "shared windows decide what local ones decide"
    );
    assert_eq!(
        shared_pass.degraded, local_pass.degraded,
        "no shared read failed"
    );

    // Latency at half of the shared throughput: rounds of one pass each,
    // alternating, so that a slow moment of the machine (or of a fresh
    // engine's first minutes) weighs on both; the median round of each.
    let half = rate(&shared_pass) / 2.0;
    let n = ((half * seconds as f64) as usize).clamp(1, traffic.len());
    let slice = &traffic[..n];
    let rounds = env_usize("ROUNDS", 3).max(1);
    let (mut local_rounds, mut shared_rounds) = (Vec::new(), Vec::new());
    let before = redis.commands();
    let mut shared_events = 0;
    for round in 0..rounds {
        let mut l = pass(&Engine::load(&local).expect("loads"), slice, Some(half));
        let mut s = pass(
            &Engine::load(&shared(
                &format!("lat{round}"),
                SharedConfig::default().deadline_ms,
            ))
            .expect("loads"),
            slice,
            Some(half),
        );
        shared_events += s.events;
        assert_eq!(
            s.degraded, 0,
            "no shared read missed its deadline at half load"
        );
        for (name, p, kept) in [
            ("all-local", &mut l, &mut local_rounds),
            ("shared", &mut s, &mut shared_rounds),
        ] {
            let (p50, p99) = (p.percentile(0.5), p.percentile(0.99));
            println!(
                "shared/latency/{name}/{round}: {} events at {half:.0} events/s: p50 {p50:.0} µs, p99 {p99:.0} µs, {:.1} events per burst",
                p.events,
                p.events as f64 / p.bursts.max(1) as f64,
            );
            kept.push((p50, p99));
        }
    }
    let after = redis.commands();
    let median = |v: &mut Vec<(f64, f64)>, q: fn(&(f64, f64)) -> f64| {
        let mut x: Vec<f64> = v.iter().map(q).collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    let [reads, commits, commands] = [0, 1, 2].map(|i| after[i] - before[i]);
    let each = |x: u64| x as f64 / shared_events as f64;
    println!(
        "  shared adds {:.0} µs at p50 and {:.0} µs at p99 (medians of {rounds} rounds); per event {:.3} entity reads (MGET) and {:.3} commits (EVALSHA), {:.2} Redis commands with the script's own",
        median(&mut shared_rounds, |r| r.0) - median(&mut local_rounds, |r| r.0),
        median(&mut shared_rounds, |r| r.1) - median(&mut local_rounds, |r| r.1),
        each(reads),
        each(commits),
        each(commands),
    );
}
