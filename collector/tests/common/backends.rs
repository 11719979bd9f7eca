//! Store tests run on both backends: `both_backends!(name, ...)` makes `sqlite::name` and
//! `postgres::name` tests calling `fn name(b: Backend)`. The PostgreSQL ones get a database
//! of their own (see `aftercare-pgtest`) and fail, saying how to get PostgreSQL, where
//! none can be had.

#![allow(dead_code)]

use aftercare_collector::store::{Database, Store};

pub enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(aftercare_pgtest::TestDb),
}

impl Backend {
    pub fn sqlite() -> Self {
        Backend::Sqlite(tempfile::tempdir().expect("temp dir"))
    }

    pub fn postgres() -> Self {
        Backend::Postgres(aftercare_pgtest::database())
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Backend::Postgres(_))
    }

    /// What `database` in collector.toml says for this backend.
    pub fn config_value(&self) -> String {
        match self {
            Backend::Sqlite(d) => d.path().join("a.db").display().to_string(),
            Backend::Postgres(db) => db.url().to_string(),
        }
    }

    pub fn database(&self) -> Database {
        Database::parse(&self.config_value())
    }

    /// Open for writing (creating the schema).
    pub fn open(&self) -> Box<dyn Store> {
        self.database().open().expect("open the store")
    }

    pub fn open_readonly(&self) -> Box<dyn Store> {
        self.database()
            .open_readonly()
            .expect("open the store read-only")
    }
}

/// `both_backends!(a, b)`: tests `sqlite::a`, `postgres::a`, ... calling `a(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(super::Backend::sqlite())
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    super::$name(super::Backend::postgres())
                }
            )*
        }
    };
}
