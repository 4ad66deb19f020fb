//! Field paths (`matrix.mtu[1]`) and where they are in the YAML text.
//!
//! Checks that span several fields run after deserialization, when spans are
//! gone. Rather than guessing lines by scanning text, walk the document again
//! along the path and fail on purpose at the target node: serde_yaml pins
//! that error to the node's exact line and column.

use super::error::Location;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct FieldPath(Vec<Segment>);

impl FieldPath {
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.0.push(Segment::Key(key.into()));
        self
    }

    pub fn index(mut self, index: usize) -> Self {
        self.0.push(Segment::Index(index));
        self
    }
}

/// `a.b[2].c`; the root is the empty string.
impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Line and column of the node at `path`, if the text has one.
pub(super) fn locate(text: &str, path: &FieldPath) -> Option<Location> {
    Seek(&path.0)
        .deserialize(serde_yaml::Deserializer::from_str(text))
        .err()
        .and_then(|e| e.location())
        .map(Location::from)
}

/// Walks down `.0`; errors (with a position) when it is used up.
struct Seek<'a>(&'a [Segment]);

impl Seek<'_> {
    fn arrived<E: de::Error>(&self) -> Result<(), E> {
        if self.0.is_empty() {
            Err(E::custom("here"))
        } else {
            Ok(())
        }
    }
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.arrived()?;
        let (Segment::Key(wanted), rest) = (&self.0[0], &self.0[1..]) else {
            return Ok(());
        };
        // Read to the end either way: serde_yaml reports a mapping or
        // sequence left half-read as an error, which would look like a find.
        while let Some(key) = map.next_key::<serde_yaml::Value>()? {
            if key.as_str() == Some(wanted) {
                map.next_value_seed(Seek(rest))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.arrived()?;
        let (Segment::Index(wanted), rest) = (&self.0[0], &self.0[1..]) else {
            return Ok(());
        };
        for i in 0.. {
            let more = if i == *wanted {
                seq.next_element_seed(Seek(rest))?.is_some()
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                break;
            }
        }
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.arrived()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.arrived()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.arrived()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.arrived()
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.arrived()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.arrived()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
name: x
matrix:
  mtu: [1500, 576]
  workload:
    - game
    - idle
workloads: { game: {} }
";

    fn at(path: FieldPath) -> Option<(usize, usize)> {
        locate(TEXT, &path).map(|l| (l.line, l.column))
    }

    #[test]
    fn finds_nodes_in_block_and_flow_style() {
        let matrix = FieldPath::default().key("matrix");
        assert_eq!(at(matrix.clone().key("mtu").index(1)), Some((3, 15)));
        assert_eq!(at(matrix.clone().key("workload").index(1)), Some((6, 7)));
        assert_eq!(at(matrix.key("workload")), Some((5, 5)));
        assert_eq!(
            at(FieldPath::default().key("workloads").key("game")),
            Some((7, 20))
        );
    }

    #[test]
    fn finds_the_root() {
        assert_eq!(at(FieldPath::default()), Some((1, 1)));
        let seq = locate("- a\n- b\n", &FieldPath::default()).map(|l| (l.line, l.column));
        assert_eq!(seq, Some((1, 1)));
    }

    #[test]
    fn missing_nodes_have_no_location() {
        let matrix = FieldPath::default().key("matrix");
        assert_eq!(at(matrix.clone().key("mtu").index(2)), None);
        assert_eq!(at(matrix.key("hypervisor")), None);
        assert_eq!(at(FieldPath::default().key("name").key("x")), None);
    }

    #[test]
    fn displays_like_serde_path_to_error() {
        let path = FieldPath::default().key("overrides").index(0).key("when");
        assert_eq!(path.to_string(), "overrides[0].when");
    }
}
