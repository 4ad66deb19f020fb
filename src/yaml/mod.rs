//! What the project's YAML files (suites, lab inventories) share: reading
//! them, refusing what is malformed at its line and column with the field
//! path and what would be valid, and the scalars that check themselves.
//!
//! A file goes through two layers. Deserialization (serde structs with the
//! self-validating scalars of `scalar`) refuses anything malformed where it
//! is written. Rules that span fields run afterwards and report an
//! [`Invalid`] at a [`FieldPath`]; [`Document::refuse`] finds that path in
//! the text (`locate`).

mod error;
mod locate;
pub(crate) mod scalar;
mod text_scan;

pub(crate) use error::did_you_mean;
pub use error::{FileError, Location};
pub(crate) use locate::FieldPath;

use serde::de::DeserializeOwned;
use std::fmt::Display;
use std::path::Path;

/// A kind of file, as its messages speak of it.
pub(crate) struct Kind {
    /// What one file is: "suite", "lab inventory".
    pub noun: &'static str,
    /// The top-level keys a file cannot do without.
    pub required: &'static [&'static str],
    /// What a missing required field (by its path) looks like, e.g.
    /// `name: ci`.
    pub example: fn(&str) -> Option<&'static str>,
}

/// A rule broken after parsing; [`Document::refuse`] finds `path` in the text.
#[derive(Debug)]
pub(crate) struct Invalid {
    pub path: FieldPath,
    pub message: String,
}

/// The text of `path`; bytes that are not UTF-8 are refused where they are.
pub(crate) fn read(path: &Path, kind: &Kind) -> Result<String, FileError> {
    let bytes = std::fs::read(path).map_err(|source| FileError::Io {
        file: path.to_owned(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let text = String::from_utf8_lossy(valid);
        FileError::Invalid {
            file: path.to_owned(),
            location: Some(text_scan::location_after(&text)),
            field: String::new(),
            message: format!(
                "byte 0x{:02X} is not UTF-8; a {} is UTF-8 text",
                e.as_bytes()[valid.len()],
                kind.noun
            ),
        }
    })
}

/// One file's text, to parse and to find fields in.
pub(crate) struct Document<'a> {
    file: &'a Path,
    text: &'a str,
    kind: &'a Kind,
}

impl<'a> Document<'a> {
    /// `file` is only used in messages.
    pub fn new(file: &'a Path, text: &'a str, kind: &'a Kind) -> Self {
        // Editors on some systems start UTF-8 files with a byte-order mark.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        Document { file, text, kind }
    }

    /// The file as a `T`, or its first problem, placed.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, FileError> {
        if let Some((location, message)) = text_scan::problem(self.text, self.kind.noun) {
            return Err(self.error(Some(location), String::new(), message));
        }
        if let Some((location, message)) = self.shape_problem() {
            return Err(self.error(location, String::new(), message));
        }
        serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(self.text))
            .map_err(|e| FileError::from_serde(self.file.to_owned(), e, self.kind.example))
    }

    /// `broken` as an error at its field's place in the text.
    pub fn refuse(&self, broken: Invalid) -> FileError {
        self.error(
            locate::locate(self.text, &broken.path),
            broken.path.to_string(),
            broken.message,
        )
    }

    fn error(&self, location: Option<Location>, field: String, message: String) -> FileError {
        FileError::Invalid {
            file: self.file.to_owned(),
            location,
            field,
            message,
        }
    }

    /// The document's shape, checked first: serde_yaml would call an empty
    /// file a "unit value", and place a wrong top-level type at its end.
    fn shape_problem(&self) -> Option<(Option<Location>, String)> {
        let Kind { noun, required, .. } = self.kind;
        match serde_yaml::from_str(self.text) {
            Ok(serde_yaml::Value::Null) => Some((
                None,
                format!(
                    "the file is empty; a {noun} needs at least {}",
                    and_list(required)
                ),
            )),
            Ok(serde_yaml::Value::Mapping(_)) | Err(_) => None,
            Ok(_) => Some((
                locate::locate(self.text, &FieldPath::default()),
                format!(
                    "the top level must be a mapping of {noun} keys ({}, ...)",
                    required.join(", ")
                ),
            )),
        }
    }
}

/// "`a`, `b` and `c`".
fn and_list(keys: &[&str]) -> String {
    let quoted: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

/// A list that must name at least one value, none twice; `why` says what
/// a repeat would break.
pub(crate) fn distinct<T: PartialEq + Display>(
    items: &[T],
    path: FieldPath,
    why: &str,
) -> Result<(), Invalid> {
    if items.is_empty() {
        return Err(Invalid {
            path,
            message: "must list at least one value".into(),
        });
    }
    for (i, item) in items.iter().enumerate() {
        if let Some(first) = items[..i].iter().position(|x| x == item) {
            return Err(Invalid {
                message: format!("`{item}` is listed twice (also as {path}[{first}]); {why}"),
                path: path.index(i),
            });
        }
    }
    Ok(())
}

/// "a, b, c", for messages that list what would be valid.
pub(crate) fn list<T: Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_keys_in_prose() {
        assert_eq!(and_list(&["a"]), "`a`");
        assert_eq!(and_list(&["a", "b", "c"]), "`a`, `b` and `c`");
    }
}
