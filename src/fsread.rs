//! Reading the files another party controls: the config, discovery files,
//! kubeconfigs and the files they name, TLS material, tokens and passwords.
//!
//! Every such read goes through [`read_regular`]: the file is opened
//! without blocking (`O_NONBLOCK`: a FIFO with no writer would otherwise
//! hang `open` and the thread with it), it must be a regular file after
//! symlinks are followed (`/dev/zero`, a FIFO, a socket or a directory is
//! an error that says what it is), and at most `max` bytes are read: a
//! bigger file is an error, never a bigger allocation. Symbolic link loops
//! and dangling links are errors in words too.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: file not found")]
    NotFound { path: PathBuf },
    #[error("{path}: dangling symbolic link (to {target})")]
    DanglingLink { path: PathBuf, target: PathBuf },
    #[error("{path}: symbolic link loop")]
    LinkLoop { path: PathBuf },
    #[error("{path}: is {kind}, not a regular file")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path}: larger than {max} bytes")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("{path}: not UTF-8 text")]
    NotUtf8 { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ReadError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ReadError::NotFound { path }
            | ReadError::DanglingLink { path, .. }
            | ReadError::LinkLoop { path }
            | ReadError::NotRegular { path, .. }
            | ReadError::TooLarge { path, .. }
            | ReadError::NotUtf8 { path }
            | ReadError::Io { path, .. } => path,
        }
    }

    /// The message without the path (for callers that name the file
    /// themselves).
    pub fn reason(&self) -> String {
        let full = self.to_string();
        let prefix = format!("{}: ", self.path().display());
        full.strip_prefix(&prefix).unwrap_or(&full).to_string()
    }
}

/// Most bytes of a config file, a discovery file or a kubeconfig.
pub(crate) const MAX_DOCUMENT: u64 = 16 << 20;
/// Most bytes of a PEM file (a CA bundle of a few hundred roots is ~250 KiB).
pub(crate) const MAX_PEM: u64 = 4 << 20;
/// Most bytes of a token or password file.
pub(crate) const MAX_SECRET: u64 = 64 << 10;

/// What a file that is not a regular file is, in words.
fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Reads the regular file at `path` (symlinks followed), at most `max`
/// bytes; see the module docs.
pub(crate) fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let io = |source: std::io::Error| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let nonblock = rustix::fs::OFlags::NONBLOCK.bits() as i32;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nonblock)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => return Err(open_error(path, e)),
    };
    let md = file.metadata().map_err(io)?;
    if !md.file_type().is_file() {
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(md.file_type()),
        });
    }
    if md.len() > max {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            max,
        });
    }
    // The size may change between the stat and the read: read at most one
    // byte past the bound to tell.
    let mut buf = Vec::with_capacity(md.len() as usize);
    file.take(max + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > max {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            max,
        });
    }
    Ok(buf)
}

/// [`read_regular`] as UTF-8 text.
pub(crate) fn read_text(path: &Path, max: u64) -> Result<String, ReadError> {
    String::from_utf8(read_regular(path, max)?).map_err(|_| ReadError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

/// An `open` error in words: a missing file, a dangling link, a loop.
fn open_error(path: &Path, e: std::io::Error) -> ReadError {
    match e.kind() {
        std::io::ErrorKind::NotFound => match std::fs::read_link(path) {
            Ok(target) => ReadError::DanglingLink {
                path: path.to_path_buf(),
                target,
            },
            Err(_) => ReadError::NotFound {
                path: path.to_path_buf(),
            },
        },
        _ if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            ReadError::LinkLoop {
                path: path.to_path_buf(),
            }
        }
        _ if e.kind() == std::io::ErrorKind::IsADirectory => ReadError::NotRegular {
            path: path.to_path_buf(),
            kind: "a directory",
        },
        _ => ReadError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_are_read_up_to_the_bound() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(read_regular(&p, 5).unwrap(), b"hello");
        let e = read_regular(&p, 4).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { max: 4, .. }), "{e}");
        assert_eq!(e.reason(), "larger than 4 bytes");
        // Through a symlink.
        let l = d.path().join("l");
        std::os::unix::fs::symlink(&p, &l).unwrap();
        assert_eq!(read_text(&l, 100).unwrap(), "hello");
    }

    #[test]
    fn what_is_not_a_regular_file_is_named_and_never_blocks() {
        let d = tempfile::tempdir().unwrap();
        // A FIFO with no writer: a plain open would block forever.
        let fifo = d.path().join("fifo.json");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::RUSR).unwrap();
        let e = read_regular(&fifo, 100).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("is a FIFO (named pipe), not a regular file"),
            "{e}"
        );
        let e = read_regular(Path::new("/dev/zero"), 100).unwrap_err();
        assert!(e.to_string().contains("a character device"), "{e}");
        let zero = d.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(matches!(
            read_regular(&zero, 100).unwrap_err(),
            ReadError::NotRegular { .. }
        ));
        let e = read_regular(d.path(), 100).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        let dangling = d.path().join("dangling");
        std::os::unix::fs::symlink(d.path().join("nowhere"), &dangling).unwrap();
        let e = read_regular(&dangling, 100).unwrap_err();
        assert!(e.to_string().contains("dangling symbolic link"), "{e}");
        let a = d.path().join("a");
        let b = d.path().join("b");
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        let e = read_regular(&a, 100).unwrap_err();
        assert!(e.to_string().ends_with("symbolic link loop"), "{e}");
        let e = read_regular(&d.path().join("missing"), 100).unwrap_err();
        assert!(e.to_string().ends_with("file not found"), "{e}");
    }
}
