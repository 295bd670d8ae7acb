//! Property tests of the manifest parser: any text parses or errors, never
//! panics; any well-formed manifest parses to what it says, and checking it
//! gathers rows of its width.

use std::path::Path;

use proptest::prelude::*;
use verdict_core::{Catalogue, Record, Schema, ValueType};
use verdict_models::Manifest;

fn catalogue() -> Catalogue {
    let schema = Schema::parse("[fields]\namount = \"number\"\n", Path::new("s.toml")).unwrap();
    let mut c = Catalogue::from_schema(&schema);
    for i in 0..8 {
        c.add_feature("user", &format!("f{i}"), ValueType::Number);
    }
    c
}

proptest! {
    #[test]
    fn any_text_parses_or_errors(text in ".{0,400}") {
        let _ = Manifest::parse(&text, Path::new("m.toml"));
    }

    #[test]
    fn mangled_manifests_never_panic(cut in 0usize..300, junk in "[\\[\\]=\"a-z0-9_., \\n]{0,30}") {
        let good = "name = \"m\"\nversion = \"v\"\nfile = \"m.onnx\"\ninputs = [\"event.amount\", \"feature.user.f1\"]\nmissing = -1.5\n[[outputs]]\nname = \"s\"\nfrom = \"probabilities\"\nindex = 1\n";
        let cut = cut.min(good.len());
        let text = format!("{}{junk}{}", &good[..cut], &good[cut..]);
        if let Ok(m) = Manifest::parse(&text, Path::new("m.toml")) {
            let _ = m.check(&catalogue());
        }
    }

    #[test]
    fn well_formed_manifests_round_trip(
        picks in proptest::sample::subsequence((0..8).collect::<Vec<usize>>(), 1..8),
        missing in proptest::option::of(-1e6f64..1e6),
        index in 0usize..4,
    ) {
        let inputs: Vec<String> = picks.iter().map(|i| format!("feature.user.f{i}")).collect();
        let quoted: Vec<String> = inputs.iter().map(|p| format!("\"{p}\"")).collect();
        let missing_line = missing.map(|m| format!("missing = {m:?}\n")).unwrap_or_default();
        let text = format!(
            "name = \"m\"\nversion = \"v1\"\nfile = \"m.onnx\"\ninputs = [{}]\n{missing_line}[[outputs]]\nname = \"score\"\nfrom = \"probabilities\"\nindex = {index}\n",
            quoted.join(", ")
        );
        let m = Manifest::parse(&text, Path::new("/x/m.toml")).unwrap();
        prop_assert_eq!(&m.inputs, &inputs);
        prop_assert_eq!(m.outputs[0].index, Some(index));
        match missing {
            Some(v) => prop_assert_eq!(m.missing, v as f32),
            None => prop_assert!(m.missing.is_nan()),
        }
        let resolved = m.check(&catalogue()).unwrap();
        let row = resolved.gather_vec(&Record { event: &[], features: &[], model: &[] });
        prop_assert_eq!(row.len(), inputs.len());
    }
}
