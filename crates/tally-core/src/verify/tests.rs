#![allow(clippy::unwrap_used)]

use super::*;

fn row(key: &[&str], figures: &[i64]) -> Row {
    Row::new(
        key.iter().copied(),
        std::iter::empty::<&str>(),
        figures.to_vec(),
    )
}

fn rows(items: &[Row]) -> Rows {
    items.to_vec()
}

#[test]
fn equal_tables_agree_and_zero_rows_count_as_absent() {
    let t = TABLES[1];
    let stored = rows(&[
        row(&["s1", "2026-03-01"], &[1, 2, 3, 0, 0, 0]),
        row(&["s1", "2026-03-02"], &[0; 6]),
    ]);
    let expected = rows(&[row(&["s1", "2026-03-01"], &[1, 2, 3, 0, 0, 0])]);
    let r = compare(&t, t.name.to_owned(), 9, stored, expected);
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.stored_hash, r.expected_hash);
    assert_eq!((r.stored_rows, r.expected_rows), (1, 1));
}

#[test]
fn a_changed_missing_or_extra_row_is_named() {
    let t = TABLES[0];
    let stored = rows(&[row(&["s1", "a"], &[5]), row(&["s1", "c"], &[1])]);
    let expected = rows(&[row(&["s1", "a"], &[4]), row(&["s1", "b"], &[2])]);
    let r = compare(&t, t.name.to_owned(), 3, stored, expected);
    assert!(!r.ok());
    assert_ne!(r.stored_hash, r.expected_hash);
    assert_eq!(r.differing, 3);
    let keys: Vec<&str> = r.differences.iter().map(|d| d.key[1].as_str()).collect();
    assert_eq!(keys, ["a", "b", "c"]);
    assert_eq!(*r.differences[0].stored.as_ref().unwrap().figures, [5]);
    assert_eq!(*r.differences[0].expected.as_ref().unwrap().figures, [4]);
    assert!(r.differences[1].stored.is_none(), "b is missing");
    assert!(r.differences[2].expected.is_none(), "c is extra");
}

#[test]
fn registrations_keep_rows_without_figures() {
    let t = TABLES.iter().find(|t| t.name == "rm_suppliers").unwrap();
    let acme = Row::new(["acme"], ["Acme"], Vec::new());
    assert_eq!((acme.key(), acme.texts()), (vec!["acme"], vec!["Acme"]));
    let none = Row::new(["acme"], std::iter::empty::<&str>(), vec![1]);
    let empty = Row::new(["acme"], [""], vec![1]);
    assert_ne!(none, empty, "no text and one empty text differ");
    assert_eq!((none.texts(), empty.texts()), (vec![], vec![""]));
    let r = compare(t, t.name.to_owned(), 1, Vec::new(), rows(&[acme]));
    assert_eq!(
        r.differing, 1,
        "a supplier missing from the table is a difference"
    );
}

#[test]
fn every_projection_but_the_journal_has_its_tables() {
    for p in crate::readmodel::PROJECTIONS {
        assert!(TABLES.iter().any(|t| t.projection == p), "{p}");
    }
    for t in TABLES {
        let delta = Accumulator::for_projection(t.projection).unwrap().finish();
        assert!(
            expected(delta).iter().any(|(name, _)| *name == t.name),
            "{} has no expected rows",
            t.name
        );
    }
}
