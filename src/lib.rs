//! migsuite: declarative, repeatable live-migration performance suites.
//!
//! Data flows one way: suite (YAML) -> cases -> lab -> run -> measurements
//! -> verdict -> report.

pub mod backend;
pub mod baseline;
pub mod metrics;
pub mod landmarks;
pub mod report;
pub mod stats;
pub mod verdict;
pub mod case;
pub mod failure;
pub mod guest;
pub mod lab;
pub mod measure;
pub mod observer;
pub mod runner;
pub mod sampler;
pub mod session;
pub mod suite;
pub mod sh;
pub mod wire;
