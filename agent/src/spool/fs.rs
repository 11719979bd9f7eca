//! The spool's only contact with the file system, behind a small trait so that tests can run
//! the spool on memory with injected failures (a full disk, a crash mid-write).

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};

pub trait Storage {
    type Reader: Read + Seek;
    type Writer: Write;

    /// Names and lengths of the files in the spool.
    fn list(&self) -> io::Result<Vec<(String, u64)>>;
    fn open_read(&self, name: &str) -> io::Result<Self::Reader>;
    /// Open for appending; `create` makes a new, empty file.
    fn open_append(&self, name: &str, create: bool) -> io::Result<Self::Writer>;
    /// Make what was written through `w` durable.
    fn sync(&self, w: &mut Self::Writer) -> io::Result<()>;
    fn truncate(&self, name: &str, len: u64) -> io::Result<()>;
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Read a small file whole; `None` if it does not exist.
    fn read_small(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// Replace a small file atomically and durably: a crash leaves the old or the new one.
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> io::Result<()>;
}

/// The spool directory on disk.
#[derive(Debug, Clone)]
pub struct DirStorage {
    dir: PathBuf,
}

impl DirStorage {
    pub fn new(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(DirStorage {
            dir: dir.to_path_buf(),
        })
    }

    /// Without creating the directory (for `spool verify`, which changes nothing).
    pub fn existing(dir: &Path) -> Self {
        DirStorage {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

impl Storage for DirStorage {
    type Reader = BufReader<File>;
    type Writer = File;

    fn list(&self) -> io::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let md = e.metadata()?;
            if let (true, Some(name)) = (md.is_file(), e.file_name().to_str()) {
                out.push((name.to_string(), md.len()));
            }
        }
        Ok(out)
    }

    fn open_read(&self, name: &str) -> io::Result<Self::Reader> {
        Ok(BufReader::with_capacity(
            64 * 1024,
            File::open(self.dir.join(name))?,
        ))
    }

    fn open_append(&self, name: &str, create: bool) -> io::Result<File> {
        let f = OpenOptions::new()
            .append(true)
            .create_new(create)
            .open(self.dir.join(name))?;
        if create {
            // The new name must survive a power cut too, not only its contents.
            self.sync_dir()?;
        }
        Ok(f)
    }

    fn sync(&self, w: &mut File) -> io::Result<()> {
        w.sync_data()
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let f = OpenOptions::new().write(true).open(self.dir.join(name))?;
        f.set_len(len)?;
        f.sync_all()
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        match std::fs::remove_file(self.dir.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn read_small(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.dir.join(name)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join(name))?;
        self.sync_dir()
    }
}
