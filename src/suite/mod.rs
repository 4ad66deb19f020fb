//! The suite language: YAML files that expand into [`Case`]s.
//!
//! Parsing happens in two layers. Deserialization (`model`, with the
//! self-validating scalars of `scalar` and `units`) refuses anything
//! malformed at the exact line and column. `expand` then checks rules that
//! span fields (matrix entries defined, unique, overrides selecting cases)
//! and builds the matrix product; `locate` finds those errors in the text.

mod error;
mod expand;
mod locate;
mod model;
mod scalar;
mod text_scan;
mod units;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

pub use error::{Location, SuiteError};

use crate::case::Case;
use std::path::{Path, PathBuf};

/// Parses, validates and expands one suite file.
pub fn load_file(path: &Path) -> Result<Vec<Case>, SuiteError> {
    parse_str(path, &read(path)?)
}

/// The file as text; bytes that are not UTF-8 are refused where they are.
fn read(path: &Path) -> Result<String, SuiteError> {
    let bytes = std::fs::read(path).map_err(|source| SuiteError::Io {
        file: path.to_owned(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let text = String::from_utf8_lossy(valid);
        SuiteError::Invalid {
            file: path.to_owned(),
            location: Some(text_scan::location_after(&text)),
            field: String::new(),
            message: format!(
                "byte 0x{:02X} is not UTF-8; a suite is UTF-8 text",
                e.as_bytes()[valid.len()]
            ),
        }
    })
}

/// Every `*.yaml` / `*.yml` directly in `dir`, by file name, cases
/// concatenated.
pub fn load_dir(dir: &Path) -> Result<Vec<Case>, SuiteError> {
    load_paths(&[dir.to_owned()])
}

/// Suite files, and directories of them, in the order given; cases
/// concatenated. Suite names must differ: they prefix the test names.
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<Case>, SuiteError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            files.extend(suite_files(path)?);
        } else {
            files.push(path.clone());
        }
    }
    let mut cases: Vec<Case> = Vec::new();
    for file in &files {
        let text = read(file)?;
        let loaded = parse_str(file, &text)?;
        let suite = loaded.first().map(|c| &c.suite);
        if let Some(earlier) = cases.iter().find(|c| Some(&c.suite) == suite) {
            let same = earlier.file == *file;
            return Err(SuiteError::Invalid {
                location: locate::locate(&text, &locate::FieldPath::default().key("name")),
                field: "name".into(),
                message: format!(
                    "suite name `{}` is already used by {}{}",
                    earlier.suite,
                    earlier.file.display(),
                    if same {
                        " (the same file is given twice)"
                    } else {
                        ""
                    }
                ),
                file: file.clone(),
            });
        }
        cases.extend(loaded);
    }
    Ok(cases)
}

/// The suite files directly in `dir`, by file name.
fn suite_files(dir: &Path) -> Result<Vec<PathBuf>, SuiteError> {
    let io = |source| SuiteError::Io {
        file: dir.to_owned(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    files.retain(|p| {
        p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
    });
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Like [`load_file`] on `text`; `path` is only used in messages and
/// [`Case::file`].
pub fn parse_str(path: &Path, text: &str) -> Result<Vec<Case>, SuiteError> {
    let invalid = |location, field: String, message: String| SuiteError::Invalid {
        file: path.to_owned(),
        location,
        field,
        message,
    };
    // Editors on some systems start UTF-8 files with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some((location, message)) = text_scan::problem(text) {
        return Err(invalid(Some(location), String::new(), message));
    }
    if let Some((location, message)) = shape_problem(text) {
        return Err(invalid(location, String::new(), message.into()));
    }
    let suite = serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text))
        .map_err(|e| SuiteError::from_serde(path.to_owned(), e))?;
    expand::expand(suite, path)
        .map_err(|e| invalid(locate::locate(text, &e.path), e.path.to_string(), e.message))
}

/// The document's shape, checked first: serde_yaml would call an empty file
/// a "unit value", and place a wrong top-level type at its end.
fn shape_problem(text: &str) -> Option<(Option<Location>, &'static str)> {
    match serde_yaml::from_str(text) {
        Ok(serde_yaml::Value::Null) => Some((
            None,
            "the file is empty; a suite needs at least `name`, `matrix`, `workloads` and \
             `failure`",
        )),
        Ok(serde_yaml::Value::Mapping(_)) | Err(_) => None,
        Ok(_) => Some((
            locate::locate(text, &locate::FieldPath::default()),
            "the top level must be a mapping of suite keys (name, matrix, workloads, failure, ...)",
        )),
    }
}
