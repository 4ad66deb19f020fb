//! migsuite: declarative, repeatable live-migration performance suites.
//!
//! Data flows one way: suite (YAML) -> cases -> lab -> run -> measurements
//! -> verdict -> report.

pub mod case;
pub mod measure;
