//! Files written once and then shared: CA keys, generated secrets.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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

/// Creates `dir` (and its parents) when missing, private to its owner (0700).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Refuses a secret file that group or others may read or write: whoever can read it
/// holds the secret, whoever can write it chooses it. The message names the fix.
pub fn check_private(path: &Path) -> io::Result<()> {
    refuse_mode(
        path,
        0o077,
        "is open to group or others; a secret must be private to its owner",
        "chmod 600",
    )
}

/// Refuses a directory of secrets that group or others may write: they could replace the
/// CA or the secrets in it.
pub fn check_not_shared_writable(dir: &Path) -> io::Result<()> {
    refuse_mode(
        dir,
        0o022,
        "can be written by group or others, who could replace the CA or its secrets",
        "chmod go-w",
    )
}

fn refuse_mode(path: &Path, forbidden: u32, problem: &str, fix: &str) -> io::Result<()> {
    let mode = fs::metadata(path)?.permissions().mode() & 0o777;
    if mode & forbidden == 0 {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{} {problem} (mode {mode:04o}): run `{fix} {}`",
            path.display(),
            path.display()
        ),
    ))
}

/// Reads a secret kept in a file: the first line, trimmed. The file must be private
/// ([`check_private`]).
pub fn read_secret(path: &Path) -> io::Result<String> {
    check_private(path)?;
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

#[cfg(test)]
mod permission_tests {
    use super::*;

    #[test]
    fn a_secret_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt.secret");
        fs::write(&path, "secret-secret-secret-secret-secret\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600") && err.contains("0644"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_secret(&path).is_ok());
    }
}
