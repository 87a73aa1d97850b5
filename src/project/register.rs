//! Adopting a project directory that the catalog does not know (one made before the catalog, or
//! whose catalog was lost): trust on first use, after verifying everything that can be verified.

use std::path::Path;
use std::sync::Arc;

use super::settings::{SettingsFile, LEGACY_FILE};
use super::{Keys, Project, StoredSettings};
use crate::catalog::{anchor_kms, check_id, Catalog, TableHead, TableRecord};
use crate::error::{Error, Result};
use crate::storage::{Location, Storage};
use crate::table::validate_table_name;

/// What [`Project::register`] verified and recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterReport {
    /// The project's name.
    pub name: String,
    /// Its id.
    pub project_id: String,
    /// Each table: name, head version, live files whose footers were checked.
    pub tables: Vec<(String, u64, usize)>,
}

/// The settings files of `storage`: the legacy `project.cv` and content-named ones, with their
/// bodies' settings, newest generation first.
fn settings_candidates(storage: &Storage) -> Result<Vec<(Vec<u8>, StoredSettings)>> {
    let mut out = Vec::new();
    for entry in storage.list("")? {
        let name = entry.name;
        let content_named = name.starts_with("project-") && name.ends_with(".cv");
        if name != LEGACY_FILE && !content_named {
            continue;
        }
        let Some(raw) = storage.get(&name)? else {
            continue;
        };
        let raw = raw.to_vec();
        let file = SettingsFile::parse(&raw)?;
        let settings = StoredSettings::decode_body(file.body)?;
        if content_named && name != super::settings::file_name(&settings.digest()) {
            continue;
        }
        out.push((raw, settings));
    }
    out.sort_by_key(|c| std::cmp::Reverse(c.1.generation));
    Ok(out)
}

impl Project {
    /// Adopts the project in `dir` into `catalog` (trust on first use): its settings file must
    /// authenticate under its key, and every table's whole manifest chain and the footers of its
    /// head's files must verify; then the project and its tables, with their current heads, are
    /// recorded in one catalog transaction. From then on the catalog anchors them.
    ///
    /// A project created before the catalog named its KMS principal by name; a project default key
    /// is granted to the project's id here. A bring-your-own key must be granted to the id by its
    /// owner first (the error says which id).
    pub fn register(
        catalog: &Arc<dyn Catalog>,
        dir: impl AsRef<Path>,
        keys: Keys,
    ) -> Result<(Project, RegisterReport)> {
        let location = match Location::parse(super::handle::location_text(dir.as_ref())?)? {
            Location::Local(d) => Location::Local(
                d.canonicalize()
                    .map_err(|e| Error::io(format!("opening {}", d.display()), e))?,
            ),
            other => other,
        };
        let storage = Storage::at(location, false)?;
        anchor_kms(catalog.as_ref(), keys.kms.as_ref())?;
        let (raw, settings) = settings_candidates(&storage)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::InvalidArgument(format!("{} holds no colvault project settings", storage.url())))?;
        check_id(&settings.project_id, "project")?;
        if catalog.project(&settings.name)?.is_some() || catalog.project_by_id(&settings.project_id)?.is_some() {
            return Err(Error::AlreadyExists {
                kind: "project",
                name: settings.name.clone(),
            });
        }
        let project = Project::assemble(storage.clone(), settings, keys, catalog.clone())?;
        let file = SettingsFile::parse(&raw)?;
        match project.verify_seal(&file) {
            Err(Error::AccessDenied { .. }) if project.settings.default_key => {
                let cmk = project.settings.cmk.clone().expect("an encrypted project has a CMK");
                project.keys.kms.grant(&cmk, project.principal())?;
                project.verify_seal(&file)?;
            }
            other => other?,
        }
        let mut records = Vec::new();
        let mut report = RegisterReport {
            name: project.settings.name.clone(),
            project_id: project.settings.project_id.clone(),
            tables: Vec::new(),
        };
        for dir_name in storage.list_dirs("tables")? {
            let Some(id) = storage.get(&format!("tables/{dir_name}/table.id"))? else {
                continue;
            };
            let id = String::from_utf8_lossy(&id).to_string();
            check_id(id.trim(), "table")?;
            let id = id.trim().to_string();
            // Tables made through a catalog live in tables/<id>; their names were the catalog's.
            let name = if dir_name == id {
                format!("table_{}", &id[..8])
            } else {
                dir_name.clone()
            };
            validate_table_name(&name)?;
            let rec = TableRecord {
                table_id: id.clone(),
                project_id: project.settings.project_id.clone(),
                name: name.clone(),
                location: format!("tables/{dir_name}"),
                head: TableHead {
                    version: 0,
                    digest: [0; 32],
                },
                column_keys: Vec::new(),
                partition_by: Vec::new(),
            };
            // Trust on first use: the column keys and partition columns are those of the verified
            // head manifest, and every file is then checked against them.
            let (head, manifest) = project.table_adopting(&rec).adopt_head()?;
            let rec = TableRecord {
                column_keys: manifest.column_keys.clone(),
                partition_by: manifest.partition_by.clone(),
                ..rec
            };
            let table = project.table_from(&rec);
            table.head_at(&head)?;
            let mut files = 0;
            for f in &manifest.files {
                table.check_file_and_keys(f, &manifest)?;
                files += 1;
            }
            report.tables.push((name, head.version, files));
            records.push(TableRecord { head, ..rec });
        }
        catalog.create_project(&super::handle::record_of(&project.settings, &storage.url()), &records)?;
        Ok((project, report))
    }
}
