//! `eddy warehouse migrate`: the e-commerce warehouse's schema, applied to PostgreSQL.

use clap::{Args, Subcommand};
use eddy_postgres::migrate::{migrate, Migration};
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum WarehouseCommand {
    /// Apply the warehouse's migrations (jobs/ecommerce/warehouse/*.sql) that are not applied
    /// yet, each once, in order.
    Migrate(MigrateArgs),
}

#[derive(Args)]
pub(crate) struct MigrateArgs {
    /// The warehouse: a PostgreSQL URL (postgresql://user@host:5432/db) or libpq string.
    #[arg(long, env = "EDDY_WAREHOUSE")]
    url: String,
}

/// The shipped migrations.
pub(crate) fn migrations() -> Vec<Migration> {
    eddy_jobs::ecommerce::WAREHOUSE_MIGRATIONS
        .iter()
        .map(|(name, sql)| Migration { name, sql })
        .collect()
}

pub(crate) fn warehouse(command: WarehouseCommand) -> anyhow::Result<ExitCode> {
    let WarehouseCommand::Migrate(args) = command;
    let applied = migrate(&args.url, &migrations())?;
    if applied.is_empty() {
        println!("the warehouse is up to date");
    } else {
        println!("applied {}", applied.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
