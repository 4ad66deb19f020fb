//! The one error type of the project's YAML files, and the rewording of
//! serde's messages into ones that say what would have been valid.

use std::fmt;
use std::path::PathBuf;

/// Where in a file (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl From<serde_yaml::Location> for Location {
    fn from(l: serde_yaml::Location) -> Self {
        Location {
            line: l.line(),
            column: l.column(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `file:line:col: field.path: message`; parts that are unknown (or the
    /// root, for the field) are left out.
    #[error("{}{}{}{message}", file.display(), At(location), Field(field))]
    Invalid {
        file: PathBuf,
        location: Option<Location>,
        field: String,
        message: String,
    },
}

struct At<'a>(&'a Option<Location>);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.0 {
            Some(l) => write!(f, ":{}:{}: ", l.line, l.column),
            None => f.write_str(": "),
        }
    }
}

struct Field<'a>(&'a str);

impl fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.0 {
            "" => Ok(()),
            field => write!(f, "{field}: "),
        }
    }
}

impl FileError {
    /// From a failed deserialization: serde_yaml knows where, serde_path_to_error
    /// knows which field, and serde's message is reworded to help.
    /// `example` says what a missing required field looks like.
    pub(super) fn from_serde(
        file: PathBuf,
        err: serde_path_to_error::Error<serde_yaml::Error>,
        example: fn(&str) -> Option<&'static str>,
    ) -> Self {
        // "." is the root, "?" a key serde_path_to_error never saw (syntax
        // errors): neither names a field.
        let field = match err.path().to_string() {
            path if path == "." || path == "?" => String::new(),
            path => path,
        };
        let location = err.inner().location().map(Location::from);
        let message = bare_message(err.inner(), &field);
        let (field, message) = reword(field, message, example);
        FileError::Invalid {
            file,
            location,
            field,
            message,
        }
    }
}

/// serde_yaml's Display wraps the message as `<its path>: <message> at line
/// L column C`; both wrappings are ours to render, so peel them off. Its
/// path can stop short of `field` (which names an unknown key too), so try
/// each prefix of `field` that ends at a segment, longest first.
fn bare_message(err: &serde_yaml::Error, field: &str) -> String {
    let text = err.to_string();
    // libyaml's syntax errors carry the position mid-text, before context.
    let text = match err.location() {
        Some(l) => text.replacen(
            &format!(" at line {} column {}", l.line(), l.column()),
            "",
            1,
        ),
        None => text,
    };
    let ends = field.match_indices(['.', '[']).map(|(i, _)| i);
    ends.chain([field.len()])
        .filter(|&end| end > 0)
        .rev()
        .find_map(|end| text.strip_prefix(&format!("{}: ", &field[..end])))
        .unwrap_or(&text)
        .to_owned()
}

/// Turns serde's generic messages about fields into specific ones, naming
/// the field in the path. serde builds them from fixed templates (`unknown
/// field `x`, expected one of `a`, `b``), so reading them back is reliable.
fn reword(
    field: String,
    message: String,
    example: fn(&str) -> Option<&'static str>,
) -> (String, String) {
    let quoted = backquoted(&message);
    let Some((&first, expected)) = quoted.split_first() else {
        return (field, message);
    };
    if message.starts_with("missing field") {
        let field = join(&field, first);
        let example = example(&field)
            .map(|e| format!(", e.g. `{e}`"))
            .unwrap_or_default();
        return (
            field,
            format!("required field `{first}` is missing{example}"),
        );
    }
    if message.starts_with("duplicate field") {
        return (
            join(&field, first),
            format!("`{first}` is given twice; keep one"),
        );
    }
    if !message.starts_with("unknown field") {
        return (field, message);
    }
    let message = format!(
        "unknown field `{first}`{}; valid fields: {}",
        did_you_mean(first, expected),
        expected.join(", ")
    );
    (field, message)
}

/// The words between backquotes, in order.
fn backquoted(message: &str) -> Vec<&str> {
    message.split('`').skip(1).step_by(2).collect()
}

fn join(parent: &str, key: &str) -> String {
    match parent {
        "" => key.to_owned(),
        parent => format!("{parent}.{key}"),
    }
}

/// `" (did you mean `x`?)"` for the closest of `candidates`, if one is close.
pub(crate) fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_only_close_names() {
        let keys = ["downtime", "guest_downtime", "total_time"];
        assert_eq!(
            did_you_mean("dowtime", &keys),
            " (did you mean `downtime`?)"
        );
        assert_eq!(did_you_mean("colour", &keys), "");
    }

    fn example(field: &str) -> Option<&'static str> {
        (field == "failure.after").then_some("after: 3s")
    }

    #[test]
    fn rewords_serde_field_messages() {
        let (field, message) = reword(
            "bounds.dowtime".into(),
            "unknown field `dowtime`, expected one of `apply_to`, `downtime`".into(),
            example,
        );
        assert_eq!(field, "bounds.dowtime");
        assert_eq!(
            message,
            "unknown field `dowtime` (did you mean `downtime`?); valid fields: apply_to, downtime"
        );
        let (field, message) = reword("failure".into(), "missing field `after`".into(), example);
        assert_eq!(field, "failure.after");
        assert_eq!(
            message,
            "required field `after` is missing, e.g. `after: 3s`"
        );
        let (field, message) = reword(String::new(), "duplicate field `repeat`".into(), example);
        assert_eq!(
            (field.as_str(), message.as_str()),
            ("repeat", "`repeat` is given twice; keep one")
        );
    }

    #[test]
    fn displays_with_and_without_location() {
        let error = |location, field: &str| FileError::Invalid {
            file: "s.yaml".into(),
            location,
            field: field.into(),
            message: "bad".into(),
        };
        let at = Some(Location { line: 3, column: 7 });
        assert_eq!(error(at, "a.b").to_string(), "s.yaml:3:7: a.b: bad");
        assert_eq!(error(None, "a.b").to_string(), "s.yaml: a.b: bad");
        assert_eq!(error(None, "").to_string(), "s.yaml: bad");
    }
}
