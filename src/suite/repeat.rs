//! Runs per case instead of the suites' `repeat`: `migsuite run --repeat`,
//! else `MIGSUITE_REPEAT` (read by `run` and `cargo test`), e.g. five runs
//! per case to record a lab's baselines. Either means the same as a
//! suite's `repeat` and takes the same values.

use crate::case::Case;
use std::ffi::OsStr;

/// The most runs a case may have, here as in a suite's `repeat`.
pub const MAX_REPEAT: u32 = 100;
/// The environment variable that sets the runs per case.
const REPEAT_VARIABLE: &str = "MIGSUITE_REPEAT";

/// The runs per case `option` gives (`run --repeat`) or, without it,
/// `MIGSUITE_REPEAT`; None: each suite's own. Err: the variable is not a
/// count from 1 to [`MAX_REPEAT`].
pub fn repeat_override(option: Option<u32>) -> Result<Option<u32>, String> {
    chosen(option, std::env::var_os(REPEAT_VARIABLE).as_deref())
}

fn chosen(option: Option<u32>, variable: Option<&OsStr>) -> Result<Option<u32>, String> {
    match option {
        Some(n) => Ok(Some(n)),
        None => variable.map(count).transpose(),
    }
}

fn count(value: &OsStr) -> Result<u32, String> {
    let text = value.to_string_lossy();
    match text.parse() {
        Ok(n) if (1..=MAX_REPEAT).contains(&n) => Ok(n),
        _ => Err(format!(
            "{REPEAT_VARIABLE}={text}: the runs per case must be a count from 1 to {MAX_REPEAT}, \
             as a suite's `repeat`"
        )),
    }
}

/// `cases`, each run `repeat` times where given instead of its suite's
/// `repeat`.
pub fn with_repeat(cases: Vec<Case>, repeat: Option<u32>) -> Vec<Case> {
    cases
        .into_iter()
        .map(|c| Case {
            repeat: repeat.unwrap_or(c.repeat),
            ..c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::neither(None, None, Ok(None))]
    #[case::variable(None, Some("5"), Ok(Some(5)))]
    #[case::option_wins(Some(2), Some("5"), Ok(Some(2)))]
    #[case::option_alone(Some(2), None, Ok(Some(2)))]
    #[case::most(None, Some("100"), Ok(Some(100)))]
    fn the_option_else_the_variable(
        #[case] option: Option<u32>,
        #[case] variable: Option<&str>,
        #[case] runs: Result<Option<u32>, String>,
    ) {
        assert_eq!(chosen(option, variable.map(OsStr::new)), runs);
    }

    #[rstest]
    #[case::zero("0")]
    #[case::too_many("101")]
    #[case::a_word("five")]
    #[case::empty("")]
    #[case::spaced(" 5")]
    fn a_variable_out_of_range_is_refused(#[case] value: &str) {
        assert_eq!(
            chosen(None, Some(OsStr::new(value))),
            Err(format!(
                "MIGSUITE_REPEAT={value}: the runs per case must be a count from 1 to 100, as a \
                 suite's `repeat`"
            ))
        );
    }
}
