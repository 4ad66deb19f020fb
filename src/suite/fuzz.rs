//! Mutated suites thrown at the parser: it must never panic, and every
//! refusal must say where in the file it is (the empty file aside, which
//! has no place to point at). Bounded and seeded, so it runs the same 3000
//! inputs in every `cargo test`; `MIGSUITE_FUZZ_SEED` and
//! `MIGSUITE_FUZZ_INPUTS` explore further.

use super::{parse_str, FileError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRng, TestRunner};
use std::path::Path;

/// Inputs per run; each is a shipped suite after several mutations.
const INPUTS: u32 = 3000;

const SEEDS: [&str; 3] = [
    include_str!("../../suites/ci.yaml"),
    include_str!("../../suites/study.yaml"),
    include_str!("../../suites/ci-postcopy.yaml"),
];

/// Pieces a hostile or careless author might put anywhere.
const FRAGMENTS: &[&str] = &[
    "[",
    "]",
    "{",
    "}",
    ":",
    ": ",
    "- ",
    "\n",
    "\n  ",
    "#",
    "'",
    "\"",
    ",",
    "&a ",
    "*a",
    "!!str ",
    "!fail ",
    "---\n",
    "...",
    "|\n",
    ">\n",
    "~",
    "null",
    "0s",
    "0ms",
    "1e999s",
    "-1",
    "65507",
    "999999999999999999999999",
    "1000%",
    "0%",
    "gate",
    "openvz",
    "xen-hvm",
    "stop-and-copy",
    "postcopy",
    "\u{feff}",
    "\t",
    "\u{0}",
    "\u{85}",
    "é",
    "<<: *a",
    "? ",
    "%YAML 1.2\n",
];

#[derive(Clone, Debug)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, &'static str),
    DuplicateLine(usize),
    SwapLines(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..40usize).prop_map(|(at, len)| Mutation::Delete(at, len)),
        (any::<usize>(), proptest::sample::select(FRAGMENTS))
            .prop_map(|(at, f)| Mutation::Insert(at, f)),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
    ]
}

/// `at` moved back to a char boundary of `text`.
fn boundary(text: &str, at: usize) -> usize {
    text.floor_char_boundary(at % (text.len() + 1))
}

fn apply(text: &mut String, m: &Mutation) {
    match *m {
        Mutation::Delete(at, len) => {
            let start = boundary(text, at);
            let end = text.floor_char_boundary((start + len).min(text.len()));
            text.replace_range(start..end, "");
        }
        Mutation::Insert(at, fragment) => text.insert_str(boundary(text, at), fragment),
        Mutation::DuplicateLine(i) | Mutation::SwapLines(i, _) => {
            let mut lines: Vec<&str> = text.split('\n').collect();
            let i = i % lines.len();
            match *m {
                Mutation::SwapLines(_, j) => {
                    let j = j % lines.len();
                    lines.swap(i, j);
                }
                _ => lines.insert(i, lines[i]),
            }
            *text = lines.join("\n");
        }
    }
}

#[test]
fn mutated_suites_never_panic_and_every_refusal_is_placed() {
    let config = Config {
        cases: std::env::var("MIGSUITE_FUZZ_INPUTS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(INPUTS),
        failure_persistence: None,
        ..Config::default()
    };
    // The same inputs on every run, so that CI never fails by the draw;
    // MIGSUITE_FUZZ_SEED=<n> explores others.
    let seed: u64 = std::env::var("MIGSUITE_FUZZ_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(config.rng_algorithm, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let input = (
        proptest::sample::select(&SEEDS[..]),
        proptest::collection::vec(mutation(), 1..6),
    );
    runner
        .run(&input, |(seed, mutations)| {
            let mut text = seed.to_owned();
            for m in &mutations {
                apply(&mut text, m);
            }
            match parse_str(Path::new("fuzz.yaml"), &text) {
                Ok(cases) => prop_assert!(!cases.is_empty()),
                Err(FileError::Invalid {
                    location, message, ..
                }) => prop_assert!(
                    location.is_some() || message.starts_with("the file is empty"),
                    "no location for {message:?} in\n{text}"
                ),
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
            Ok(())
        })
        .unwrap();
}
