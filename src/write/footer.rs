//! Closing a file: statistics of columns with their own key sealed under that key, then the
//! envelope, the sealed footer body and the trailer.

use std::io::Write;

use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataWriter};

use super::{pq_err, FileMetadata, FileWriter};
use crate::crypto::{derive_key, ChunkKind, Purpose};
use crate::error::{Error, Result};
use crate::format::envelope::Envelope;
use crate::format::footer::{body_aad, seal_body, sealed_body_len, FooterBody, SealedStats};
use crate::format::stats;
use crate::format::{MAGIC, TRAILER_LEN, VERSION_MINOR};

impl<W: Write> FileWriter<W> {
    /// Moves the statistics of columns with their own key out of the Parquet metadata (which is
    /// sealed under the footer key) into blobs sealed under the column's key; level histograms and
    /// byte-array sizes of those columns, which also reveal something of the values, are dropped.
    fn seal_column_key_stats(&self, metadata: ParquetMetaData) -> Result<(ParquetMetaData, Vec<SealedStats>)> {
        if !self.own_key.iter().any(|&o| o) {
            return Ok((metadata, Vec::new()));
        }
        let mut sealed = Vec::new();
        let metadata = stats::map_column_chunks(metadata, |r, leaf, col| {
            if !self.own_key[leaf] {
                return Ok(None);
            }
            if let Some(st) = col.statistics() {
                let mut blob = stats::encode(st);
                self.sealers[leaf].seal(r as u32, ChunkKind::Metadata, &mut blob)?;
                sealed.push(SealedStats {
                    row_group: r as u32,
                    leaf: leaf as u32,
                    sealed: blob,
                });
            }
            col.clone()
                .into_builder()
                .clear_statistics()
                .set_unencoded_byte_array_data_bytes(None)
                .set_repetition_level_histogram(None)
                .set_definition_level_histogram(None)
                .build()
                .map(Some)
                .map_err(pq_err)
        })?;
        Ok((metadata, sealed))
    }

    pub(super) fn finish(&mut self) -> Result<FileMetadata> {
        self.flush_row_group()?;
        if let Some(last) = self.closed.take() {
            self.out.write_row_group(last, &self.sealers, true)?;
        }
        let pq = self.out.pq.take().ok_or(Error::Poisoned)?;
        let metadata = pq.close().map_err(pq_err)?;
        let (metadata, sealed_stats) = self.seal_column_key_stats(metadata)?;
        let mut pq_bytes = Vec::new();
        ParquetMetaDataWriter::new(&mut pq_bytes, &metadata)
            .finish()
            .map_err(pq_err)?;
        // Drop parquet's 8-byte tail (metadata length and magic): colvault frames it itself.
        pq_bytes.truncate(pq_bytes.len().saturating_sub(8));

        let body = FooterBody {
            parquet_metadata: pq_bytes,
            arrow_schema: std::mem::take(&mut self.arrow_schema),
            row_groups: self.row_groups as u32,
            leaves: self.leaf_field.len() as u32,
            chunks: std::mem::take(&mut self.out.file.chunks),
            sealed_stats,
        };
        let alg = self.opts.algorithm;
        let footer_nonce = match alg.is_encrypted() {
            true => self.opts.footer_nonce()?,
            false => [0u8; 12],
        };
        let key_version = match self.key_entries.first() {
            Some(k) => crate::kms::DataKeyEnvelope::from_bytes(&k.wrapped)?.key_version(),
            None => 0,
        };
        let envelope = Envelope {
            minor: VERSION_MINOR,
            algorithm: alg,
            file_id: self.file_id,
            kms: match self.key_entries.first() {
                Some(k) => crate::kms::DataKeyEnvelope::from_bytes(&k.wrapped)?
                    .kms_name()
                    .to_string(),
                None => String::new(),
            },
            keys: std::mem::take(&mut self.key_entries),
            footer_nonce,
        }
        .encode();
        let mut sealed = body.encode();
        let sealed_len = sealed_body_len(alg, sealed.len());
        let file_len = self.out.file.position + envelope.len() as u64 + sealed_len as u64 + TRAILER_LEN as u64;
        let aad = body_aad(&envelope, file_len, sealed_len as u64);
        let footer_key = match &self.file_dek {
            Some(dek) => Some(derive_key(dek, Purpose::FooterKey, &[&self.file_id.0])?),
            None => None,
        };
        seal_body(footer_key.as_ref(), &footer_nonce, &aad, &mut sealed)?;
        debug_assert_eq!(sealed.len(), sealed_len);
        let mut trailer = Vec::with_capacity(TRAILER_LEN);
        trailer.extend_from_slice(&(envelope.len() as u32).to_be_bytes());
        trailer.extend_from_slice(&(sealed.len() as u32).to_be_bytes());
        trailer.extend_from_slice(&MAGIC);
        let mut digest = blake3::Hasher::new();
        for part in [&envelope, &sealed, &trailer] {
            self.out.file.write(part)?;
            digest.update(part);
        }
        self.out
            .file
            .sink
            .flush()
            .map_err(|e| Error::io("flushing a file", e))?;
        debug_assert_eq!(self.out.file.position, file_len);
        Ok(FileMetadata {
            file_id: self.file_id,
            algorithm: alg,
            num_rows: self.num_rows,
            row_groups: self.row_groups,
            file_len,
            footer_digest: *digest.finalize().as_bytes(),
            key_ids: self.key_ids.clone(),
            key_version,
        })
    }
}
