//! Real Redis servers for the shared store's tests: Debian's
//! `redis-server` (installed by `scripts/ensure-redis.sh`), started on a
//! free loopback port with a data directory of its own and no persistence,
//! stopped when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server binary: `VERDICT_REDIS_SERVER`, or `redis-server` on the path.
fn server_binary() -> PathBuf {
    std::env::var_os("VERDICT_REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

/// A loopback port that is free now, with `port + 10000` (a cluster
/// node's bus port) free too.
fn free_port() -> u16 {
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").expect("a loopback port binds");
        let port = l.local_addr().unwrap().port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port pair found");
}

/// Sends one inline command and returns the first line of the reply.
pub fn command(port: u16, line: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("{line}\r\n").as_bytes()).ok()?;
    let mut buf = vec![0; 4096];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// One `redis-server` process.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    cluster: bool,
}

impl RedisServer {
    /// A standalone server on a free port, answering PING.
    pub fn start() -> RedisServer {
        RedisServer::start_node(false)
    }

    fn start_node(cluster: bool) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("a temporary directory"),
            cluster,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, on the same port), and waits until it
    /// answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let mut cmd = Command::new(server_binary());
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}): run scripts/ensure-redis.sh, or set VERDICT_REDIS_SERVER",
                server_binary().display()
            )
        });
        self.child = Some(child);
        let started = Instant::now();
        while command(self.port, "PING").is_none_or(|r| !r.starts_with("+PONG")) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "redis-server on port {} did not answer PING",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (as a crash would: nothing is saved).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A three-primary Redis Cluster on loopback.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_node(true)).collect();
        // Slots split in three, the way `redis-cli --cluster create` does.
        let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
        for (node, (lo, hi)) in nodes.iter().zip(ranges) {
            let r = command(node.port, &format!("CLUSTER ADDSLOTSRANGE {lo} {hi}"));
            assert!(r.as_deref().is_some_and(|r| r.starts_with("+OK")), "{r:?}");
        }
        for node in &nodes[1..] {
            let r = command(
                node.port,
                &format!("CLUSTER MEET 127.0.0.1 {}", nodes[0].port),
            );
            assert!(r.as_deref().is_some_and(|r| r.starts_with("+OK")), "{r:?}");
        }
        let started = Instant::now();
        while !nodes.iter().all(|n| {
            command(n.port, "CLUSTER INFO").is_some_and(|i| i.contains("cluster_state:ok"))
        }) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the cluster did not reach state ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        RedisCluster { nodes }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}
