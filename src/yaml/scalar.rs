//! Scalars that validate themselves while they are deserialized. An error
//! raised inside a visitor is pinned by serde_yaml to the line and column of
//! the offending value, which is why single-value rules live here rather than
//! in a check after parsing.

use super::error::did_you_mean;
use crate::case::Hypervisor;
use serde::de::{self, Deserializer, Expected, Unexpected, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// Why a scalar was refused.
pub(crate) enum Reject {
    /// Not even the right kind of value (string vs number): serde's standard
    /// "invalid type: ..., expected ..." message says it best.
    WrongType,
    /// The right kind of value, but not a valid one; the text says why.
    Invalid(String),
}

impl Reject {
    fn into_error<E: de::Error>(self, unexpected: Unexpected, expected: &dyn Expected) -> E {
        match self {
            Reject::WrongType => E::invalid_type(unexpected, expected),
            Reject::Invalid(message) => E::custom(message),
        }
    }
}

/// A value written as one YAML scalar. Each constructor defaults to refusing
/// its kind of input, so a type only implements what it accepts.
pub(crate) trait Scalar: Sized {
    /// Completes "expected ..." in error messages.
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result;

    fn from_str(_: &str) -> Result<Self, Reject> {
        Err(Reject::WrongType)
    }

    fn from_u64(_: u64) -> Result<Self, Reject> {
        Err(Reject::WrongType)
    }

    fn from_f64(_: f64) -> Result<Self, Reject> {
        Err(Reject::WrongType)
    }
}

pub(crate) fn deserialize<'de, T: Scalar, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    // deserialize_any: a plain `5` must arrive as a number, not as the string
    // "5", so that "durations need a unit" can be told apart from garbage.
    d.deserialize_any(ScalarVisitor(PhantomData))
}

/// `impl Deserialize` through [`Scalar`] for the listed (non-generic) types.
macro_rules! deserialize_scalar {
    ($($ty:ty),+ $(,)?) => {$(
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::yaml::scalar::deserialize(d)
            }
        }
    )+};
}
pub(crate) use deserialize_scalar;

/// Declares an enum written as one of a few words. (serde's derive would
/// word a type error in terms of YAML tags, which helps nobody.)
macro_rules! keyword_enum {
    (
        $(#[$doc:meta])* $vis:vis $name:ident($what:literal) {
            $($(#[$variant_doc:meta])* $variant:ident = $word:literal),+ $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $vis enum $name {
            $($(#[$variant_doc])* $variant),+
        }

        impl $crate::yaml::scalar::Scalar for $name {
            fn expecting(f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "one of: {}", [$($word),+].join(", "))
            }

            fn from_str(v: &str) -> Result<Self, $crate::yaml::scalar::Reject> {
                $crate::yaml::scalar::keyword(v, $what, &[$(($word, $name::$variant)),+])
            }
        }

        impl std::fmt::Display for $name {
            /// As written in the file.
            fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(match self { $($name::$variant => $word),+ })
            }
        }

        $crate::yaml::scalar::deserialize_scalar!($name);
    };
}
pub(crate) use keyword_enum;

/// The value of `words` named `v`, or an error listing them all.
pub(crate) fn keyword<T: Copy>(v: &str, what: &str, words: &[(&str, T)]) -> Result<T, Reject> {
    if let Some(&(_, value)) = words.iter().find(|(word, _)| *word == v) {
        return Ok(value);
    }
    let words: Vec<&str> = words.iter().map(|&(word, _)| word).collect();
    Err(Reject::Invalid(unknown(what, v, &words)))
}

/// "unknown {what} `v` (did you mean ...); valid: ...".
fn unknown(what: &str, v: &str, words: &[&str]) -> String {
    format!(
        "unknown {what} `{v}`{}; valid: {}",
        did_you_mean(v, words),
        words.join(", ")
    )
}

/// Why `row` is none of `rows` (the rows this build's backends run).
pub(crate) fn unknown_row(row: Hypervisor, rows: &[Hypervisor]) -> Option<String> {
    let names: Vec<&str> = rows.iter().map(|r| r.name()).collect();
    (!rows.contains(&row)).then(|| unknown("hypervisor", row.name(), &names))
}

struct ScalarVisitor<T>(PhantomData<T>);

impl<'de, T: Scalar> Visitor<'de> for ScalarVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        T::expecting(f)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        T::from_str(v).map_err(|r| r.into_error(Unexpected::Str(v), &self))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::from_u64(v).map_err(|r| r.into_error(Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        T::from_f64(v).map_err(|r| r.into_error(Unexpected::Float(v), &self))
    }
}

/// A name used in test names and as a map key: `[a-z0-9-]+`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ident(pub String);

impl Scalar for Ident {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a name made of a-z, 0-9 and -")
    }

    fn from_str(v: &str) -> Result<Self, Reject> {
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if !v.is_empty() && v.chars().all(valid) {
            Ok(Ident(v.to_owned()))
        } else {
            Err(Reject::Invalid(format!(
                "`{v}` is not a valid name: use only lowercase letters a-z, digits and `-`"
            )))
        }
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A row's name, as written; which rows exist is checked where the
/// backends are known (`suite::rules::check_rows`, `Inventory::checked`),
/// which refuse any other name with the valid ones.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct HypervisorName(pub Hypervisor);

impl Scalar for HypervisorName {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a hypervisor name")
    }

    fn from_str(v: &str) -> Result<Self, Reject> {
        Ok(HypervisorName(Hypervisor::named(v)))
    }
}

impl fmt::Display for HypervisorName {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.fmt(f)
    }
}

deserialize_scalar!(Ident, HypervisorName, Mtu);

/// Link MTU in bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Mtu(pub u32);

impl Scalar for Mtu {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an MTU in bytes from 68 to 65535")
    }

    fn from_u64(n: u64) -> Result<Self, Reject> {
        match n {
            68..=65535 => Ok(Mtu(n as u32)),
            // The study's "32 B MTU" is the classic mistake: it cannot be
            // configured on Linux, so point at what it really meant.
            0..=67 => Err(Reject::Invalid(format!(
                "mtu less than device minimum: {n} is below 68, Linux's minimum IPv4/Ethernet \
                 MTU; the study's 32-byte packets are expressed as a workload's \
                 `packets.size: 32`, not as an MTU"
            ))),
            _ => Err(Reject::Invalid(format!(
                "mtu greater than device maximum: {n} is above 65535"
            ))),
        }
    }
}

impl fmt::Display for Mtu {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.fmt(f)
    }
}
