//! Files written once and then shared: CA keys, generated secrets.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `contents` to `path` with `mode` unless the file already exists; `Ok(false)`
/// then, and the existing file is left as it was.
///
/// The file is written in full under a temporary name and linked into place, so that
/// another instance starting at the same moment sees either nothing or the whole file,
/// and exactly one of the two writers wins.
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> io::Result<bool> {
    with_temp(path, contents, mode, |temp| {
        match fs::hard_link(temp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })
}

/// Writes `contents` to `path` with `mode`, replacing what is there (atomically).
pub fn replace(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    with_temp(path, contents, mode, |temp| fs::rename(temp, path))
}

/// Writes the whole file under a hidden temporary name beside `path`, hands it to
/// `publish`, and removes whatever is left of it.
fn with_temp<T>(
    path: &Path,
    contents: &[u8],
    mode: u32,
    publish: impl FnOnce(&Path) -> io::Result<T>,
) -> io::Result<T> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut suffix = [0u8; 8];
    crate::crypto::fill_random(&mut suffix);
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        hex::encode(suffix)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        publish(&temp)
    })();
    let _ = fs::remove_file(&temp);
    result
}

/// Reads a secret kept in a file: the first line, trimmed.
pub fn read_secret(path: &Path) -> io::Result<String> {
    let text = fs::read_to_string(path)?;
    let secret = text.lines().next().unwrap_or("").trim().to_owned();
    if secret.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(secret)
}

/// Reads the secret in `path`, or creates it with `generate` (mode 0600). `true` in the
/// answer means this call created it.
pub fn read_or_create_secret(
    path: &Path,
    generate: impl FnOnce() -> String,
) -> io::Result<(String, bool)> {
    if !path.exists() {
        let secret = generate();
        if write_new(path, format!("{secret}\n").as_bytes(), 0o600)? {
            return Ok((secret, true));
        }
    }
    Ok((read_secret(path)?, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn write_new_never_overwrites_and_sets_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        assert!(write_new(&path, b"one", 0o600).unwrap());
        assert!(!write_new(&path, b"two", 0o600).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"one");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn a_created_secret_is_read_back_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt.secret");
        let (first, created) = read_or_create_secret(&path, || "abc".into()).unwrap();
        assert!(created);
        let (again, created) = read_or_create_secret(&path, || "other".into()).unwrap();
        assert!(!created);
        assert_eq!(first, again);
    }
}
