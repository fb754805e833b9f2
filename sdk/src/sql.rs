//! SQL through the host: the host owns connections, pooling, transactions
//! and credentials; a sink only sends statements and parameters.

use crate::bindings::omh::plugin::sql;
use crate::{Error, SqlValue};

/// Runs `statement` once per row of parameters (`$1`, `$2`, ... bind each
/// row's values in order), all in one transaction. Returns rows affected.
pub fn execute(statement: &str, rows: &[Vec<SqlValue>]) -> Result<u64, Error> {
    sql::execute(statement, rows)
}
