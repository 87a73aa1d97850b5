//! Reading and atomically replacing the keystore file, and removing the temporary files a killed write
//! leaves behind.

use super::*;

pub(super) fn read_file(path: &Path) -> Result<Vec<u8>> {
    let f = File::open(path).map_err(|e| Error::io(format!("opening keystore {}", path.display()), e))?;
    let mut buf = Vec::new();
    f.take((HEADER_LEN + 4 + MAX_KEYSTORE_BODY_LEN + GCM_TAG_LEN) as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(format!("reading keystore {}", path.display()), e))?;
    Ok(buf)
}

/// The directory of a keystore and the prefix of its temporary files (`.<name>.tmp-`).
pub(super) fn temp_prefix(path: &Path) -> (PathBuf, String) {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (dir, format!(".{file_name}.tmp-"))
}

/// Removes the temporary keystores a killed write left beside `path`: older sealed copies that may
/// still hold keys deleted since, which would defeat crypto-shredding. The caller holds the exclusive
/// lock, so no write is in progress and every such file is a leftover.
pub(super) fn remove_leftover_temps(path: &Path) -> Result<()> {
    let (dir, prefix) = temp_prefix(path);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let p = entry.path();
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("removing leftover temporary keystore {}", p.display()),
                        e,
                    ))
                }
            }
        }
    }
    Ok(())
}

/// A temporary file that is removed when dropped unless it was renamed into place, so no error path
/// (or panic) leaves an older sealed copy of the keystore behind.
pub(super) struct TempFile {
    pub(super) path: PathBuf,
    pub(super) armed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Test-only fault injection: a keystore write whose path is registered fails after the temporary
/// file was written, before the rename.
#[cfg(test)]
pub(super) fn fail_writes_to(path: &Path) {
    FAILING_WRITES.lock().unwrap().push(path.to_path_buf());
}
#[cfg(test)]
pub(super) static FAILING_WRITES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
#[cfg(test)]
pub(super) fn injected_failure(path: &Path) -> bool {
    FAILING_WRITES.lock().unwrap().iter().any(|p| p == path)
}
#[cfg(not(test))]
pub(super) fn injected_failure(_: &Path) -> bool {
    false
}

/// Seals `ks` and replaces the file atomically: temp file in the same directory, fsync, rename, fsync
/// of the directory. The temporary file is removed on every error path.
pub(super) fn write_keystore(path: &Path, ks: &Keystore, seal: &SealKey) -> Result<()> {
    let mut body = ks.encode_body()?;
    if body.len() > MAX_KEYSTORE_BODY_LEN {
        return Err(Error::KeyLimit {
            what: "the keystore is too large".into(),
        });
    }
    let nonce = random_array::<GCM_NONCE_LEN>()?;
    let header = encode_header(&seal.kdf, &seal.check, &nonce);
    seal.gcm()?
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&header), &mut *body)
        .map_err(|_| Error::Crypto("AES-256-GCM seal failed"))?;
    let mut file = header;
    file.extend_from_slice(&(body.len() as u32).to_be_bytes());
    file.extend_from_slice(&body);

    let (dir, prefix) = temp_prefix(path);
    let mut tmp = TempFile {
        path: dir.join(format!("{prefix}{}", hex(&random_array::<8>()?))),
        armed: false,
    };
    let ctx = || format!("writing keystore {}", path.display());
    let result = (|| {
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp.path)?;
        tmp.armed = true;
        f.write_all(&file)?;
        f.sync_all()?;
        drop(f);
        if injected_failure(path) {
            return Err(std::io::Error::other("injected failure before the rename"));
        }
        fs::rename(&tmp.path, path)?;
        tmp.armed = false;
        #[cfg(unix)]
        File::open(&dir)?.sync_all()?;
        Ok(())
    })();
    drop(tmp);
    result.map_err(|e: std::io::Error| Error::io(ctx(), e))
}
