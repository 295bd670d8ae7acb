//! Golden files of the checker's error messages: every `golden/*.rules`
//! is checked and its errors compared with `golden/*.stderr`. Run with
//! `VERDICT_BLESS=1` to rewrite the expected files after a deliberate
//! change.

mod common;

use std::path::{Path, PathBuf};

use verdict_rules::{RuleSet, Source};

#[test]
fn error_messages_match_the_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rules"))
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 8, "golden inputs missing");
    let catalogue = common::catalogue();
    let bless = std::env::var_os("VERDICT_BLESS").is_some();
    let mut mismatches = Vec::new();
    for input in inputs {
        let text = std::fs::read_to_string(&input).unwrap();
        let name = PathBuf::from(input.file_name().unwrap());
        let source = Source {
            path: name,
            text: text.into(),
        };
        let got = match RuleSet::compile(&[source], Some(&dir), &catalogue) {
            Ok(set) => format!("ok: {} rules\n", set.rules().count()),
            Err(errors) => format!("{errors}\n"),
        };
        let expected_path = input.with_extension("stderr");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            mismatches.push(format!(
                "{}:\n--- expected\n{expected}\n--- got\n{got}",
                input.display()
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}\n(run with VERDICT_BLESS=1 to accept)",
        mismatches.join("\n")
    );
}
