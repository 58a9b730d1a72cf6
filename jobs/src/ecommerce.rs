//! The e-commerce analytics job and its warehouse, compiled into the binary so that `eddy`
//! can set them up without a checkout of the repository.

/// `jobs/ecommerce/analytics.toml`.
pub const ANALYTICS_JOB: &str = include_str!("../ecommerce/analytics.toml");

/// The warehouse's schema migrations (`jobs/ecommerce/warehouse/*.sql`), in order.
pub const WAREHOUSE_MIGRATIONS: &[(&str, &str)] = &[(
    "001_star_schema",
    include_str!("../ecommerce/warehouse/001_star_schema.sql"),
)];
