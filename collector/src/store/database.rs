//! Which database a collector uses: `database` in collector.toml is a SQLite file (the
//! embedded default) or a `postgres://` URL; everything else opens a store through here.

use super::{Store, StoreError};
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};

#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its URL (`postgres://user:password@host:port/db?...`).
    Postgres(PgUrl),
}

/// A `postgres://` URL. Shown without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl(String);

impl PgUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL with a password replaced by `***`, for logs and error messages.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return self.0.clone();
        };
        let (authority, tail) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        match authority.rsplit_once('@') {
            Some((user, host)) if user.contains(':') => {
                let name = user.split_once(':').map_or(user, |(n, _)| n);
                format!("{scheme}://{name}:***@{host}{tail}")
            }
            _ => self.0.clone(),
        }
    }
}

impl Database {
    /// `database` as written in the config: a URL with the postgres scheme, else a path.
    pub fn parse(s: &str) -> Self {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Database::Postgres(PgUrl(s.to_string()))
        } else {
            Database::Sqlite(PathBuf::from(s))
        }
    }

    /// Open for the collector's writer (or an engineer's change), creating the schema or
    /// bringing it up to date.
    pub fn open(&self) -> Result<Box<dyn Store>, StoreError> {
        Ok(match self {
            Database::Sqlite(p) => Box::new(super::open_sqlite(p)?),
            Database::Postgres(u) => Box::new(super::open_postgres(u)?),
        })
    }

    /// Open an existing database for reading: refuses one not yet created or at an older
    /// schema, and never changes it.
    pub fn open_readonly(&self) -> Result<Box<dyn Store>, StoreError> {
        Ok(match self {
            Database::Sqlite(p) => Box::new(super::open_sqlite_readonly(p)?),
            Database::Postgres(u) => Box::new(super::open_postgres_readonly(u)?),
        })
    }

    /// Open for an engineer's change: the database must exist already (`serve` creates it).
    pub fn open_existing(&self) -> Result<Box<dyn Store>, StoreError> {
        if let Database::Sqlite(p) = self
            && !p.exists()
        {
            return Err(StoreError::NoDatabase {
                path: p.display().to_string(),
            });
        }
        self.open()
    }

    /// The SQLite file, if that is what this is.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Database::Sqlite(p) => Some(p),
            Database::Postgres(_) => None,
        }
    }

    /// A relative SQLite path is taken from `dir`.
    pub fn relative_to(&mut self, dir: &Path) {
        if let Database::Sqlite(p) = self
            && p.is_relative()
        {
            *p = dir.join(&*p);
        }
    }
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(p) => write!(f, "{}", p.display()),
            Database::Postgres(u) => f.write_str(&u.redacted()),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            Database::Postgres(u) => f.debug_tuple("Postgres").field(&u.redacted()).finish(),
        }
    }
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for Database {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() {
            return Err(serde::de::Error::custom(
                "is empty: give a SQLite file (aftercare.db) or a postgres:// URL",
            ));
        }
        Ok(Database::parse(&s))
    }
}

impl From<PathBuf> for Database {
    fn from(p: PathBuf) -> Self {
        Database::Sqlite(p)
    }
}

impl From<&Path> for Database {
    fn from(p: &Path) -> Self {
        Database::Sqlite(p.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths() {
        assert_eq!(
            Database::parse("a.db"),
            Database::Sqlite(PathBuf::from("a.db"))
        );
        let pg = Database::parse("postgres://ac:s3cret@db.example:5432/aftercare?sslmode=disable");
        assert!(matches!(pg, Database::Postgres(_)));
        assert_eq!(
            pg.to_string(),
            "postgres://ac:***@db.example:5432/aftercare?sslmode=disable"
        );
        assert!(!format!("{pg:?}").contains("s3cret"));
        assert_eq!(
            Database::parse("postgresql://ac@h/db").to_string(),
            "postgresql://ac@h/db"
        );
        let mut rel = Database::parse("x.db");
        rel.relative_to(Path::new("/srv"));
        assert_eq!(rel.sqlite_path(), Some(Path::new("/srv/x.db")));
    }
}
