//! SQL through the host: the host owns connections, pooling, transactions
//! and credentials; a sink only sends statements and parameters.
//!
//! Every call made during one `Sink::write` joins one transaction, which the
//! host commits only if `write` returns `Ok` and no call failed.

use crate::bindings::omh::plugin::sql;
use crate::{Error, SqlValue};

/// Runs `statement` once per row of parameters (`$1`, `$2`, ... bind each
/// row's values in order). Returns rows affected.
pub fn execute(statement: &str, rows: &[Vec<SqlValue>]) -> Result<u64, Error> {
    sql::execute(statement, rows)
}

/// Appends rows to `table` (`name` or `schema.name`), values in `columns`
/// order, by the database's fastest path (binary `COPY` on PostgreSQL).
pub fn copy_rows(table: &str, columns: &[String], rows: &[Vec<SqlValue>]) -> Result<u64, Error> {
    sql::copy_rows(table, columns, rows)
}
