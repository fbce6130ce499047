//! Poison events' faults ([`tally_core::projector::poison`]): one row per projection and position in
//! `projection_faults` (a cleared fault's update in the same transaction).

use tally_core::ports::Result;
use tally_core::projector::poison::{Fault, FaultState};
use tally_core::readmodel::ProjectionUpdate;

use crate::{Postgres, Ts, pg_error, to_i64, to_u64};

impl Postgres {
    pub(crate) async fn read_faults(&self) -> Result<Vec<Fault>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT projection, position, state, reason, at FROM projection_faults \
                 ORDER BY projection, position",
                &[],
            )
            .await
            .map_err(|e| pg_error("reading faults", e))?;
        rows.iter()
            .map(|r| {
                Ok(Fault {
                    projection: r.get(0),
                    position: to_u64(r.get(1), "fault position")?,
                    state: FaultState::parse(r.get(2))?,
                    reason: r.get(3),
                    at: r
                        .try_get::<_, Ts>(4)
                        .map_err(|e| pg_error("reading a fault's time", e))?
                        .0,
                })
            })
            .collect()
    }

    pub(crate) async fn write_fault(&self, f: &Fault) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO projection_faults (projection, position, state, reason, at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (projection, position) DO UPDATE SET \
                 state = excluded.state, reason = excluded.reason, at = excluded.at",
                &[
                    &f.projection,
                    &to_i64(f.position, "fault position")?,
                    &f.state.as_str(),
                    &f.reason,
                    &Ts(f.at),
                ],
            )
            .await
            .map_err(|e| pg_error("recording a fault", e))?;
        Ok(())
    }

    pub(crate) async fn remove_fault(
        &self,
        projection: &str,
        position: u64,
        update: Option<ProjectionUpdate>,
    ) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_error("starting to clear a fault", e))?;
        let n = tx
            .execute(
                "DELETE FROM projection_faults WHERE projection = $1 AND position = $2",
                &[&projection, &to_i64(position, "fault position")?],
            )
            .await
            .map_err(|e| pg_error("clearing a fault", e))?;
        if n == 0 {
            return Ok(false);
        }
        if let Some(u) = &update {
            crate::sink::apply_update(&tx, u).await?;
        }
        tx.commit()
            .await
            .map_err(|e| pg_error("committing a cleared fault", e))?;
        Ok(true)
    }
}
