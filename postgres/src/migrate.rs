//! Schema migrations: SQL files applied once each, in order, and recorded.
//!
//! `eddy_migrations` records every applied migration with a checksum of its text. Each new
//! migration runs in its own transaction together with its record, so a failure leaves the
//! database as it was before that migration. A migration whose text changed after it was applied
//! is refused: the fix is a new migration, not an edit of an old one.

use crate::{connect, redact, PgError};

/// One migration: a name that orders it (`001_star_schema`) and its SQL.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    /// Unique; migrations apply in byte order of their names, so zero-pad the number.
    pub name: &'static str,
    /// One or more statements, run in one transaction; never edit it once applied.
    pub sql: &'static str,
}

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Connecting failed.
    #[error(transparent)]
    Postgres(#[from] PgError),
    /// A statement failed; that migration was rolled back, the earlier ones stay applied.
    #[error("migration `{name}` failed at `{url}`: {source}")]
    Failed {
        /// The migration, or `(setup)` for the lock and the `eddy_migrations` table.
        name: String,
        /// The database, password hidden.
        url: String,
        /// The server's error.
        source: postgres::Error,
    },
    /// An applied migration's text no longer matches its recorded checksum; nothing after it
    /// was applied.
    #[error("migration `{name}` was changed after it was applied at `{url}`; leave applied migrations as they are and add a new one")]
    Changed {
        /// The edited migration.
        name: String,
        /// The database, password hidden.
        url: String,
    },
}

/// FNV-1a of the text, as hex: enough to notice an edited migration.
fn checksum(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Applies the migrations not applied yet, in order; returns the names it applied.
pub fn migrate(url: &str, migrations: &[Migration]) -> Result<Vec<String>, MigrateError> {
    let mut client = connect(url)?;
    let failed = |name: &str, source| MigrateError::Failed {
        name: name.to_string(),
        url: redact(url),
        source,
    };
    client
        .batch_execute(
            "SELECT pg_advisory_lock(7231837466);
             CREATE TABLE IF NOT EXISTS eddy_migrations (
                 name text PRIMARY KEY,
                 checksum text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .map_err(|e| failed("(setup)", e))?;
    let mut applied = Vec::new();
    let result = (|| {
        let mut sorted = migrations.to_vec();
        sorted.sort_by_key(|m| m.name);
        for m in sorted {
            let sum = checksum(m.sql);
            let done = client
                .query_opt(
                    "SELECT checksum FROM eddy_migrations WHERE name = $1",
                    &[&m.name],
                )
                .map_err(|e| failed(m.name, e))?;
            match done {
                Some(row) if row.get::<_, String>(0) == sum => continue,
                Some(_) => {
                    return Err(MigrateError::Changed {
                        name: m.name.into(),
                        url: redact(url),
                    })
                }
                None => {}
            }
            let mut tx = client.transaction().map_err(|e| failed(m.name, e))?;
            tx.batch_execute(m.sql).map_err(|e| failed(m.name, e))?;
            tx.execute(
                "INSERT INTO eddy_migrations (name, checksum) VALUES ($1, $2)",
                &[&m.name, &sum],
            )
            .map_err(|e| failed(m.name, e))?;
            tx.commit().map_err(|e| failed(m.name, e))?;
            tracing::info!(migration = m.name, "applied");
            applied.push(m.name.to_string());
        }
        Ok(())
    })();
    let _ = client.batch_execute("SELECT pg_advisory_unlock(7231837466)");
    result.map(|()| applied)
}

#[cfg(test)]
mod tests {
    #[test]
    fn checksums_differ_for_different_text() {
        assert_ne!(super::checksum("a"), super::checksum("b"));
        assert_eq!(super::checksum("a").len(), 16);
    }
}
