//! The suite language: YAML files that expand into [`Case`]s.
//!
//! Parsing happens in two layers (`crate::yaml`). Deserialization
//! (`model`, with the self-validating scalars of `scalar` and `units`)
//! refuses anything malformed at the exact line and column. `expand` then
//! checks rules that span fields (matrix entries defined, unique, overrides
//! selecting cases) and builds the matrix product.

mod expand;
mod keyed;
mod model;
mod repeat;
mod rules;
mod scalar;
mod units;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

use crate::case::Case;
use crate::yaml::{Document, FieldPath, FileError, Invalid, Kind};
pub use repeat::{repeat_override, with_repeat, MAX_REPEAT};
use std::path::{Path, PathBuf};

const SUITE: Kind = Kind {
    noun: "suite",
    required: &["name", "matrix", "workloads", "failure"],
    example,
};

/// What a required section looks like, for the "missing" message.
fn example(field: &str) -> Option<&'static str> {
    Some(match field {
        "name" => "name: ci",
        "matrix" => "matrix: { hypervisor: [kvm-pv], mtu: [1500], workload: [idle] }",
        "workloads" => "workloads: { idle: {} }",
        "failure" => "failure: { kind: warned, after: 3s }",
        "failure.kind" => "kind: warned",
        "failure.after" => "after: 3s",
        _ => return None,
    })
}

/// Parses, validates and expands one suite file.
pub fn load_file(path: &Path) -> Result<Vec<Case>, FileError> {
    parse_str(path, &crate::yaml::read(path, &SUITE)?)
}

/// Every `*.yaml` / `*.yml` directly in `dir`, by file name, cases
/// concatenated.
pub fn load_dir(dir: &Path) -> Result<Vec<Case>, FileError> {
    load_paths(&[dir.to_owned()])
}

/// Suite files, and directories of them, in the order given; cases
/// concatenated. Suite names must differ: they prefix the test names.
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<Case>, FileError> {
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
        let text = crate::yaml::read(file, &SUITE)?;
        let loaded = parse_str(file, &text)?;
        let suite = loaded.first().map(|c| &c.suite);
        if let Some(earlier) = cases.iter().find(|c| Some(&c.suite) == suite) {
            let same = earlier.file == *file;
            return Err(Document::new(file, &text, &SUITE).refuse(Invalid {
                path: FieldPath::default().key("name"),
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
            }));
        }
        cases.extend(loaded);
    }
    Ok(cases)
}

/// The suite files directly in `dir`, by file name.
fn suite_files(dir: &Path) -> Result<Vec<PathBuf>, FileError> {
    let io = |source| FileError::Io {
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
pub fn parse_str(path: &Path, text: &str) -> Result<Vec<Case>, FileError> {
    let document = Document::new(path, text, &SUITE);
    expand::expand(document.parse()?, path).map_err(|e| document.refuse(e))
}
