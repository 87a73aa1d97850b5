//! Encoding: slabs of rows into the per-column parquet encoders in parallel, and closing a full
//! row group while the previous one is sealed and written.

use std::io::Write;
use std::sync::Mutex;

use parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnWriter, ArrowLeafColumn};
use rayon::prelude::*;

use super::output::ClosedRowGroup;
use super::{pq_err, FileWriter};
use crate::error::Result;

/// Rows buffered before they are encoded (see [`FileWriter`]'s `pending`).
pub(super) const SLAB_ROWS: usize = 256 * 1024;
/// Bytes of Arrow data buffered before they are encoded, whatever the row count.
pub(super) const SLAB_BYTES: usize = 32 << 20;

impl<W: Write> FileWriter<W> {
    pub(super) fn buffered_bytes(&self) -> usize {
        self.writers.iter().map(|w| w.get_estimated_total_bytes()).sum()
    }

    /// Encodes the pending slab: every leaf column by its own writer, in parallel.
    pub(super) fn encode_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batches = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        self.pending_bytes = 0;
        let n = self.writers.len();
        let mut per_leaf: Vec<Vec<ArrowLeafColumn>> = (0..n).map(|_| Vec::new()).collect();
        // Arrow bytes of each leaf's field in the slab: the largest leaves are started first
        // (longest-processing-time first), so one big column does not finish alone at the end.
        let mut size = vec![0usize; n];
        for batch in &batches {
            let mut leaf = 0;
            for (field, col) in self.schema.fields().iter().zip(batch.columns()) {
                let bytes = col.to_data().get_slice_memory_size().unwrap_or(0);
                for l in compute_leaves(field, col).map_err(pq_err)? {
                    per_leaf[leaf].push(l);
                    size[leaf] += bytes;
                    leaf += 1;
                }
            }
        }
        drop(batches);
        let mut jobs: Vec<(usize, &mut ArrowColumnWriter, Vec<ArrowLeafColumn>)> = size
            .into_iter()
            .zip(self.writers.iter_mut())
            .zip(per_leaf)
            .map(|((s, w), l)| (s, w, l))
            .collect();
        jobs.sort_by_key(|j| std::cmp::Reverse(j.0));
        let Some(group) = self.closed.take() else {
            return jobs
                .into_par_iter()
                .with_max_len(1)
                .try_for_each(|(_, w, leaves)| leaves.iter().try_for_each(|l| w.write(l)))
                .map_err(pq_err);
        };
        // The previous row group is written by this thread (serially: rayon's threads are busy
        // with the encoders) while the encoders run as rayon tasks.
        let failed = Mutex::new(None);
        let (out, sealers) = (&mut self.out, &self.sealers);
        let written = rayon::in_place_scope(|scope| {
            for (_, w, leaves) in jobs {
                let failed = &failed;
                scope.spawn(move |_| {
                    if let Err(e) = leaves.iter().try_for_each(|l| w.write(l)) {
                        *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    }
                });
            }
            out.write_row_group(group, sealers, false)
        });
        written?;
        match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(pq_err(e)),
            None => Ok(()),
        }
    }

    /// Closes the current row group (if it has rows): closes its column encoders in parallel and
    /// keeps the chunks to be written while the next row group encodes (or by `finish`).
    pub(super) fn flush_row_group(&mut self) -> Result<()> {
        self.encode_pending()?;
        if self.rows_in_group == 0 {
            return Ok(());
        }
        let rg = self.row_groups;
        let next = self.factory.create_column_writers(rg + 1).map_err(pq_err)?;
        let writers = std::mem::replace(&mut self.writers, next);
        let chunks = writers
            .into_par_iter()
            .map(|w| w.close())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(pq_err)?;
        // Two row groups closed with no slab encoded between them: the older one goes now.
        if let Some(older) = self.closed.take() {
            self.out.write_row_group(older, &self.sealers, true)?;
        }
        self.closed = Some(ClosedRowGroup {
            index: rg as u32,
            chunks,
        });
        self.row_groups += 1;
        self.rows_in_group = 0;
        Ok(())
    }
}
