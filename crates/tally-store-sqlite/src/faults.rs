//! Poison events' faults ([`tally_core::projector::poison`]): one row per projection and position in
//! `projection_faults`, written on the writer (a cleared fault's update in the same transaction).

use rusqlite::{Connection, params};
use tally_core::ports::Result;
use tally_core::projector::poison::{Fault, FaultState};
use tally_core::readmodel::ProjectionUpdate;

use crate::writer::sql_error;
use crate::{ts_from_sql, ts_to_sql};

pub(crate) fn faults(conn: &Connection) -> Result<Vec<Fault>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT projection, position, state, reason, at FROM projection_faults \
             ORDER BY projection, position",
        )
        .map_err(sql_error)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .map_err(sql_error)?;
    rows.map(|r| {
        let (projection, position, state, reason, at) = r.map_err(sql_error)?;
        Ok(Fault {
            projection,
            position: position as u64,
            state: FaultState::parse(&state)?,
            reason,
            at: ts_from_sql(at)?,
        })
    })
    .collect()
}

pub(crate) fn record(conn: &Connection, f: &Fault) -> Result<()> {
    conn.execute(
        "INSERT INTO projection_faults (projection, position, state, reason, at) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (projection, position) DO UPDATE SET \
         state = excluded.state, reason = excluded.reason, at = excluded.at",
        params![
            f.projection,
            f.position as i64,
            f.state.as_str(),
            f.reason,
            ts_to_sql(f.at)
        ],
    )
    .map_err(sql_error)?;
    Ok(())
}

/// Removes the fault; with `update`, applies it in the same transaction (the writer's).
pub(crate) fn clear(
    conn: &Connection,
    projection: &str,
    position: u64,
    update: Option<&ProjectionUpdate>,
) -> Result<bool> {
    let n = conn
        .execute(
            "DELETE FROM projection_faults WHERE projection = ?1 AND position = ?2",
            params![projection, position as i64],
        )
        .map_err(sql_error)?;
    if n == 0 {
        return Ok(false);
    }
    if let Some(u) = update {
        crate::sink::apply_update(conn, u)?;
    }
    Ok(true)
}
