//! Shadow versions of the read models, for rebuilds that never take a model away
//! ([`crate::projector::rebuild`]). A projection being rebuilt has a second set of tables, its own
//! tables' names with [`SHADOW_SUFFIX`], and a second checkpoint, its name after [`SHADOW_PREFIX`]: the
//! position its shadow tables reflect. Both live beside the serving version in the same database, so
//! a rebuild survives a crash or a fail-over and resumes from the shadow checkpoint. The swap copies
//! the shadow rows over the serving ones and moves the serving checkpoint in one transaction.

use std::collections::HashMap;

use crate::ports::Error;
use crate::readmodel::PROJECTIONS;
use crate::verify::TABLES;

/// The checkpoint of a projection's shadow version is its name after this prefix.
pub const SHADOW_PREFIX: &str = "rebuild:";
/// A shadow table is its serving table's name with this suffix.
pub const SHADOW_SUFFIX: &str = "_rebuild";

/// The name of `projection`'s shadow checkpoint.
pub fn checkpoint_of(projection: &str) -> String {
    format!("{SHADOW_PREFIX}{projection}")
}

/// The projection a checkpoint name is the shadow of (`None`: a serving checkpoint).
pub fn shadowed(checkpoint: &str) -> Option<&'static str> {
    let name = checkpoint.strip_prefix(SHADOW_PREFIX)?;
    PROJECTIONS.into_iter().find(|p| *p == name)
}

/// The name of a serving table's shadow.
pub fn table_of(table: &str) -> String {
    format!("{table}{SHADOW_SUFFIX}")
}

/// A statement over serving tables, rewritten over their shadows: each read-model table named in it
/// gets [`SHADOW_SUFFIX`] (no table's name is the start of another's, which a test checks).
pub fn rewrite(sql: &str) -> String {
    TABLES.iter().fold(sql.to_owned(), |sql, t| {
        sql.replace(t.name, &table_of(t.name))
    })
}

/// The tables a projection writes, by name (empty for a name that is no rebuildable projection).
pub fn tables(projection: &str) -> Vec<&'static str> {
    TABLES
        .iter()
        .filter(|t| t.projection == projection)
        .map(|t| t.name)
        .collect()
}

/// [`tables`] of a projection that can be rebuilt; [`Error::Corrupt`] for any other name.
pub fn known_tables(projection: &str) -> Result<Vec<&'static str>, Error> {
    let tables = tables(projection);
    if tables.is_empty() {
        return Err(Error::Corrupt(format!("no projection {projection:?}")));
    }
    Ok(tables)
}

/// The statements that swap a table's shadow in (in the swap's transaction): the serving rows
/// replaced by the shadow's, the shadow dropped. Plain SQL both backends run as it is.
pub fn swap_sql(table: &str) -> String {
    let shadow = table_of(table);
    format!("DELETE FROM {table}; INSERT INTO {table} SELECT * FROM {shadow}; DROP TABLE {shadow}")
}

/// The statement that drops a table's shadow, if there is one.
pub fn drop_sql(table: &str) -> String {
    format!("DROP TABLE IF EXISTS {}", table_of(table))
}

/// The projections whose shadow version is being built, each with its shadow checkpoint, in the
/// order of [`PROJECTIONS`].
pub fn rebuilding(checkpoints: &HashMap<String, u64>) -> Vec<(&'static str, u64)> {
    PROJECTIONS
        .into_iter()
        .filter_map(|p| checkpoints.get(&checkpoint_of(p)).map(|at| (p, *at)))
        .collect()
}

/// Whether `projection` is being back-filled: built for the first time while the others serve (it
/// has a shadow version and no serving one yet). Its queries have nothing right to answer from.
pub fn back_filling(checkpoints: &HashMap<String, u64>, projection: &str) -> bool {
    !checkpoints.contains_key(projection) && checkpoints.contains_key(&checkpoint_of(projection))
}

/// Whether `projection` has no version to serve yet: being back-filled, or about to be (new to a
/// store in use, before its back-fill starts).
pub fn unbuilt(checkpoints: &HashMap<String, u64>, projection: &str) -> bool {
    back_filling(checkpoints, projection) || to_back_fill(checkpoints).contains(&projection)
}

/// The projections a new build added since this store's read models were built: those with neither
/// a serving nor a shadow checkpoint while another projection has applied events. Empty on a new
/// store, where every projection starts from the beginning together.
pub fn to_back_fill(checkpoints: &HashMap<String, u64>) -> Vec<&'static str> {
    let serving = PROJECTIONS
        .iter()
        .any(|p| checkpoints.get(*p).is_some_and(|at| *at > 0));
    if !serving {
        return Vec::new();
    }
    PROJECTIONS
        .into_iter()
        .filter(|p| !checkpoints.contains_key(*p) && !checkpoints.contains_key(&checkpoint_of(p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readmodel::{INVENTORY, ITEM_DAILY, REFERENCE, TILL_DAILY};

    #[test]
    fn every_projection_has_tables_and_names_round_trip() {
        for p in PROJECTIONS {
            assert!(!tables(p).is_empty(), "{p} has no tables");
            assert_eq!(shadowed(&checkpoint_of(p)), Some(p));
        }
        assert_eq!(tables(REFERENCE).len(), 3);
        assert_eq!(shadowed(INVENTORY), None);
        assert_eq!(shadowed("rebuild:nothing"), None);
        assert_eq!(table_of("rm_inventory"), "rm_inventory_rebuild");
    }

    #[test]
    fn statements_are_rewritten_over_the_shadow_tables_only() {
        for a in TABLES {
            for b in TABLES {
                assert!(
                    a.name == b.name || !b.name.starts_with(a.name),
                    "{} {}",
                    a.name,
                    b.name
                );
            }
        }
        assert_eq!(
            rewrite("INSERT INTO rm_items (x) SELECT 1 FROM rm_item_daily, checkpoints"),
            "INSERT INTO rm_items_rebuild (x) SELECT 1 FROM rm_item_daily_rebuild, checkpoints"
        );
    }

    #[test]
    fn back_fills_only_projections_new_to_a_store_in_use() {
        let mut c: HashMap<String, u64> = HashMap::new();
        assert!(
            to_back_fill(&c).is_empty(),
            "a new store builds everything live"
        );
        c.insert(INVENTORY.into(), 0);
        assert!(to_back_fill(&c).is_empty(), "nothing applied yet");
        c.insert(INVENTORY.into(), 10);
        let new = to_back_fill(&c);
        assert!(new.contains(&ITEM_DAILY) && new.contains(&TILL_DAILY));
        assert!(!new.contains(&INVENTORY));
        c.insert(checkpoint_of(ITEM_DAILY), 3);
        assert!(
            !to_back_fill(&c).contains(&ITEM_DAILY),
            "already being back-filled"
        );
        assert!(back_filling(&c, ITEM_DAILY));
        assert!(!back_filling(&c, INVENTORY));
        assert_eq!(rebuilding(&c), vec![(ITEM_DAILY, 3)]);
    }
}
