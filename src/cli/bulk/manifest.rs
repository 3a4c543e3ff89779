//! `devices.csv` beside the summary: one line per enrolled device in `--out`, with its
//! certificate's serial and notAfter and where its files are, for the systems that take
//! the fleet over (inventory, broker ACLs, renewal planning).
//!
//! A line is appended only once the device's files are durable, so the manifest never
//! names a device that is not there. A device done but not yet listed (a crash between
//! the two, or a directory enrolled before manifests existed) is listed by the next run
//! when it skips that device.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::timefmt;

pub const MANIFEST_FILE: &str = "devices.csv";
const HEADER: &str = "device_id,serial,not_after,cert_file,key_file\n";

/// One device's line.
#[derive(Debug, Clone)]
pub struct Row {
    pub device_id: String,
    pub serial: String,
    pub not_after: String,
    pub cert_file: String,
    pub key_file: String,
}

impl Row {
    /// The line for `device_id`'s certificate `cert_pem`; `key_file` empty when this
    /// tool does not know where the key is (`--csr-dir`).
    pub fn new(
        device_id: &str,
        cert_pem: &str,
        cert_file: &Path,
        key_file: Option<&Path>,
    ) -> io::Result<Self> {
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|e| invalid(format!("{}: {e}", cert_file.display())))?;
        let cert = pem
            .parse_x509()
            .map_err(|e| invalid(format!("{}: {e}", cert_file.display())))?;
        let name = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        Ok(Self {
            device_id: device_id.to_owned(),
            // As `openssl x509 -serial` prints it: without the DER sign byte.
            serial: hex::encode_upper(trim_sign(cert.raw_serial())),
            not_after: timefmt::rfc3339(cert.validity().not_after.to_datetime()),
            cert_file: name(cert_file),
            key_file: key_file
                .map(|k| k.display().to_string())
                .unwrap_or_default(),
        })
    }
}

pub struct Manifest {
    path: PathBuf,
    listed: HashSet<String>,
    file: Option<File>,
}

impl Manifest {
    /// The manifest in `dir`, and the devices it lists already.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let listed = match std::fs::read_to_string(&path) {
            // Never append to a file of the operator's, such as the --csv list itself.
            Ok(text) if !text.is_empty() && !text.starts_with(HEADER) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} is not a manifest that bulk wrote (its first line is not `{}`): \
                         move it, or choose another --out",
                        path.display(),
                        HEADER.trim_end()
                    ),
                ));
            }
            Ok(text) => text
                .lines()
                .skip(1)
                .filter_map(|line| line.split(',').next())
                .map(str::to_owned)
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => HashSet::new(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            path,
            listed,
            file: None,
        })
    }

    pub fn lists(&self, device_id: &str) -> bool {
        self.listed.contains(device_id)
    }

    /// Appends these lines and syncs them.
    pub fn append<'a>(&mut self, rows: impl IntoIterator<Item = &'a Row>) -> io::Result<()> {
        let mut text = String::new();
        for row in rows {
            if self.listed.insert(row.device_id.clone()) {
                // Device ids, hex serials, RFC 3339 times and our file names hold no
                // comma or quote; a key path from --key-dir might.
                text.push_str(&format!(
                    "{},{},{},{},{}\n",
                    row.device_id,
                    row.serial,
                    row.not_after,
                    row.cert_file,
                    csv_field(&row.key_file)
                ));
            }
        }
        if text.is_empty() {
            return Ok(());
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let new = std::fs::metadata(&self.path).map_or(true, |m| m.len() == 0);
                let mut file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                if new {
                    file.write_all(HEADER.as_bytes())?;
                }
                self.file.insert(file)
            }
        };
        file.write_all(text.as_bytes())?;
        file.sync_data()
    }
}

fn trim_sign(serial: &[u8]) -> &[u8] {
    match serial {
        [0, rest @ ..] if !rest.is_empty() => rest,
        _ => serial,
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}
