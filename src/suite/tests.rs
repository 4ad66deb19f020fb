//! The language end to end: shipped suites load, bad suites are refused with
//! a message that says where, which field, and what would be valid.

use super::*;
use crate::case::{
    AccelChoice, Aggregate, Bounds, Expect, FailureSpec, Faults, GuestSpec, Hypervisor, LinkSpec,
    MigrationSpec, PacketSize, SamplingSpec, Strategy, Tier, Topology, Workload,
};
use rstest::rstest;
use std::collections::BTreeMap;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn parse(text: &str) -> Result<Vec<Case>, FileError> {
    parse_str(Path::new("t.yaml"), text)
}

/// Figures keyed by metric, as a case holds its bounds and noise.
fn keyed(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
}

/// Every gated metric's default noise threshold, but for `given`: what a
/// case holds, whichever metrics are gated.
fn default_noise_but(given: &[(&str, f64)]) -> BTreeMap<String, f64> {
    let defaults = crate::metrics::METRICS
        .iter()
        .filter_map(|m| Some((m.key.to_string(), m.default_noise?)));
    defaults.chain(keyed(given)).collect()
}

fn limit(bounds: &Bounds, metric: &str) -> Option<f64> {
    bounds.limits.get(metric).copied()
}

const MINIMAL: &str = "
name: tiny
matrix: { hypervisor: [kvm-pv], mtu: [1500], workload: [idle] }
workloads: { idle: {} }
failure: { kind: warned, after: 3s }
";

#[rstest]
#[case::mtu_below_minimum(
    "mtu-below-minimum.yaml:5:15: matrix.mtu[1]: ",
    &["mtu less than device minimum", "68", "`packets.size: 32`, not as an MTU"],
)]
#[case::unknown_hypervisor(
    "unknown-hypervisor.yaml:4:24: matrix.hypervisor[1]: ",
    // (Rows a build adds come after the study's.)
    &["unknown hypervisor `vmware`; valid: xen-pv, xen-hvm, openvz, kvm-fv, kvm-pv"],
)]
#[case::misspelt_bound(
    "misspelt-bound.yaml:13:3: bounds.dowtime: ",
    &["unknown bound `dowtime`", "did you mean `downtime`?", "apply_to, total_time, downtime"],
)]
#[case::bound_not_a_percentage(
    "bound-not-a-percentage.yaml:12:13: bounds.peak_cpu: ",
    &["`lots` is not a percentage like 250%"],
)]
#[case::bound_without_unit(
    "bound-without-unit.yaml:12:13: bounds.downtime: ",
    &["`5` has no unit", "5ms or 5s"],
)]
#[case::bound_is_a_list(
    "bound-is-a-list.yaml:12:15: bounds.total_time: ",
    &["invalid type: sequence", "expected a duration like 500ms, 2s"],
)]
#[case::undefined_workload(
    "undefined-workload.yaml:8:7: matrix.workload[1]: ",
    &["workload `video` is not defined", "defined: game"],
)]
#[case::empty("empty.yaml: ", &["the file is empty", "`name`, `matrix`, `workloads` and `failure`"])]
#[case::not_a_mapping("not-a-mapping.yaml:2:1: ", &["top level must be a mapping"])]
#[case::missing_name(
    "missing-name.yaml:2:1: name: ",
    &["required field `name` is missing", "e.g. `name: ci`"],
)]
#[case::missing_failure(
    "missing-failure.yaml:2:1: failure: ",
    &["required field `failure` is missing", "`failure: { kind: warned, after: 3s }`"],
)]
#[case::duplicate_mtu(
    "duplicate-mtu.yaml:5:20: matrix.mtu[2]: ",
    &["`1500` is listed twice", "matrix.mtu[0]"],
)]
#[case::duplicate_hypervisor(
    "duplicate-hypervisor.yaml:4:32: matrix.hypervisor[2]: ",
    &["`kvm-pv` is listed twice"],
)]
#[case::empty_matrix_list(
    "empty-matrix-list.yaml:4:15: matrix.hypervisor: ",
    &["must list at least one value"],
)]
#[case::override_matches_nothing(
    "override-matches-nothing.yaml:14:25: overrides[1].when.hypervisor: ",
    &["`xen-pv` is not in matrix.hypervisor (kvm-fv, kvm-pv)", "matches no case"],
)]
#[case::size_in_megabytes(
    "size-in-megabytes.yaml:12:11: guest.memory: ",
    &["e.g. 512MiB", "MB and GB are not accepted"],
)]
#[case::unknown_strategy(
    "unknown-strategy.yaml:12:13: migration.strategy: ",
    &["unknown strategy `pre-copy` (did you mean `precopy`?)", "valid: precopy, postcopy, auto-converge, stop-and-copy"],
)]
#[case::unknown_failure_kind(
    "unknown-failure-kind.yaml:10:18: failure.kind: ",
    &["unknown failure kind `crash`; valid: warned"],
)]
#[case::dirty_larger_than_guest(
    "dirty-larger-than-guest.yaml:9:20: workloads.game.dirty.size: ",
    &["does not fit in the guest's 16MiB"],
)]
#[case::sampling_too_fine(
    "sampling-too-fine.yaml:11:23: sampling.interval: ",
    &["`5ms` is out of range: must be from 10ms to 1m"],
)]
#[case::bad_name("bad-name.yaml:2:7: name: ", &["`My_Suite` is not a valid name", "a-z"])]
#[case::repeat_zero("repeat-zero.yaml:11:9: repeat: ", &["must be from 1 to 100, got 0"])]
#[case::link_rate_without_unit(
    "link-rate-without-unit.yaml:11:15: link.rate: ",
    &["like 100mbit or 100gbit"],
)]
#[case::bad_expect("bad-expect.yaml:11:20: expect.pass: ", &["unknown field `pass`", "fail"])]
#[case::noise_not_a_percentage(
    "noise-not-a-percentage.yaml:12:24: snapshot.noise.throughput: ",
    &["is not a percentage like 250%"],
)]
#[case::strategy_not_offered(
    "strategy-not-offered.yaml:10:24: migration.strategy: ",
    &["openvz cannot migrate by auto-converge", "offers precopy, stop-and-copy, postcopy"],
)]
#[case::strategy_by_override(
    "strategy-by-override.yaml:9:28: overrides[0].migration.strategy: ",
    &["xen-pv cannot migrate by postcopy", "offers precopy"],
)]
#[case::one_host_for_kvm(
    "one-host-for-kvm.yaml:10:28: overrides[1].migration.topology: ",
    &["kvm-pv cannot migrate to the host it runs on", "only xen-pv and xen-hvm"],
)]
#[case::share_of_link_on_one_host(
    "share-of-link-on-one-host.yaml:4:39: workloads.game.dirty.rate: ",
    &["`25% of link` is a share of the migration link", "never crosses", "like 16MiB/s"],
)]
#[case::downtime_limit_for_xen(
    "downtime-limit-for-xen.yaml:7:32: overrides[0].migration.max_downtime: ",
    &["xen-pv by precopy has no downtime limit to set"],
)]
#[case::variant_bandwidth_for_openvz(
    "variant-bandwidth-for-openvz.yaml:9:29: variants[1].migration.bandwidth: ",
    &["openvz has no `bandwidth` to set", "only QEMU's stream", "a variant changes every case"],
)]
#[case::tls_for_xen(
    "tls-for-xen.yaml:7:23: overrides[0].migration.tls: ",
    &["xen-pv has no `tls` to set", "bandwidth cap, multifd channels and TLS", "narrow this override"],
)]
#[case::variants_without_compare(
    "variants-without-compare.yaml:6:11: variants: ",
    &["variants need `compare`", "compare: { total_time: 10% }"],
)]
#[case::compare_without_variants(
    "compare-without-variants.yaml:6:10: compare: ",
    &["there is nothing to compare", "list them"],
)]
#[case::variants_too_few_runs(
    "variants-too-few-runs.yaml:5:9: repeat: ",
    &["comparing variants needs `repeat: 4` or more", "with 3, no difference could be significant"],
)]
#[case::variants_override_too_few_runs(
    "variants-override-too-few-runs.yaml:8:13: overrides[0].repeat: ",
    &["comparing variants needs `repeat: 4` or more", "with 2, no difference could be significant"],
)]
#[case::variant_named_twice(
    "variant-named-twice.yaml:6:29: variants[1]: ",
    &["`stock` is listed twice", "each variant needs a name of its own"],
)]
#[case::compare_unknown_metric(
    "compare-unknown-metric.yaml:7:12: compare.total_tme: ",
    &["unknown metric `total_tme` (did you mean `total_time`?)", "valid: total_time, downtime"],
)]
#[case::variant_strategy_of_xen(
    "variant-strategy-not-offered.yaml:9:28: variants[1].migration.strategy: ",
    &["xen-pv cannot migrate by postcopy", "its backend offers precopy"],
)]
#[case::compare_path_rate(
    "compare-path-rate.yaml:7:40: compare.path_rate: ",
    &["`path_rate` is measured before each run", "no variant can change it"],
)]
#[case::variants_expecting_failure(
    "variants-expecting-failure.yaml:6:11: variants: ",
    &["variants are compared in cases that should pass", "in a suite of their own"],
)]
#[case::variant_topology(
    "variant-topology.yaml:9:18: variants[1].migration.topology: ",
    &["unknown field `topology`", "valid fields: strategy, max_downtime, bandwidth, multifd"],
)]
#[case::timeout_zero("timeout-zero.yaml:6:12: migration.timeout: ", &["`0s` is out of range: must be from 1s to 24h"])]
#[case::after_forever("after-forever.yaml:6:10: failure.after: ", &["is out of range: must be from 0ms to 1h"])]
#[case::fault_after_timeout(
    "fault-after-timeout.yaml:6:35: faults.kill_destination_after: ",
    &["999000 ms is not before the migration's timeout of 1000 ms", "give less than the timeout"],
)]
#[case::interval_beyond_settle(
    "interval-beyond-settle.yaml:5:23: sampling.interval: ",
    &["a sample every 3000 ms cannot show what settles within 2000 ms"],
)]
#[case::settle_forever("settle-forever.yaml:5:38: sampling.settle: ", &["`100000000m` is out of range"])]
#[case::max_downtime_zero("max-downtime-zero.yaml:5:28: migration.max_downtime: ", &["must be from 1ms to 2000s"])]
#[case::max_downtime_beyond_qemu(
    "max-downtime-beyond-qemu.yaml:5:28: migration.max_downtime: ",
    &["`99999999999s` is out of range: must be from 1ms to 2000s"],
)]
#[case::packet_larger_than_mtu(
    "packet-larger-than-mtu.yaml:5:22: workloads.big.packets.size: ",
    &["a 65507-byte payload does not fit in one packet at MTU 68", "at most 40 bytes"],
)]
#[case::expect_fail_empty("expect-fail-empty.yaml:5:17: expect.fail: ", &["would match every failure"])]
#[case::duplicate_workload("duplicate-workload.yaml:4:3: workloads.game: ", &["workload `game` is defined twice"])]
#[case::bound_on_a_rate(
    "bound-on-a-rate.yaml:6:28: bounds.throughput: ",
    &["`throughput` cannot be bounded", "valid: apply_to, total_time"],
)]
#[case::noise_of_an_ungated_metric(
    "noise-of-an-ungated-metric.yaml:7:29: snapshot.noise.peak_cpu: ",
    &["`peak_cpu` is not compared with a baseline", "valid: total_time"],
)]
#[case::noise_zero("noise-zero.yaml:6:24: snapshot.noise.total_time: ", &["must be from 1% to 1000%"])]
#[case::matrix_too_large("matrix-too-large.yaml:3:3: matrix: ", &["make 1132 cases", "at most 1000"])]
#[case::not_utf8("not-utf8.yaml:3:6: ", &["byte 0xE9 is not UTF-8"])]
#[case::second_document("second-document.yaml:5:1: ", &["a second YAML document starts here"])]
#[case::binary("binary.yaml:2:1: ", &["control character U+0000"])]
#[case::deep_nesting("deep-nesting.yaml:5:71: ", &["nested deeper than 64 levels"])]
#[case::yaml_syntax("yaml-syntax.yaml:4:1: ", &["while scanning a quoted scalar"])]
fn bad_suites_say_where_and_why(#[case] prefix: &str, #[case] hints: &[&str]) {
    let file = prefix.split(':').next().unwrap();
    let path = root().join("tests/fixtures/bad").join(file);
    let message = load_file(&path).unwrap_err().to_string();
    assert!(message.starts_with(&format!("{}/", path.parent().unwrap().display())));
    assert!(message.contains(prefix), "{message}\nlacks {prefix:?}");
    for hint in hints {
        assert!(message.contains(hint), "{message}\nlacks {hint:?}");
    }
    assert!(!message.contains('\n'), "one line: {message}");
}

/// New fixtures are at least refused, even before they get a case above.
#[test]
fn every_bad_fixture_is_refused() {
    for entry in std::fs::read_dir(root().join("tests/fixtures/bad")).unwrap() {
        let path = entry.unwrap().path();
        assert!(load_file(&path).is_err(), "{} loads", path.display());
    }
}

#[test]
fn shipped_suites_load_in_file_order() {
    let cases = load_dir(&root().join("suites")).unwrap();
    let count = |suite: &str| cases.iter().filter(|c| c.suite == suite).count();
    assert_eq!(count("ci"), 4 * 3);
    assert_eq!(count("ci-postcopy"), 3);
    assert_eq!(count("ci-no-convergence"), 1);
    assert_eq!(count("fail-destination-killed"), 1);
    assert_eq!(count("fail-openvz-destination-killed"), 1);
    assert_eq!(count("fail-openvz-postcopy-killed"), 1);
    assert_eq!(count("fail-small-mtu"), 1);
    assert_eq!(count("study"), 5 * 3 * 2);
    assert_eq!(count("real-lab"), 5);
    assert_eq!(count("standin"), 3);
    assert_eq!(count("standin-postcopy"), 1);
    assert_eq!(count("standin-xen"), 2);
    assert_eq!(count("ab-self"), 1);
    assert_eq!(count("strategies"), 2 * 3);
    assert_eq!(count("tls"), 2);
    assert_eq!(cases.len(), 70);
    let names: Vec<String> = cases.iter().map(Case::name).collect();
    assert_eq!(names[0], "ab-self::kvm-pv::mtu1500::game");
    assert_eq!(
        names[1..21],
        [
            // "ci-" sorts before "ci.".
            "ci-no-convergence::kvm-pv::mtu128::runaway",
            "ci-postcopy::openvz::mtu1500::game",
            "ci-postcopy::openvz::mtu576::game",
            "ci-postcopy::openvz::mtu128::game",
            "ci::xen-pv::mtu1500::game",
            "ci::xen-pv::mtu576::game",
            "ci::xen-pv::mtu128::game",
            "ci::openvz::mtu1500::game",
            "ci::openvz::mtu576::game",
            "ci::openvz::mtu128::game",
            "ci::kvm-fv::mtu1500::game",
            "ci::kvm-fv::mtu576::game",
            "ci::kvm-fv::mtu128::game",
            "ci::kvm-pv::mtu1500::game",
            "ci::kvm-pv::mtu576::game",
            "ci::kvm-pv::mtu128::game",
            "fail-destination-killed::kvm-pv::mtu1500::game",
            "fail-openvz-destination-killed::openvz::mtu1500::game",
            "fail-openvz-postcopy-killed::openvz::mtu1500::game",
            "fail-small-mtu::kvm-pv::mtu68::game",
        ]
    );
    assert_eq!(names[21], "real-lab::kvm-fv::mtu1500::game");
    // "standin-" sorts before "standin.".
    assert_eq!(names[26], "standin-postcopy::openvz::mtu1500::game");
    assert_eq!(names[27], "standin-xen::xen-pv::mtu1500::game");
    assert_eq!(names[29], "standin::kvm-fv::mtu1500::game");
    assert_eq!(names[32], "strategies::kvm-pv::mtu1500::game");
    assert_eq!(names[38], "study::xen-pv::mtu1500::game");
    assert_eq!(names[67], "study::kvm-pv::mtu128::game-32b");
    // The override gives the container the strategy this kernel allows.
    assert_eq!(cases[8].migration.strategy, Strategy::StopAndCopy);
    assert_eq!(cases[5].migration.strategy, Strategy::Precopy);
    assert_eq!(cases[11].migration.strategy, Strategy::Precopy);
    assert_eq!(cases[2].migration.strategy, Strategy::Postcopy);
}

#[test]
fn ci_suite_expands_to_the_documented_case() {
    let path = root().join("suites/ci.yaml");
    let cases = load_file(&path).unwrap();
    let case = &cases[8];
    assert_eq!(
        *case,
        Case {
            suite: "ci".into(),
            file: path.clone(),
            tier: Tier::Gate,
            hypervisor: Hypervisor::row("kvm-fv"),
            guest: GuestSpec {
                memory_mib: 256,
                vcpus: 1,
                accel: AccelChoice::Auto
            },
            workload: Workload {
                name: "game".into(),
                dirty_mib: 16,
                dirty_rate: crate::case::DirtyRate::OfLink(0.25),
                packet_size: PacketSize::Fill,
                packet_rate_pps: 200,
            },
            link: LinkSpec {
                mtu: 128,
                rate_mbit: Some(1000),
                offloads: false
            },
            failure: FailureSpec { after_ms: 2000 },
            migration: MigrationSpec {
                strategy: Strategy::Precopy,
                max_downtime_ms: 300,
                timeout_ms: 90_000,
                topology: Topology::TwoHosts,
                bandwidth_mib_s: None,
                multifd_channels: None,
                tls: false,
            },
            faults: Faults::default(),
            repeat: 5,
            sampling: SamplingSpec {
                interval_ms: 100,
                settle_ms: 2000
            },
            bounds: Bounds {
                apply_to: Aggregate::Worst,
                limits: keyed(&[
                    ("downtime", 5000.0),
                    ("guest_downtime", 10_000.0),
                    ("total_time", 60_000.0),
                    ("peak_cpu", 400.0),
                    ("peak_memory", 2048.0),
                ]),
            },
            expect: Expect::Pass,
            // The mtu 128 override loosens what the CPU bounds.
            noise: default_noise_but(&[
                ("total_time", 0.5),
                ("after_first_byte", 0.5),
                ("downtime", 1.0),
                ("guest_downtime", 1.0),
                ("throughput", 0.4),
                ("path_rate", 0.9),
                ("peak_memory", 0.3),
            ]),
            variants: vec![],
            compare: Default::default(),
        }
    );
}

#[test]
fn study_suite_applies_its_overrides_and_small_packets() {
    let cases = load_file(&root().join("suites/study.yaml")).unwrap();
    let case = |name: &str| cases.iter().find(|c| c.name() == name).unwrap();
    let past_the_cliff = case("study::kvm-fv::mtu128::game");
    assert_eq!(
        past_the_cliff.expect,
        Expect::Fail {
            reason_contains: "does not converge".into()
        }
    );
    assert_eq!(case("study::kvm-pv::mtu1500::game").expect, Expect::Pass);
    // Layered: the Xen row's bounds, then MTU 128's time; untouched keys stay.
    let xen = case("study::xen-pv::mtu128::game");
    assert_eq!(
        (
            limit(&xen.bounds, "downtime"),
            limit(&xen.bounds, "total_time"),
            xen.migration.timeout_ms
        ),
        (Some(30_000.0), Some(900_000.0), 900_000)
    );
    assert_eq!(
        limit(&xen.bounds, "peak_cpu"),
        Some(300.0),
        "untouched keys stay"
    );
    let small = case("study::xen-pv::mtu1500::game-32b");
    assert_eq!(small.workload.packet_size, PacketSize::Bytes(32));
    assert_eq!(
        (small.tier, small.repeat, small.guest.memory_mib),
        (Tier::Lab, 3, 512)
    );
    assert_eq!(small.bounds.apply_to, Aggregate::Mean);
}

#[test]
fn failure_suites_expect_their_failures() {
    let small = load_file(&root().join("suites/fail-small-mtu.yaml")).unwrap();
    assert_eq!(
        small[0].expect,
        Expect::Fail {
            reason_contains: "timed out".into()
        }
    );
    assert_eq!(small[0].migration.timeout_ms, 25_000);
    let killed = load_file(&root().join("suites/fail-destination-killed.yaml")).unwrap();
    assert_eq!(
        killed[0].expect,
        Expect::Fail {
            reason_contains: "destination".into()
        }
    );
    assert_eq!(killed[0].faults.kill_destination_after_ms, Some(1000));
    assert_eq!(killed[0].link.rate_mbit, Some(100));
}

#[test]
fn defaults_fill_everything_left_out() {
    let case = parse(MINIMAL).unwrap().remove(0);
    assert_eq!(case.tier, Tier::Gate);
    assert_eq!(
        case.guest,
        GuestSpec {
            memory_mib: 256,
            vcpus: 1,
            accel: AccelChoice::Auto
        }
    );
    assert_eq!(
        (case.workload.dirty_mib, case.workload.dirty_rate),
        (0, crate::case::DirtyRate::MibPerSec(0))
    );
    assert_eq!(
        (case.workload.packet_size, case.workload.packet_rate_pps),
        (PacketSize::Fill, 0)
    );
    assert_eq!(
        case.link,
        LinkSpec {
            mtu: 1500,
            rate_mbit: None,
            offloads: true
        }
    );
    assert_eq!(
        case.migration,
        MigrationSpec {
            strategy: Strategy::Precopy,
            max_downtime_ms: 300,
            timeout_ms: 120_000,
            topology: Topology::TwoHosts,
            bandwidth_mib_s: None,
            multifd_channels: None,
            tls: false,
        }
    );
    assert_eq!(case.faults, Faults::default());
    assert_eq!(case.repeat, 1);
    assert_eq!(
        case.sampling,
        SamplingSpec {
            interval_ms: 100,
            settle_ms: 5000
        }
    );
    assert_eq!(case.bounds.apply_to, Aggregate::Worst);
    assert_eq!(case.bounds.limits, keyed(&[]));
    assert_eq!(case.expect, Expect::Pass);
    assert_eq!(
        case.noise,
        default_noise_but(&[
            ("total_time", 0.2),
            ("downtime", 0.5),
            ("guest_downtime", 0.5),
            ("throughput", 0.08),
            ("path_rate", 0.08),
            ("peak_memory", 0.3),
        ]),
        "every gated metric's default, said in the report"
    );
}

#[test]
fn later_overrides_win_and_replace_only_their_keys() {
    let text = format!(
        "{MINIMAL}
matrix: {{ hypervisor: [kvm-pv, kvm-fv], mtu: [1500, 576], workload: [idle] }}
bounds: {{ downtime: 1s, total_time: 10s }}
overrides:
  - when: {{ mtu: 576 }}
    bounds: {{ total_time: 20s, apply_to: mean }}
  - when: {{ hypervisor: kvm-fv, mtu: 576 }}
    bounds: {{ total_time: 30s }}
"
    )
    .replacen(
        "matrix: { hypervisor: [kvm-pv], mtu: [1500], workload: [idle] }\n",
        "",
        1,
    );
    let cases = parse(&text).unwrap();
    let by_name = |name: &str| &cases.iter().find(|c| c.name() == name).unwrap().bounds;
    let plain = by_name("tiny::kvm-pv::mtu1500::idle");
    assert_eq!(
        (limit(plain, "total_time"), plain.apply_to),
        (Some(10_000.0), Aggregate::Worst)
    );
    let first = by_name("tiny::kvm-pv::mtu576::idle");
    assert_eq!(
        (limit(first, "total_time"), first.apply_to),
        (Some(20_000.0), Aggregate::Mean)
    );
    let both = by_name("tiny::kvm-fv::mtu576::idle");
    assert_eq!(
        (limit(both, "total_time"), both.apply_to),
        (Some(30_000.0), Aggregate::Mean)
    );
    assert_eq!(limit(both, "downtime"), Some(1000.0));
}

#[test]
fn overrides_change_the_migration_of_the_cases_they_select() {
    let text = format!(
        "{MINIMAL}
matrix: {{ hypervisor: [kvm-pv, openvz], mtu: [1500], workload: [idle] }}
migration: {{ strategy: precopy, timeout: 30s }}
overrides:
  - when: {{ hypervisor: openvz }}
    migration: {{ strategy: stop-and-copy }}
"
    )
    .replacen(
        "matrix: { hypervisor: [kvm-pv], mtu: [1500], workload: [idle] }\n",
        "",
        1,
    );
    let cases = parse(&text).unwrap();
    let migration = |name: &str| &cases.iter().find(|c| c.name() == name).unwrap().migration;
    assert_eq!(
        migration("tiny::kvm-pv::mtu1500::idle").strategy,
        Strategy::Precopy
    );
    let openvz = migration("tiny::openvz::mtu1500::idle");
    assert_eq!(
        (openvz.strategy, openvz.timeout_ms),
        (Strategy::StopAndCopy, 30_000)
    );
}

#[test]
fn an_override_gives_its_cases_a_repeat_of_their_own() {
    let text = "
name: repeats
matrix: { hypervisor: [kvm-pv, xen-pv], mtu: [1500, 576], workload: [idle] }
workloads: { idle: {} }
failure: { kind: warned, after: 3s }
repeat: 5
overrides:
  - when: { hypervisor: xen-pv }
    repeat: 3
  - when: { hypervisor: xen-pv, mtu: 576 }
    repeat: 2
";
    let repeats: Vec<(String, u32)> = parse(text)
        .unwrap()
        .iter()
        .map(|c| (c.name(), c.repeat))
        .collect();
    assert_eq!(
        repeats,
        [
            ("repeats::kvm-pv::mtu1500::idle".to_string(), 5),
            ("repeats::kvm-pv::mtu576::idle".to_string(), 5),
            ("repeats::xen-pv::mtu1500::idle".to_string(), 3),
            ("repeats::xen-pv::mtu576::idle".to_string(), 2),
        ]
    );
}

#[test]
fn an_override_gives_its_cases_variants_of_their_own() {
    let text = "
name: strategies
matrix: { hypervisor: [kvm-pv, openvz], mtu: [1500], workload: [idle] }
workloads: { idle: {} }
failure: { kind: warned, after: 3s }
repeat: 4
variants:
  - name: precopy
  - name: postcopy
    migration: { strategy: postcopy }
overrides:
  - when: { hypervisor: openvz }
    migration: { strategy: stop-and-copy }
    variants:
      - name: stop-and-copy
      - name: lazy-pages
        migration: { strategy: postcopy }
compare: { total_time: 10% }
";
    let cases = parse(text).unwrap();
    let variants = |name: &str| -> Vec<(String, Strategy)> {
        let case = cases.iter().find(|c| c.name() == name).unwrap();
        case.variants
            .iter()
            .map(|v| (v.name.clone(), v.migration.strategy))
            .collect()
    };
    assert_eq!(
        variants("strategies::kvm-pv::mtu1500::idle"),
        [
            ("precopy".to_string(), Strategy::Precopy),
            ("postcopy".to_string(), Strategy::Postcopy)
        ]
    );
    assert_eq!(
        variants("strategies::openvz::mtu1500::idle"),
        [
            ("stop-and-copy".to_string(), Strategy::StopAndCopy),
            ("lazy-pages".to_string(), Strategy::Postcopy)
        ]
    );
    // The override's variants are checked where they are.
    // Stop-and-copy is not KVM's: that variant, given for every case, is
    // refused where it is.
    let e = parse(&text.replace(
        "  - name: precopy\n",
        "  - name: s\n    migration: { strategy: stop-and-copy }\n",
    ))
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("variants[0].migration.strategy: kvm-pv cannot migrate by stop-and-copy"),
        "{e}"
    );
    let e = parse(&text.replace(
        "        migration: { strategy: postcopy }\n",
        "        migration: { strategy: auto-converge }\n",
    ))
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(
            "overrides[0].variants[1].migration.strategy: openvz cannot migrate by auto-converge"
        ),
        "{e}"
    );
    let one = text.replace(
        "      - name: lazy-pages\n        migration: { strategy: postcopy }\n",
        "",
    );
    let e = parse(&one).map(|_| ()).unwrap_err().to_string();
    assert!(
        e.contains("overrides[0].variants: one variant has nothing to be compared with"),
        "{e}"
    );
}

#[test]
fn cases_follow_matrix_order() {
    let text = "
name: tiny
matrix: { hypervisor: [kvm-pv, xen-pv], mtu: [9000, 68], workload: [idle, busy] }
workloads:
  idle: {}
  busy: { packets: { size: 32, rate: 10/s } }
failure: { kind: warned, after: 3s }
";
    let names: Vec<String> = parse(text).unwrap().iter().map(Case::name).collect();
    assert_eq!(
        names,
        [
            "tiny::kvm-pv::mtu9000::idle",
            "tiny::kvm-pv::mtu9000::busy",
            "tiny::kvm-pv::mtu68::idle",
            "tiny::kvm-pv::mtu68::busy",
            "tiny::xen-pv::mtu9000::idle",
            "tiny::xen-pv::mtu9000::busy",
            "tiny::xen-pv::mtu68::idle",
            "tiny::xen-pv::mtu68::busy",
        ]
    );
}

#[rstest]
#[case("kvm-pv", "precopy", Strategy::Precopy)]
#[case("kvm-pv", "postcopy", Strategy::Postcopy)]
#[case("kvm-pv", "auto-converge", Strategy::AutoConverge)]
#[case("openvz", "stop-and-copy", Strategy::StopAndCopy)]
fn strategy_words(#[case] hypervisor: &str, #[case] word: &str, #[case] strategy: Strategy) {
    let minimal = MINIMAL.replace("kvm-pv", hypervisor);
    let text = format!("{minimal}migration: {{ strategy: {word} }}\n");
    assert_eq!(parse(&text).unwrap()[0].migration.strategy, strategy);
}

#[rstest]
#[case("expect: pass", Expect::Pass)]
#[case("expect: { fail: timed out }", Expect::Fail { reason_contains: "timed out".into() })]
fn expect_forms(#[case] line: &str, #[case] expect: Expect) {
    assert_eq!(
        parse(&format!("{MINIMAL}{line}\n")).unwrap()[0].expect,
        expect
    );
}

#[test]
fn an_override_sets_what_its_cases_expect() {
    let text = "name: t\nmatrix: { hypervisor: [kvm-pv], mtu: [1500, 128], workload: [w] }\n\
                workloads: { w: { dirty: { size: 1MiB, rate: 1MiB/s } } }\n\
                failure: { kind: warned, after: 1s }\n\
                expect: { fail: destination }\n\
                overrides:\n  - when: { mtu: 128 }\n    expect: { fail: does not converge }\n";
    let expects: Vec<_> = parse(text).unwrap().into_iter().map(|c| c.expect).collect();
    assert_eq!(
        expects,
        [
            Expect::Fail {
                reason_contains: "destination".into()
            },
            Expect::Fail {
                reason_contains: "does not converge".into()
            },
        ]
    );
}

#[rstest]
#[case("expect: fail", "`fail` needs the text")]
#[case("expect: pas", "did you mean `pass`?")]
fn bad_expect_forms(#[case] line: &str, #[case] message: &str) {
    let err = parse(&format!("{MINIMAL}{line}\n"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("t.yaml:6:9: expect: "), "{err}");
    assert!(err.contains(message), "{err}");
}

#[test]
fn load_dir_refuses_a_suite_name_used_twice() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), MINIMAL).unwrap();
    std::fs::write(dir.path().join("b.yml"), MINIMAL).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a suite").unwrap();
    let err = load_dir(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("b.yml:2:7: name: suite name `tiny` is already used by"),
        "{err}"
    );
    assert!(err.ends_with("a.yaml"), "{err}");
}

#[test]
fn one_file_given_twice_is_refused() {
    let file = root().join("suites/ci.yaml");
    let err = load_paths(&[file.clone(), file]).unwrap_err().to_string();
    assert!(
        err.contains("ci.yaml:2:7: name: suite name `ci` is already used by"),
        "{err}"
    );
    assert!(err.ends_with("(the same file is given twice)"), "{err}");
}

#[test]
fn a_byte_order_mark_is_skipped() {
    let cases = load_file(&root().join("tests/fixtures/bom.yaml")).unwrap();
    assert_eq!(cases[0].suite, "bom");
}

#[test]
fn missing_files_name_the_path() {
    let err = load_file(Path::new("/nonexistent/suite.yaml")).unwrap_err();
    assert!(matches!(err, FileError::Io { .. }));
    assert!(
        err.to_string().starts_with("/nonexistent/suite.yaml: "),
        "{err}"
    );
}

#[rstest]
#[case::keyword_as_list(
    "tier: [gate]",
    "t.yaml:6:7: tier: invalid type: sequence, expected one of: gate, lab"
)]
#[case::bad_workload_key(
    "workloads: { Idle: {} }",
    "t.yaml:5:14: workloads.Idle: `Idle` is not a valid name"
)]
#[case::no_workloads(
    "workloads: {}",
    "t.yaml:5:12: workloads: must define at least one workload"
)]
#[case::duplicate_key("repeat: 1\nrepeat: 2", "t.yaml:2:1: repeat: `repeat` is given twice")]
#[case::bound_given_twice(
    "bounds: { downtime: 1s, downtime: 2s }",
    "t.yaml:6:9: bounds.downtime: bound `downtime` is given twice; give it once"
)]
#[case::missing_nested(
    "failure: { kind: warned }",
    "t.yaml:5:10: failure.after: required field `after` is missing"
)]
#[case::unknown_top_level_key(
    "bound: {}",
    "t.yaml:6:1: bound: unknown field `bound` (did you mean `bounds`?)"
)]
fn more_refusals(#[case] extra: &str, #[case] expected: &str) {
    // Replace MINIMAL's own line for the key under test, if it has one.
    let key = extra.split(':').next().unwrap();
    let mut text: String = MINIMAL
        .lines()
        .filter(|l| !l.starts_with(&format!("{key}:")))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(extra);
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.starts_with(expected), "{err}\nis not {expected:?}");
}

/// A bound on the downtime against its limit holds where there is a limit:
/// dropped suite-wide for backends without one, refused in an override
/// that gives it to them.
#[test]
fn a_downtime_overshoot_bound_needs_a_downtime_limit() {
    let suite = |tail: &str| {
        format!("{MINIMAL}bounds: {{ downtime_overshoot: 150% }}\n{tail}").replacen(
            "[kvm-pv]",
            "[kvm-pv, openvz]",
            1,
        )
    };
    let cases = parse(&suite("")).unwrap();
    let bound = |name: &str| {
        let case = cases.iter().find(|c| c.name().contains(name)).unwrap();
        limit(&case.bounds, "downtime_overshoot")
    };
    assert_eq!((bound("kvm-pv"), bound("openvz")), (Some(150.0), None));
    let refused = parse(&suite(
        "overrides:\n  - when: { hypervisor: openvz }\n    bounds: { downtime_overshoot: 200% }\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains("overrides[0].bounds.downtime_overshoot")
            && refused.contains("openvz by precopy has no downtime limit"),
        "{refused}"
    );
}
