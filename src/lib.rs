//! migsuite: declarative, repeatable live-migration performance suites.
//!
//! Data flows one way: suite (YAML) -> cases -> lab -> run -> measurements
//! -> verdict -> report.

pub mod ab;
pub mod backend;
pub mod baseline;
pub mod calibrate;
pub mod case;
pub mod cpu_pace;
pub mod derive;
pub mod failure;
pub mod goodput;
pub mod guest;
pub mod host_agent;
pub mod inventory;
pub mod lab;
pub mod landmarks;
pub mod markup;
pub mod measure;
pub mod metrics;
pub mod neighbours;
pub mod netdev;
pub mod observer;
pub mod pidfd;
pub mod procfs;
pub mod recorded_on;
pub mod rejudge;
pub mod report;
pub mod runner;
pub mod sampler;
pub mod session;
pub mod sh;
pub mod stats;
pub mod suite;
pub mod survey;
pub mod verdict;
pub mod wire;
pub mod yaml;
