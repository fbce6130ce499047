//! The corpus of every stored version of every event type: each fixture in `tests/corpus/` holds a
//! payload exactly as some build of tally stored it, and the current form it must read as. Decoding
//! (and upcasting) each one must give that form; the current version must also encode back to its
//! stored bytes. The completeness check fails when a type or version exists in the code without a
//! fixture, so no schema change can skip this.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tally_domain::Event;
use tally_domain::event::VERSIONS;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    /// Which build wrote it, and how it was taken.
    note: String,
    event_type: String,
    schema_version: u32,
    /// The payload's text as stored (the `data` column).
    stored: String,
    /// The current version's form, as `Event::encode` writes it (compared as JSON values).
    current: serde_json::Value,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn fixtures() -> Vec<(String, Fixture)> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(corpus_dir()).expect("the corpus directory exists");
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a file name")
            .to_owned();
        let text = std::fs::read_to_string(&path).expect("a readable fixture");
        let fixture: Fixture =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: not a fixture: {e}"));
        assert_eq!(
            name,
            format!("{}.v{}.json", fixture.event_type, fixture.schema_version),
            "a fixture's file is named after its type and version"
        );
        assert!(
            !fixture.note.trim().is_empty(),
            "{name}: say which build wrote it"
        );
        out.push((name, fixture));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_type_and_version_in_the_code_has_a_fixture_and_no_fixture_is_stray() {
    let wanted: BTreeSet<String> = VERSIONS
        .iter()
        .flat_map(|(t, current)| (1..=*current).map(move |v| format!("{t}.v{v}.json")))
        .collect();
    let present: BTreeSet<String> = fixtures().into_iter().map(|(name, _)| name).collect();
    let missing: Vec<_> = wanted.difference(&present).collect();
    let stray: Vec<_> = present.difference(&wanted).collect();
    assert!(
        missing.is_empty(),
        "event versions without a fixture in tests/corpus: {missing:?}"
    );
    assert!(
        stray.is_empty(),
        "fixtures of no type or version the code knows: {stray:?}"
    );
}

#[test]
fn every_fixture_reads_as_its_current_form() {
    for (name, f) in fixtures() {
        let event = Event::decode(&f.event_type, f.schema_version, &f.stored)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(event.event_type(), f.event_type, "{name}");
        let current = Event::current_version(&f.event_type).expect("a known type");
        assert_eq!(
            event.schema_version(),
            current,
            "{name}: written in the current version"
        );
        let encoded: serde_json::Value =
            serde_json::from_str(&event.encode()).expect("encodes to JSON");
        assert_eq!(encoded, f.current, "{name}: upcast form");
        // The current form is itself a current-version payload that reads back the same.
        let again = Event::decode(&f.event_type, current, &f.current.to_string())
            .unwrap_or_else(|e| panic!("{name}: the current form does not decode: {e}"));
        assert_eq!(again, event, "{name}");
    }
}

#[test]
fn the_current_versions_encode_back_to_their_stored_bytes() {
    let mut round_tripped = 0;
    for (name, f) in fixtures() {
        if Event::current_version(&f.event_type) != Some(f.schema_version) {
            continue;
        }
        let event = Event::decode(&f.event_type, f.schema_version, &f.stored)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(event.encode(), f.stored, "{name}: byte for byte");
        round_tripped += 1;
    }
    assert_eq!(
        round_tripped,
        VERSIONS.len(),
        "one current fixture per type"
    );
}

#[test]
fn an_old_fixture_changed_by_a_single_field_no_longer_matches() {
    // The comparison is strict: the corpus would notice an upcaster that drops or invents a field.
    let (name, f) = fixtures()
        .into_iter()
        .find(|(_, f)| f.event_type == "SaleRecorded" && f.schema_version == 1)
        .expect("the corpus has SaleRecorded v1");
    let event = Event::decode(&f.event_type, 1, &f.stored).expect("decodes");
    let mut encoded: serde_json::Value = serde_json::from_str(&event.encode()).expect("JSON");
    encoded["lines"][0]["discount_cents"] = 1.into();
    assert_ne!(encoded, f.current, "{name}");
}
