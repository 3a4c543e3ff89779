//! The devices `bulk` enrolls: generated ids, or a CSV.
//!
//! A CSV's first line is a header when one of its cells is `device_id` (any case, any
//! column; a `device_key` column then gives derived-mode keys). With `--no-header` every
//! line is a device, its id in the first column. Any other first line is refused: it
//! could be a header without `device_id` or a device, and a wrong guess either enrolls
//! the header as a device or leaves a device out, so the operator says which.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Context;

/// One device to enroll, as the list gives it.
#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub id: String,
    /// Its own key (base64url), for `derived` mode, from a `device_key` CSV column.
    pub device_key: Option<String>,
}

/// Where the list comes from.
pub enum Source<'a> {
    Count { count: usize, prefix: &'a str },
    Csv { path: &'a Path, no_header: bool },
}

/// The devices to enroll, each id once, and the ids that came again (skipped).
pub fn list(source: Source<'_>) -> anyhow::Result<(Vec<DeviceRow>, Vec<String>)> {
    let rows = match source {
        Source::Count { count, prefix } => (1..=count)
            .map(|i| DeviceRow {
                id: format!("{prefix}{i:06}"),
                device_key: None,
            })
            .collect(),
        Source::Csv { path, no_header } => read_csv(path, no_header)?,
    };
    let mut seen = HashSet::new();
    let (mut devices, mut duplicates) = (Vec::new(), Vec::new());
    for row in rows {
        if seen.insert(row.id.clone()) {
            devices.push(row);
        } else {
            duplicates.push(row.id);
        }
    }
    Ok((devices, duplicates))
}

fn read_csv(path: &Path, no_header: bool) -> anyhow::Result<Vec<DeviceRow>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut records = reader.records();
    let not_csv = || format!("{} is not CSV", path.display());
    let Some(first) = records.next() else {
        return Ok(Vec::new());
    };
    let first: Vec<String> = first
        .with_context(not_csv)?
        .iter()
        // A spreadsheet's UTF-8 byte order mark would hide the header's first name.
        .map(|cell| cell.trim_start_matches('\u{feff}').to_owned())
        .collect();
    let column = |name: &str| first.iter().position(|c| c.eq_ignore_ascii_case(name));
    let (id_column, key_column, mut rows) = match (column("device_id"), no_header) {
        (Some(_), true) => anyhow::bail!(
            "{}: --no-header, but the first line names a device_id column; drop --no-header",
            path.display()
        ),
        (Some(id), false) => (id, column("device_key"), Vec::new()),
        (None, true) => (0, None, row(&first, 0, None).into_iter().collect()),
        (None, false) => anyhow::bail!(
            "{}: the first line ({:?}) names no device_id column: add a header line \
             `device_id` (with `device_key` for derived-mode keys), or pass --no-header \
             if every line is a device",
            path.display(),
            first.join(",")
        ),
    };
    for record in records {
        let record: Vec<String> = record
            .with_context(not_csv)?
            .iter()
            .map(str::to_owned)
            .collect();
        rows.extend(row(&record, id_column, key_column));
    }
    Ok(rows)
}

fn row(cells: &[String], id_column: usize, key_column: Option<usize>) -> Option<DeviceRow> {
    let id = cells.get(id_column).filter(|id| !id.is_empty())?;
    Some(DeviceRow {
        id: id.clone(),
        device_key: key_column
            .and_then(|c| cells.get(c))
            .filter(|k| !k.is_empty())
            .cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(text: &str, no_header: bool) -> anyhow::Result<Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.csv");
        std::fs::write(&path, text).unwrap();
        Ok(read_csv(&path, no_header)?
            .into_iter()
            .map(|r| r.id)
            .collect())
    }

    #[test]
    fn a_header_is_never_enrolled_as_a_device() {
        assert_eq!(ids("Device_ID\na\nb\n", false).unwrap(), ["a", "b"]);
        assert_eq!(ids("\u{feff}device_id\na\n", false).unwrap(), ["a"]);
        assert_eq!(ids("model,DEVICE_ID\nx,a\n", false).unwrap(), ["a"]);
        assert_eq!(ids("a\nb\n", true).unwrap(), ["a", "b"]);
        let refused = ids("serial\na\n", false).unwrap_err().to_string();
        assert!(
            refused.contains("--no-header") && refused.contains("device_id"),
            "{refused}"
        );
        assert!(ids("device_id\na\n", true).is_err());
        assert!(ids("", false).unwrap().is_empty());
    }
}
