//! The integer horizon on PostgreSQL (the rule is in the parent module).
//!
//! An integer cursor's horizon (see `ids`) waits for the transactions that may hold an id:
//! those holding a write lock on the table or on the sequence its ids come from. An `INSERT`
//! takes `RowExclusiveLock` on its table when the statement is parsed, before any default is
//! evaluated, and `nextval` takes `RowExclusiveLock` on the sequence before it draws a value;
//! both are held until the transaction ends, and are released only after its commit is
//! visible to new snapshots. So a transaction that drew an id is in `pg_locks` from before the
//! id existed until its row can be read, whether or not it has a transaction id yet (it gets
//! one only at its first write, which is why `pg_current_snapshot()` alone would miss it).
//! `pg_locks` needs no privilege, and the sighting reads the largest id and the lock table in
//! one statement: the lock table after the statement's snapshot.

use std::time::{Duration, Instant};

use sqlx::postgres::PgPool;
use sqlx::Row;

use crate::model::error::{Error, Result};
use crate::source::horizon::{IdHorizon, SightsIds, Writer};
use crate::source::keyset::Keyset;
use crate::source::plan::{CursorType, Plan};

/// How an integer cursor's sightings are taken.
enum IdSighting {
    /// The largest id and the transactions holding write locks on these relations (the
    /// table and its sequences), in one statement.
    Locks(String),
    /// The largest id alone: sightings become final after `--settle` (a standby, or a role
    /// that may not read `pg_locks`).
    Blind(String),
}

/// The integer horizon of one PostgreSQL table, and how its sightings are taken.
pub(crate) struct PgIds {
    pool: PgPool,
    horizon: IdHorizon,
    sighting: IdSighting,
    max_id_sql: String,
}

impl PgIds {
    /// Finds the relations to watch (for an integer cursor; a time cursor never sights ids).
    pub async fn prepare(
        pool: &PgPool,
        keyset: &Keyset,
        quoted_table: &str,
        cursor: &str,
        plan: &Plan,
    ) -> Result<Self> {
        let max_id_sql = max_id_sql(keyset);
        let sighting = match plan.cursor_type {
            CursorType::Integer => {
                id_sighting(pool, keyset, quoted_table, cursor, &plan.table).await?
            }
            _ => IdSighting::Blind(max_id_sql.clone()),
        };
        Ok(PgIds {
            pool: pool.clone(),
            horizon: IdHorizon::new(&plan.table, i64::MIN.into(), i64::MAX.into()),
            sighting,
            max_id_sql,
        })
    }
}

impl SightsIds for PgIds {
    fn ids(&mut self) -> &mut IdHorizon {
        &mut self.horizon
    }

    fn blind(&self, settle: Duration) -> Option<Duration> {
        matches!(self.sighting, IdSighting::Blind(_)).then_some(settle)
    }

    /// One sighting of the integer horizon (see `ids`).
    async fn sight_ids(&mut self, settle: Duration) -> Result<()> {
        let at = Instant::now();
        let sql = match &self.sighting {
            IdSighting::Locks(sql) | IdSighting::Blind(sql) => sql,
        };
        let rows = match sqlx::query(sql).fetch_all(&self.pool).await {
            Ok(rows) => rows,
            Err(sqlx::Error::Database(err))
                if matches!(self.sighting, IdSighting::Locks(_))
                    && err.code().as_deref() == Some("42501") =>
            {
                tracing::warn!(
                    "role may not read pg_locks: ids of {} are final only once --settle old, \
                     and a transaction that commits a lower id later than that is passed over",
                    self.horizon.table()
                );
                self.sighting = IdSighting::Blind(self.max_id_sql.clone());
                return Ok(());
            }
            Err(err) => return Err(Error::database("cannot read the largest id", err)),
        };
        let max: Option<String> = rows.first().and_then(|row| row.get(0));
        self.horizon.sight(max.and_then(|max| max.parse().ok()), at);
        if let IdSighting::Blind(_) = self.sighting {
            self.horizon.settled(settle);
            return Ok(());
        }
        let writers: Vec<Writer> = rows
            .iter()
            .filter_map(|row| {
                let vxid: String = row.get::<Option<String>, _>(1)?;
                let pid: Option<i32> = row.get(2);
                let open_for: Option<f64> = row.get(3);
                let user: Option<String> = row.get(4);
                let label = match (pid, user) {
                    (Some(pid), Some(user)) => format!("pid {pid} (user {user}, vxid {vxid})"),
                    (Some(pid), None) => format!("pid {pid} (vxid {vxid})"),
                    (None, _) => format!("prepared {vxid}"),
                };
                Some(Writer {
                    id: vxid,
                    label,
                    open_for: open_for.map(|secs| Duration::from_secs_f64(secs.max(0.0))),
                })
            })
            .collect();
        // The lock table was read after the statement's snapshot: the list is complete for
        // this sighting.
        self.horizon.listed(&writers, Some(at));
        Ok(())
    }
}

/// The largest id visible, as text (ids may be past `i64` on no server, but the text keeps
/// the driver out of the column's exact type).
fn max_id_sql(keyset: &Keyset) -> String {
    format!("SELECT max({})::text FROM {}", keyset.cursor, keyset.table)
}

/// How the integer horizon of `table` is sighted: the relations whose write locks show that a
/// transaction may hold an id (the table, and the sequences its cursor column draws from, by
/// ownership or by its default), or blind on a standby, whose lock table does not show the
/// primary's transactions. Warns about sequences that hand out ids in blocks.
async fn id_sighting(
    pool: &PgPool,
    keyset: &Keyset,
    quoted_table: &str,
    cursor: &str,
    table: &str,
) -> Result<IdSighting> {
    let failed = |err| Error::database("cannot find the sequence of the cursor column", err);
    let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(pool)
        .await
        .map_err(failed)?;
    if standby {
        tracing::warn!(
            "the source is a standby, whose lock table does not show the primary's \
             transactions: ids of {table} are final only once --settle old, and a transaction \
             that commits a lower id later than that is passed over; read the primary instead"
        );
        return Ok(IdSighting::Blind(max_id_sql(keyset)));
    }
    let relations: Vec<(i64, String, Option<i64>)> = sqlx::query_as(
        "WITH col AS (SELECT attrelid, attnum FROM pg_attribute \
                      WHERE attrelid = to_regclass($1) AND attname = $2) \
         SELECT c.oid::int8, c.oid::regclass::text, s.seqcache FROM pg_class c \
           LEFT JOIN pg_sequence s ON s.seqrelid = c.oid \
         WHERE c.oid = to_regclass($1) \
            OR (c.relkind = 'S' AND c.oid IN ( \
                 SELECT d.objid FROM pg_depend d, col \
                 WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass \
                   AND d.refobjid = col.attrelid AND d.refobjsubid = col.attnum \
                 UNION \
                 SELECT d.refobjid FROM pg_attrdef ad \
                   JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid \
                   JOIN col ON ad.adrelid = col.attrelid AND ad.adnum = col.attnum \
                 WHERE d.refclassid = 'pg_class'::regclass))",
    )
    .bind(quoted_table)
    .bind(cursor)
    .fetch_all(pool)
    .await
    .map_err(failed)?;
    for (_, sequence, cache) in &relations {
        if let Some(cache) = cache.filter(|cache| *cache > 1) {
            tracing::warn!(
                "sequence {sequence} hands ids out in blocks of {cache} per session (CACHE \
                 {cache}): a session can commit an id below ones already delivered, which is \
                 then passed over; run `ALTER SEQUENCE {sequence} CACHE 1`"
            );
        }
    }
    let oids: Vec<String> = relations.iter().map(|(oid, ..)| oid.to_string()).collect();
    Ok(IdSighting::Locks(format!(
        "SELECT m.max_id, w.vxid, w.pid, \
                EXTRACT(EPOCH FROM clock_timestamp() - a.xact_start)::float8, a.usename::text \
         FROM ({max_id}) AS m(max_id) \
         LEFT JOIN (SELECT DISTINCT l.virtualtransaction, l.pid FROM pg_locks l \
                    WHERE l.locktype = 'relation' AND l.relation IN ({oids}) \
                      AND l.database = (SELECT oid FROM pg_database \
                                        WHERE datname = current_database()) \
                      AND l.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', \
                                     'ExclusiveLock', 'AccessExclusiveLock') \
                      AND l.pid IS DISTINCT FROM pg_backend_pid()) AS w(vxid, pid) ON true \
         LEFT JOIN pg_stat_activity a ON a.pid = w.pid",
        max_id = max_id_sql(keyset),
        oids = oids.join(", ")
    )))
}
