//! SQL on an Apache Ballista cluster (feature `ballista`): a scheduler and executors as separate
//! processes, for queries that outgrow one machine.
//!
//! Keys never travel, and the scheduler never holds any:
//! - **The client plans.** A [`ClusterSession`] plans a statement with its own catalog and KMS, as
//!   a local [`SqlSession`] does (opening manifests and footers needs the keys). It then turns the
//!   physical plan into the distributed form ([`distribute`]). Each scan becomes a
//!   `DataSourceExec` whose file groups are the planned partitions, so Ballista gives every task
//!   its own slices. The plan is submitted to the scheduler as a physical plan.
//! - **Plans carry selections only.** A scan names the project and table (by name and id), the
//!   version planned against, the columns and their types, and each partition's data files and
//!   row groups ([`ClusterCodec`]). An INSERT's sink names its table.
//! - **Executors prove what they read.** Each executor has its own catalog client, KMS and object
//!   store, from its configuration ([`ClusterEnv`]). Before reading, it checks the plan against its
//!   catalog:
//!   - the project and table ids are those the catalog holds;
//!   - the version is in the table's verified manifest chain;
//!   - each file is one that version lists, and the row groups exist;
//!   - the columns have the planned types.
//!
//!   It then authenticates each footer and unwraps its keys with its own KMS, as every colvault
//!   read does. A scheduler or network that rewrites a plan can select other rows of the same
//!   snapshot, but cannot substitute data. An executor the KMS refuses fails its task with
//!   the access error.
//! - **Writes commit once.** Ballista runs an `INSERT INTO`'s sink as one task. Its executor
//!   encrypts and writes the rows, then commits them in one compare-and-swap of the table's head
//!   in the catalog, after the last batch. A failed statement commits nothing.
//!
//! Statements other than queries and INSERTs (`CREATE TABLE ... AS`, `DROP TABLE`) run on the
//! client, as in a [`SqlSession`].
//!
//! The processes: [`run_scheduler`] (no catalog, no KMS) and [`run_executor`], which the
//! `colvault cluster scheduler` and `colvault cluster executor` commands start.

mod codec;
mod distribute;
mod process;
mod sink;
mod source;

use std::sync::Arc;

use ballista_core::config::BallistaConfig;
use ballista_core::execution_plans::execute_physical_plan;
use ballista_core::extension::SessionConfigExt;
use datafusion::arrow::array::RecordBatch;
use datafusion::dataframe::DataFrame;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use datafusion_proto::protobuf::PhysicalPlanNode;
use futures::TryStreamExt;

pub use codec::ClusterCodec;
pub use distribute::distribute;
pub use process::{run_executor, run_scheduler, ExecutorOptions, SchedulerOptions};
pub use source::{ClusterEnv, ColvaultFileSource};

use super::error::from_df;
use super::SqlSession;
use crate::error::{Error, Result};

/// A [`SqlSession`] whose queries run on a Ballista cluster.
pub struct ClusterSession {
    session: SqlSession,
    scheduler: String,
    codec: Arc<ClusterCodec>,
    session_id: String,
}

impl std::fmt::Debug for ClusterSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSession")
            .field("scheduler", &self.scheduler)
            .finish_non_exhaustive()
    }
}

impl ClusterSession {
    /// Queries of `session` on the scheduler at `scheduler` (`http://HOST:PORT`, or `HOST:PORT`).
    ///
    /// The session takes Ballista's configuration for the plans it makes, as a Ballista client's
    /// does ([`for_ballista`]): without it, some plans never finish on a cluster.
    pub fn new(session: SqlSession, scheduler: &str) -> Result<Self> {
        let scheduler = scheduler_url(scheduler)?;
        Ok(ClusterSession {
            session: session.map_state(for_ballista),
            scheduler,
            codec: Arc::new(ClusterCodec::planner()),
            session_id: random_id()?,
        })
    }

    /// The local session the client plans with.
    pub fn session(&self) -> &SqlSession {
        &self.session
    }

    /// The plan of `sql` as the cluster runs it (queries and INSERTs; other statements have
    /// already run here, and have an empty plan).
    pub async fn plan(&self, sql: &str) -> Result<Arc<dyn ExecutionPlan>> {
        let df = self.session.sql(sql).await?;
        distributed(df).await
    }

    /// Runs `sql` on the cluster; its result as a stream. A statement the client already ran
    /// (DDL: `CREATE VIEW`, `CREATE TABLE ... AS`, `DROP TABLE`) is not sent.
    pub async fn execute(&self, sql: &str) -> Result<SendableRecordBatchStream> {
        let df = self.session.sql(sql).await?;
        if matches!(df.logical_plan(), LogicalPlan::EmptyRelation(_)) {
            return df.execute_stream().await.map_err(from_df);
        }
        let plan = distributed(df).await?;
        let config = self
            .session
            .context()
            .copied_config()
            .upgrade_for_ballista()
            .with_ballista_physical_extension_codec(self.codec.clone());
        execute_physical_plan::<PhysicalPlanNode>(
            self.scheduler.clone(),
            &BallistaConfig::default(),
            plan,
            self.codec.as_ref(),
            self.session_id.clone(),
            config,
        )
        .await
        .map_err(from_df)
    }

    /// Runs `sql` on the cluster and collects its result.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        self.execute(sql).await?.try_collect().await.map_err(from_df)
    }
}

/// The physical plan of `df`, in its distributed form; an INSERT's statement marked with the
/// version its table is at now (so a rerun of its task finds its commit).
async fn distributed(df: DataFrame) -> Result<Arc<dyn ExecutionPlan>> {
    let plan = df.create_physical_plan().await.map_err(from_df)?;
    let tables = distribute::sink_tables(&plan);
    let versions = super::plan::blocking(move || {
        tables
            .iter()
            .map(|t| Ok((t.table_id().to_string(), t.head_version()?)))
            .collect::<Result<std::collections::HashMap<_, _>>>()
    })
    .await?;
    distribute::distribute_at(plan, &versions).map_err(from_df)
}

/// `state` planning for a Ballista cluster: Ballista's session options and its logical rules,
/// as Ballista's own client sets them. Among them:
/// - no dynamic filters: a filter that a join's build side or a TopK fills at run time cannot
///   cross a stage boundary, so the scan waiting for it in another stage waits forever, and the
///   scheduler's join selection refuses to swap a join's inputs once one exists (the error
///   "Cannot swap HashJoinExec inputs after dynamic filters have been constructed");
/// - `NOT IN (subquery)` rewritten before it becomes a null-aware anti join, which Ballista
///   cannot distribute;
/// - sort-merge joins preferred (they spill) and no round-robin repartitioning.
fn for_ballista(state: SessionState) -> SessionState {
    let config = state.config().clone().upgrade_for_ballista();
    let rules = ballista_core::optimizer::with_ballista_optimizer_rules(state.optimizers());
    SessionStateBuilder::new_from_existing(state)
        .with_config(config)
        .with_optimizer_rules(rules)
        .build()
}

/// `http://HOST:PORT` for `HOST:PORT` or a URL of it.
fn scheduler_url(s: &str) -> Result<String> {
    let t = s.trim();
    let rest = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"))
        .unwrap_or(t);
    let ok = rest
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !ok {
        return Err(Error::InvalidArgument(format!(
            "scheduler {s:?}: expected HOST:PORT or http://HOST:PORT (for example 127.0.0.1:50050)"
        )));
    }
    Ok(if t.starts_with("http://") || t.starts_with("https://") {
        t.to_string()
    } else {
        format!("http://{t}")
    })
}

/// A fresh random id: 32 hex digits (128 bits from the OS's random source).
pub(crate) fn random_id() -> Result<String> {
    let bytes = crate::crypto::random_array::<16>()?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::scheduler_url;

    #[test]
    fn scheduler_urls() {
        assert_eq!(scheduler_url("127.0.0.1:50050").unwrap(), "http://127.0.0.1:50050");
        assert_eq!(scheduler_url("http://h:1").unwrap(), "http://h:1");
        for bad in ["", "localhost", ":50050", "h:port", "http://h"] {
            assert!(scheduler_url(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod plan_tests;
