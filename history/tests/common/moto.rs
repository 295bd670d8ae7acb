//! A local S3-compatible server for the object-store tests: `moto` in
//! server mode, from the project's Python environment (`VERDICT_PYTHON`,
//! or `scripts/ensure-python.sh --python`), on a free loopback port.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub endpoint: String,
    python: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> String {
    if let Some(p) = std::env::var_os("VERDICT_PYTHON") {
        return p.to_string_lossy().into_owned();
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("scripts/ensure-python.sh"))
        .arg("--python")
        .output()
        .expect("scripts/ensure-python.sh runs");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

impl Moto {
    /// Starts the server and creates `bucket` in it.
    pub fn start(bucket: &str) -> Moto {
        let python = python();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start moto with {python}: {e}; run scripts/ensure-python.sh")
            });
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            python,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not listen on port {port}; is moto[server] installed (scripts/ensure-python.sh)?"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto.boto(&format!("s3.create_bucket(Bucket={bucket:?})"));
        moto
    }

    /// Runs one boto3 statement against the server (`s3` is the client)
    /// and returns what it printed.
    pub fn boto(&self, statement: &str) -> String {
        let script = format!(
            "import boto3\ns3 = boto3.client('s3', endpoint_url={:?}, region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test')\n{statement}\n",
            self.endpoint
        );
        let out = Command::new(&self.python)
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "boto3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The object-store options that point the S3 builder at this server.
    pub fn options(&self) -> BTreeMap<String, String> {
        [
            ("aws_endpoint", self.endpoint.as_str()),
            ("aws_allow_http", "true"),
            ("aws_region", "us-east-1"),
            ("aws_access_key_id", "test"),
            ("aws_secret_access_key", "test"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}
