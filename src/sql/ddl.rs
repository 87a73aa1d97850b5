//! `CREATE TABLE ... PARTITIONED BY (...)`: partitioned tables from SQL. DataFusion plans no
//! partitioned `CREATE TABLE`, so the statement is parsed here, its `PARTITIONED BY` taken off,
//! the rest planned by DataFusion, and the table created through colvault with its partition
//! columns. Both dialects' forms are accepted:
//!
//! - Hive's (MaxCompute's DDL): partition columns declared with their type in `PARTITIONED BY`
//!   only, `CREATE TABLE t (id BIGINT, amount DOUBLE) PARTITIONED BY (ds STRING)`; they come after
//!   the other columns, as in Hive;
//! - Spark's: columns of the list (or, with `AS SELECT`, of the query) named without a type,
//!   `CREATE TABLE t (id BIGINT, ds STRING) PARTITIONED BY (ds)`.

use std::sync::Arc;

use datafusion::execution::SessionState;
use datafusion::logical_expr::{CreateMemoryTable, DdlStatement, LogicalPlan};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{self, DataType as SqlType, HiveDistributionStyle};

use super::error::from_df;
use crate::error::{Error, Result};

/// A `CREATE TABLE` that named partition columns: DataFusion's plan of it without them, and the
/// columns, in order.
pub(super) struct CreatePartitioned {
    pub(super) create: CreateMemoryTable,
    pub(super) partition_by: Vec<String>,
}

/// If `sql` is a `CREATE TABLE` with `PARTITIONED BY`, its plan and partition columns; `None` for
/// any other statement (and for text that does not parse: DataFusion's own planning reports it).
pub(super) async fn plan_partitioned(state: &SessionState, sql: &str) -> Result<Option<CreatePartitioned>> {
    let options = state.config().options();
    let dialect = options.sql_parser.dialect;
    let normalize = options.sql_parser.enable_ident_normalization;
    let Ok(DfStatement::Statement(statement)) = state.sql_to_statement(sql, &dialect) else {
        return Ok(None);
    };
    let ast::Statement::CreateTable(mut create) = *statement else {
        return Ok(None);
    };
    let HiveDistributionStyle::PARTITIONED { columns } =
        std::mem::replace(&mut create.hive_distribution, HiveDistributionStyle::NONE)
    else {
        return Ok(None);
    };
    let ident = |i: &ast::Ident| {
        if normalize && i.quote_style.is_none() {
            i.value.to_lowercase()
        } else {
            i.value.clone()
        }
    };
    let mut partition_by = Vec::with_capacity(columns.len());
    for column in columns {
        let name = ident(&column.name);
        let listed = create.columns.iter().any(|c| ident(&c.name) == name);
        let typed = column.data_type != SqlType::Unspecified;
        match (typed, listed, create.query.is_some()) {
            // Spark: a column of the list or of the query.
            (false, true, _) | (false, false, true) => {}
            // Hive: a column of its own, after the others.
            (true, false, false) => create.columns.push(column),
            (true, _, true) => {
                return Err(Error::InvalidArgument(format!(
                    "PARTITIONED BY ({name} {}): with AS SELECT the columns come from the query; name the partition \
                     columns without a type",
                    column.data_type
                )))
            }
            (true, true, false) => {
                return Err(Error::InvalidArgument(format!(
                    "partition column {name} is declared twice, in the column list and in PARTITIONED BY: declare it \
                     in one (PARTITIONED BY ({name}) names a listed column)"
                )))
            }
            (false, false, false) => {
                return Err(Error::InvalidArgument(format!(
                    "partition column {name} is not a column of the table: list it, or declare it with its type \
                     (PARTITIONED BY ({name} STRING))"
                )))
            }
        }
        partition_by.push(name);
    }
    let plan = state
        .statement_to_plan(DfStatement::Statement(Box::new(ast::Statement::CreateTable(create))))
        .await
        .map_err(from_df)?;
    match plan {
        LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) => {
            Ok(Some(CreatePartitioned { create, partition_by }))
        }
        other => Err(Error::InvalidArgument(format!(
            "PARTITIONED BY applies to CREATE TABLE of a colvault table, not to {}",
            other.display()
        ))),
    }
}

/// The Arrow schema of the rows a `CREATE TABLE` plan produces.
pub(super) fn schema_of(create: &CreateMemoryTable) -> Arc<datafusion::arrow::datatypes::Schema> {
    Arc::new(create.input.schema().as_arrow().clone())
}
