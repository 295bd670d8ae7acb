//! Vetting a model file in a child process before the engine opens it.
//!
//! ONNX Runtime parses a model file in C++; some malformed files make it
//! abort the process rather than return an error. A model is untrusted
//! input, so the engine never opens one in its own process first: a child
//! (`verdict model check --in-process`, which runs [`check_here`]) loads
//! it, checks it against its manifest and scores a probe row, and only a
//! model the child survived is loaded by the engine. A crash of the child
//! refuses the model; the serving one keeps serving.
//!
//! Both halves of the protocol live here: the child answers one line on
//! standard output (`ok <version>`, `refused <why>`, `runtime <error>`)
//! and exits 0, 1 or [`RUNTIME_MISSING`].

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use verdict_models::{Backend, Manifest, Model, ModelError, Runtime};

/// Exit code of a check that could not load ONNX Runtime.
pub const RUNTIME_MISSING: i32 = 3;

/// How long a vetting child may take before it is killed and the model
/// refused.
pub const VET_TIMEOUT: Duration = Duration::from_secs(60);

/// Probe rows a model for the native evaluator is scored on by both
/// evaluators before it may serve: every threshold of its trees, each side
/// of it, and missing values.
const PARITY_ROWS: usize = 10_000;
const PARITY_SEED: u64 = 0x5eed;
/// The most the two evaluators may differ on any output.
const PARITY_TOLERANCE: f64 = 1e-6;

/// What vetting a model found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vetting {
    /// The child loaded it and scored the probe row.
    Passed {
        /// The model's version.
        version: String,
        /// For a model the native evaluator scores: how it compared with
        /// ONNX Runtime on the probe rows.
        parity: Option<String>,
    },
    /// The model must not be loaded; why.
    Refused(String),
    /// ONNX Runtime itself could not be loaded; the engine's own load says
    /// so (and decides degraded).
    RuntimeMissing,
}

/// The child's side: load, check, probe; one line on stdout.
pub fn check_here(manifest: &Path, ort: Option<&Path>) -> ExitCode {
    let runtime = match Runtime::discover(ort) {
        Ok(r) => r,
        Err(e) => {
            println!("runtime {e}");
            return ExitCode::from(RUNTIME_MISSING as u8);
        }
    };
    let checked = Manifest::load(manifest)
        .and_then(|m| Model::load(m, &runtime, 1))
        .and_then(|mut model| {
            model.probe()?;
            let parity = match model.backend() {
                Backend::Native => {
                    let rows = model.probe_rows(PARITY_ROWS, PARITY_SEED);
                    Some(Model::compare_evaluators(
                        model.manifest(),
                        &runtime,
                        &rows,
                    )?)
                }
                Backend::OnnxRuntime => None,
            };
            Ok::<_, ModelError>((model.version().to_string(), parity))
        });
    match checked {
        Ok((_, Some(parity)))
            if parity.max_abs_diff.is_nan() || parity.max_abs_diff > PARITY_TOLERANCE =>
        {
            println!(
                "refused the native evaluator and ONNX Runtime disagree by more than \
                 {PARITY_TOLERANCE:e} on the probe rows: {parity}; serve it with \
                 evaluator = \"onnxruntime\" in the manifest, and report the file"
            );
            ExitCode::FAILURE
        }
        Ok((version, parity)) => {
            println!("ok {version}");
            if let Some(parity) = parity {
                println!("parity {parity}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("refused {e}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the model of `manifest` in a child process of `exe` (the `verdict`
/// binary) and reports whether it survived; a crash, or no answer within
/// `timeout`, refuses the model.
pub fn vet(exe: &Path, manifest: &Path, ort: Option<&Path>, timeout: Duration) -> Vetting {
    let mut cmd = Command::new(exe);
    cmd.args(["model", "check", "--in-process"]).arg(manifest);
    if let Some(ort) = ort {
        cmd.arg("--ort-library").arg(ort);
    }
    let mut child = match cmd
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return Vetting::Refused(format!(
                "cannot start {} to vet the model {}: {e}",
                exe.display(),
                manifest.display()
            ));
        }
    };
    // Read both pipes on threads, so a chatty child never blocks on them.
    let out = read_all(child.stdout.take());
    let err = read_all(child.stderr.take());
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(5));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let Some(status) = status else {
        return Vetting::Refused(format!(
            "the model {} did not load within {} s in a vetting process; it is refused",
            manifest.display(),
            timeout.as_secs()
        ));
    };
    let line = stdout.trim();
    match status.code() {
        Some(0) => {
            let mut lines = line.lines();
            let first = lines.next().unwrap_or_default();
            Vetting::Passed {
                version: first.strip_prefix("ok ").unwrap_or(first).to_owned(),
                parity: lines.find_map(|l| l.strip_prefix("parity ").map(str::to_owned)),
            }
        }
        Some(RUNTIME_MISSING) => Vetting::RuntimeMissing,
        Some(_) if line.starts_with("refused ") => Vetting::Refused(format!(
            "the model {} is refused: {}",
            manifest.display(),
            &line["refused ".len()..]
        )),
        Some(code) => Vetting::Refused(format!(
            "the process vetting the model {} exited with code {code} without an answer; \
             the model is refused. Its last words: {}",
            manifest.display(),
            last_lines(&stderr, 3)
        )),
        None => Vetting::Refused(format!(
            "loading the model {} crashed ONNX Runtime in a vetting process ({}); \
             the model is refused. Its last words: {}",
            manifest.display(),
            crash_signal(&status),
            last_lines(&stderr, 3)
        )),
    }
}

/// Reads `pipe` to its end on a thread of its own.
fn read_all<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut text);
        }
        text
    })
}

#[cfg(unix)]
fn crash_signal(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(6) => "signal 6, SIGABRT".into(),
        Some(11) => "signal 11, SIGSEGV".into(),
        Some(s) => format!("signal {s}"),
        None => "no exit code".into(),
    }
}

#[cfg(not(unix))]
fn crash_signal(_: &std::process::ExitStatus) -> String {
    "no exit code".into()
}

/// The last `n` non-empty lines of `text`, without terminal colour codes,
/// joined by " | ".
fn last_lines(text: &str, n: usize) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... letter
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let lines: Vec<&str> = plain
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = &lines[lines.len().saturating_sub(n)..];
    if tail.is_empty() {
        "(nothing)".into()
    } else {
        tail.join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_drop_colour_codes_and_blank_lines() {
        let text = "\u{1b}[1;31mfirst\u{1b}[m\n\n second \nthird\n";
        assert_eq!(last_lines(text, 2), "second | third");
        assert_eq!(last_lines(text, 5), "first | second | third");
        assert_eq!(last_lines("", 3), "(nothing)");
    }
}
