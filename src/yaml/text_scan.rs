//! Checks on the raw text, before the YAML parser sees it: what the parser
//! would report without a place (a second document, control bytes) or only
//! after a long time (deep flow nesting takes it quadratic time).

use super::error::Location;

/// Deeper than any of our files needs (suites nest four levels), far below
/// the depth at which parsing slows down.
const MAX_NESTING: usize = 64;

/// The first problem of `text`, where it is; `noun` is what the file is.
pub(super) fn problem(text: &str, noun: &str) -> Option<(Location, String)> {
    let mut depth = 0usize;
    let mut content_seen = false;
    for (l, line) in text.lines().enumerate() {
        let at = |column: usize| Location {
            line: l + 1,
            column,
        };
        let marker = ["---", "..."].iter().any(|m| {
            line.strip_prefix(m)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
        });
        // A directive (`%YAML`, `%TAG`) after content begins another document too.
        let directive = line.starts_with('%');
        if (marker || directive) && content_seen {
            return Some((
                at(1),
                format!(
                    "a second YAML document starts here; a {noun} file holds one document \
                     (put another {noun} in a file of its own)"
                ),
            ));
        }
        let trimmed = line.trim_start();
        content_seen |= !marker && !trimmed.is_empty() && !trimmed.starts_with(['#', '%']);
        for (c, ch) in line.chars().enumerate() {
            match ch {
                '\t' | '\r' => {}
                ch if ch.is_control() => {
                    return Some((
                        at(c + 1),
                        format!(
                            "control character U+{:04X}; a {noun} is YAML text",
                            u32::from(ch)
                        ),
                    ))
                }
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Some((
                            at(c + 1),
                            format!("brackets nested deeper than {MAX_NESTING} levels; a {noun} needs a few"),
                        ));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    None
}

/// Where the text after `prefix` begins (1-based line and column).
pub(super) fn location_after(prefix: &str) -> Location {
    let line = prefix.matches('\n').count() + 1;
    let column = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Location { line, column }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Option<(usize, usize)> {
        problem(text, "suite").map(|(l, _)| (l.line, l.column))
    }

    #[test]
    fn a_leading_document_marker_is_fine_a_second_is_not() {
        assert_eq!(at("---\nname: x\n"), None);
        assert_eq!(at("# c\n---\nname: x\n"), None);
        assert_eq!(at("name: x\n---\nname: y\n"), Some((2, 1)));
        assert_eq!(at("name: x\n...\n"), Some((2, 1)));
        assert_eq!(at("name: x\n---x\n"), None);
        assert_eq!(at("%YAML 1.2\n---\nname: x\n"), None);
        assert_eq!(at("name: x\n%YAML 1.2\n"), Some((2, 1)));
    }

    #[test]
    fn control_characters_and_nesting_are_placed() {
        assert_eq!(at("name: a\x00b\n"), Some((1, 8)));
        assert_eq!(at("a:\tb\r\n"), None);
        let deep = format!("x: {}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(at(&deep), Some((1, 68)));
        let fine = format!("x: {}{}", "[".repeat(64), "]".repeat(64));
        assert_eq!(at(&fine), None);
    }

    #[test]
    fn locations_after_a_prefix() {
        let l = location_after("ab\ncd");
        assert_eq!((l.line, l.column), (2, 3));
        let l = location_after("");
        assert_eq!((l.line, l.column), (1, 1));
    }
}
