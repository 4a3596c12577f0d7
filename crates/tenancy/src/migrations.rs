//! Tenant migrations: `NNNN_name.sql` files, optional per-dialect variants, SHA-256 checksums.
//!
//! A migration set is loaded once (from a folder or the built-in guild schema) and is
//! immutable afterwards. Applying it to one tenant database is in [`crate::store`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The SQL dialect of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }
}

/// One version of the tenant schema.
#[derive(Debug, Clone)]
pub struct Migration {
    pub version: i64,
    pub name: String,
    /// The portable `NNNN_name.sql`, if present.
    portable: Option<Source>,
    /// Per-dialect variants, which win over the portable file for their dialect.
    variants: BTreeMap<&'static str, Source>,
}

#[derive(Debug, Clone)]
struct Source {
    file: String,
    sql: String,
    checksum: String,
}

/// What one dialect runs for one migration.
#[derive(Debug, Clone, Copy)]
pub struct Script<'a> {
    pub version: i64,
    pub name: &'a str,
    pub file: &'a str,
    pub sql: &'a str,
    pub checksum: &'a str,
}

impl Migration {
    /// The script this dialect runs.
    pub fn script(&self, dialect: Dialect) -> Result<Script<'_>> {
        let src = self
            .variants
            .get(dialect.as_str())
            .or(self.portable.as_ref())
            .ok_or_else(|| {
                Error::InvalidMigrations(format!(
                    "migration {:04}_{} has no file for {} (add {:04}_{}.sql or {:04}_{}.{}.sql)",
                    self.version,
                    self.name,
                    dialect.as_str(),
                    self.version,
                    self.name,
                    self.version,
                    self.name,
                    dialect.as_str()
                ))
            })?;
        Ok(Script {
            version: self.version,
            name: &self.name,
            file: &src.file,
            sql: &src.sql,
            checksum: &src.checksum,
        })
    }
}

/// Where a migration set came from, for messages.
#[derive(Debug, Clone)]
pub enum Origin {
    BuiltinGuild,
    Folder(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::BuiltinGuild => f.write_str("built-in guild schema"),
            Origin::Folder(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The ordered, immutable set of tenant migrations.
#[derive(Debug, Clone)]
pub struct MigrationSet {
    pub origin: Origin,
    migrations: Vec<Migration>,
}

/// The built-in default schema: the guild example, compiled into the binary.
pub const GUILD_MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_roster.sql",
        include_str!("../guild-migrations/0001_roster.sql"),
    ),
    (
        "0002_auctions.sql",
        include_str!("../guild-migrations/0002_auctions.sql"),
    ),
];

impl MigrationSet {
    /// The guild schema that ships with tenancy.
    pub fn builtin_guild() -> MigrationSet {
        let files = GUILD_MIGRATIONS
            .iter()
            .map(|(f, s)| (f.to_string(), s.to_string()));
        // The built-in files are fixed at compile time and covered by tests.
        Self::from_files(Origin::BuiltinGuild, files).unwrap_or_else(|e| {
            unreachable!("built-in guild migrations are invalid: {e}");
        })
    }

    /// Every `*.sql` file of a folder. Other files (a README) are ignored; a `.sql` file
    /// whose name does not follow `NNNN_name[.dialect].sql` is an error.
    pub fn load_dir(dir: &Path) -> Result<MigrationSet> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            Error::InvalidMigrations(format!(
                "cannot read migrations folder {}: {e}",
                dir.display()
            ))
        })?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("sql") || !path.is_file() {
                continue;
            }
            let file = entry.file_name().to_string_lossy().into_owned();
            let sql = std::fs::read_to_string(&path).map_err(|e| {
                Error::InvalidMigrations(format!("cannot read {}: {e}", path.display()))
            })?;
            files.push((file, sql));
        }
        Self::from_files(Origin::Folder(dir.to_path_buf()), files)
    }

    /// Builds a set from `(file name, contents)` pairs.
    pub fn from_files(
        origin: Origin,
        files: impl IntoIterator<Item = (String, String)>,
    ) -> Result<MigrationSet> {
        let mut by_version: BTreeMap<i64, Migration> = BTreeMap::new();
        for (file, sql) in files {
            let (version, name, dialect) = parse_file_name(&file)?;
            if sql.trim().is_empty() {
                return Err(Error::InvalidMigrations(format!(
                    "migration {file} is empty"
                )));
            }
            let migration = by_version.entry(version).or_insert_with(|| Migration {
                version,
                name: name.clone(),
                portable: None,
                variants: BTreeMap::new(),
            });
            if migration.name != name {
                return Err(Error::InvalidMigrations(format!(
                    "two migrations share version {version:04}: {:04}_{} and {file}",
                    version, migration.name
                )));
            }
            let source = Source {
                checksum: checksum(&sql),
                file: file.clone(),
                sql,
            };
            match dialect {
                None => migration.portable = Some(source),
                Some(d) => {
                    migration.variants.insert(d.as_str(), source);
                }
            }
        }
        Ok(MigrationSet {
            origin,
            migrations: by_version.into_values().collect(),
        })
    }

    /// The migrations up to `version` (all of them if it is the latest or beyond).
    pub fn up_to(&self, version: i64) -> MigrationSet {
        MigrationSet {
            origin: self.origin.clone(),
            migrations: self
                .migrations
                .iter()
                .take_while(|m| m.version <= version)
                .cloned()
                .collect(),
        }
    }

    /// The highest version (0 for an empty set).
    pub fn latest(&self) -> i64 {
        self.migrations.last().map_or(0, |m| m.version)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Migration> {
        self.migrations.iter()
    }

    pub fn get(&self, version: i64) -> Option<&Migration> {
        self.migrations
            .binary_search_by_key(&version, |m| m.version)
            .ok()
            .map(|i| &self.migrations[i])
    }

    /// The scripts a dialect runs, in order. Fails if a version has no file for it.
    pub fn scripts(&self, dialect: Dialect) -> Result<Vec<Script<'_>>> {
        self.migrations.iter().map(|m| m.script(dialect)).collect()
    }
}

/// Hex SHA-256 of a migration's text, exactly as stored on disk.
/// A short name for a list of scripts (their files and checksums): templates built from
/// them are named by it, so a changed or added script makes a new template.
pub(crate) fn scripts_digest(scripts: &[Script<'_>]) -> String {
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    for script in scripts {
        sha2::Digest::update(&mut hasher, script.file.as_bytes());
        sha2::Digest::update(&mut hasher, script.checksum.as_bytes());
    }
    hex::encode(sha2::Digest::finalize(hasher))[..16].to_owned()
}

/// Checks a tenant's ledger (`(version, name, checksum)` rows, by version) against the
/// scripts: every applied migration still exists unchanged, and no older one was added
/// later. Returns the applied version.
pub fn check_applied(applied: &[(i64, String, String)], scripts: &[Script<'_>]) -> Result<i64> {
    let short = |c: &str| c.chars().take(12).collect::<String>();
    let from = applied.last().map_or(0, |(v, _, _)| *v);
    let latest = scripts.last().map_or(0, |s| s.version);
    if from > latest {
        return Err(Error::UnknownSchemaVersion {
            applied: from,
            latest,
        });
    }
    let applied_versions: std::collections::HashSet<i64> =
        applied.iter().map(|(v, _, _)| *v).collect();
    for (version, _name, checksum) in applied {
        match scripts.iter().find(|s| s.version == *version) {
            None => {
                return Err(Error::InvalidMigrations(format!(
                    "migration {version:04} is applied to this tenant but missing from the migrations folder"
                )))
            }
            Some(s) if s.checksum != checksum => {
                return Err(Error::MigrationChanged {
                    file: s.file.to_owned(),
                    applied: short(checksum),
                    current: short(s.checksum),
                })
            }
            Some(_) => {}
        }
    }
    if let Some(gap) = scripts
        .iter()
        .find(|s| s.version < from && !applied_versions.contains(&s.version))
    {
        return Err(Error::InvalidMigrations(format!(
            "migration {} is older than the applied version {from:04} but was never applied; give it a version above {from:04}",
            gap.file
        )));
    }
    Ok(from)
}

pub fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

fn parse_file_name(file: &str) -> Result<(i64, String, Option<Dialect>)> {
    let bad = || {
        Error::InvalidMigrations(format!(
            "migration file {file:?} must be named NNNN_name.sql or NNNN_name.sqlite.sql / NNNN_name.postgres.sql (name: a-z, 0-9, _)"
        ))
    };
    let stem = file.strip_suffix(".sql").ok_or_else(bad)?;
    let (stem, dialect) = if let Some(s) = stem.strip_suffix(".sqlite") {
        (s, Some(Dialect::Sqlite))
    } else if let Some(s) = stem.strip_suffix(".postgres") {
        (s, Some(Dialect::Postgres))
    } else {
        (stem, None)
    };
    let (digits, name) = stem.split_once('_').ok_or_else(bad)?;
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(bad());
    }
    let version: i64 = digits.parse().map_err(|_| bad())?;
    if version == 0 {
        return Err(Error::InvalidMigrations(format!(
            "migration file {file:?}: versions start at 1"
        )));
    }
    Ok((version, name.to_owned(), dialect))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(files: &[(&str, &str)]) -> Result<MigrationSet> {
        MigrationSet::from_files(
            Origin::BuiltinGuild,
            files.iter().map(|(f, s)| (f.to_string(), s.to_string())),
        )
    }

    #[test]
    fn builtin_guild_is_valid() {
        let set = MigrationSet::builtin_guild();
        assert_eq!(set.latest(), 2);
        assert_eq!(set.scripts(Dialect::Sqlite).unwrap().len(), 2);
        assert_eq!(set.scripts(Dialect::Postgres).unwrap().len(), 2);
    }

    #[test]
    fn variants_win_for_their_dialect() {
        let s = set(&[
            ("0001_a.sql", "CREATE TABLE a (id TEXT);"),
            ("0001_a.postgres.sql", "CREATE TABLE a (id UUID);"),
            ("0002_b.sqlite.sql", "CREATE TABLE b (id TEXT);"),
        ])
        .unwrap();
        assert_eq!(
            s.get(1).unwrap().script(Dialect::Postgres).unwrap().sql,
            "CREATE TABLE a (id UUID);"
        );
        assert_eq!(
            s.get(1).unwrap().script(Dialect::Sqlite).unwrap().sql,
            "CREATE TABLE a (id TEXT);"
        );
        assert!(s.get(2).unwrap().script(Dialect::Sqlite).is_ok());
        let err = s.scripts(Dialect::Postgres).unwrap_err().to_string();
        assert!(err.contains("0002_b"), "{err}");
    }

    #[test]
    fn refuses_bad_file_names() {
        for bad in [
            "1.sql",
            "x_a.sql",
            "0001-a.sql",
            "0001_A.sql",
            "0001_.sql",
            "0000_zero.sql",
            "0001_a.mysql.sql",
            "0001_a b.sql",
            "12345678901_big.sql",
        ] {
            let err = set(&[(bad, "SELECT 1;")]).unwrap_err();
            assert!(matches!(err, Error::InvalidMigrations(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn refuses_duplicate_versions_and_empty_files() {
        assert!(set(&[("0001_a.sql", "x"), ("0001_b.sql", "y")]).is_err());
        assert!(set(&[("0001_a.sql", "  \n")]).is_err());
    }

    #[test]
    fn checksum_is_sha256_hex() {
        assert_eq!(
            checksum(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
