//! Inventories end to end: the shipped lab is the one `crate::lab` builds;
//! bad inventories are refused with where, which field, and what would be
//! valid; a lab's `gate` decides which cases plain `cargo test` runs there.

use super::*;
use crate::lab::HOST_NAMES;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn parse(text: &str) -> Result<Inventory, FileError> {
    Inventory::parse_str(Path::new("t.yaml"), text)
}

/// A real lab of two hosts; tests change a line of it.
const RACK: &str = "\
name: rack
storage: shared
observer: 192.0.2.254
guest: 192.0.2.100/24
link_mtu: 1500
heartbeat:
  key: /etc/migsuite/lab.key
  monitor: 203.0.113.254
hosts:
  - name: a
    uri: qemu+ssh://root@192.0.2.1/system
    migration_address: 198.51.100.1
    agent: 203.0.113.1
    bridge: br0
    pool: default
    backends: [kvm-fv, kvm-pv]
  - name: b
    uri: qemu+ssh://root@192.0.2.2/system
    migration_address: 198.51.100.2
    agent: 203.0.113.2
    bridge: br0
    pool: default
    backends: [kvm-pv]
pairs:
  - [a, b]
";

fn rack_with(old: &str, new: &str) -> String {
    assert!(RACK.contains(old), "{old}");
    RACK.replacen(old, new, 1)
}

#[test]
fn the_local_lab_is_the_simulated_pair_with_a_pool_per_host() {
    let lab = Inventory::load(&root().join("suites/labs/local.yaml")).unwrap();
    assert_eq!(lab.file, Some(root().join("suites/labs/local.yaml")));
    // The rows it lists: the study's five.
    let rows = ["xen-pv", "xen-hvm", "openvz", "kvm-fv", "kvm-pv"].map(Hypervisor::row);
    assert_eq!(
        Inventory {
            file: None,
            ..lab.clone()
        },
        Inventory::simulated("local", Storage::Local, &rows)
    );
    let pairs: Vec<Pair> = lab.pairs().collect();
    assert_eq!(pairs[0].hosts.map(|h| h.name.as_str()), HOST_NAMES);
    assert_eq!(pairs[0].backends(), rows);
}

#[test]
fn two_simulated_pairs_number_their_hosts_in_order() {
    let lab = Inventory::load(&root().join("suites/labs/local-two-pairs.yaml")).unwrap();
    assert!(lab.simulated);
    let pairs: Vec<[&str; 2]> = lab
        .pairs()
        .map(|p| p.hosts.map(|h| h.name.as_str()))
        .collect();
    assert_eq!(pairs, [["a", "b"], ["c", "d"]]);
    assert_eq!(lab.pair_slots().collect::<Vec<_>>(), [[0, 1], [2, 3]]);
    let swapped = std::fs::read_to_string(root().join("suites/labs/local-two-pairs.yaml"))
        .unwrap()
        .replacen(
            "uri: qemu+tcp://10.249.0.3/system",
            "uri: qemu+tcp://10.249.0.9/system",
            1,
        );
    let err = parse(&swapped).unwrap_err().to_string();
    assert!(
        err.contains("hosts[2].uri") && err.contains("qemu+tcp://10.249.0.3/system"),
        "{err}"
    );
}

#[test]
fn a_simulated_lab_must_describe_the_pair_migsuite_builds() {
    let local = std::fs::read_to_string(root().join("suites/labs/local.yaml")).unwrap();
    let moved = local.replacen(
        "migration_address: 10.251.0.2",
        "migration_address: 10.251.0.9",
        1,
    );
    let err = parse(&moved).unwrap_err().to_string();
    assert!(err.contains("hosts[1].migration_address"), "{err}");
    assert!(err.contains("`10.251.0.2`"), "{err}");
    let observer = local.replacen("observer: 10.250.0.254", "observer: 10.250.0.1", 1);
    let err = parse(&observer).unwrap_err().to_string();
    assert!(
        err.contains("observer") && err.contains("10.250.0.254"),
        "{err}"
    );
}

#[test]
fn a_pair_offers_what_both_hosts_run() {
    let lab = parse(RACK).unwrap();
    let pair = lab.pairs().next().unwrap();
    assert_eq!(pair.backends(), [Hypervisor::row("kvm-pv")]);
    assert!(pair.offers(Hypervisor::row("kvm-pv")));
    assert!(
        !pair.offers(Hypervisor::row("kvm-fv")),
        "only a runs kvm-fv"
    );
    assert!(pair.hosts[0].offers(Hypervisor::row("kvm-fv")));
    assert_eq!(lab.pairs_offering(Hypervisor::row("kvm-pv")), [0]);
    assert!(lab.pairs_offering(Hypervisor::row("kvm-fv")).is_empty());
}

#[test]
fn a_real_lab_loads_as_written() {
    let lab = parse(RACK).unwrap();
    assert!(!lab.simulated, "a lab is real unless it says otherwise");
    let b = &lab.hosts[1];
    assert_eq!(
        (b.uri.as_str(), b.pool.as_str()),
        ("qemu+ssh://root@192.0.2.2/system", "default")
    );
    assert_eq!(
        b.migration_address,
        "198.51.100.2".parse::<IpAddr>().unwrap()
    );
    assert_eq!(b.agent, "203.0.113.2".parse::<IpAddr>().unwrap());
    assert_eq!(lab.guest, ("192.0.2.100".parse().unwrap(), 24));
    assert_eq!(lab.link_mtu, Some(1500));
    assert_eq!(lab.monitor, "203.0.113.254".parse::<IpAddr>().unwrap());
    assert_eq!(
        lab.heartbeat_key,
        Some(PathBuf::from("/etc/migsuite/lab.key"))
    );
}

#[rstest::rstest]
#[case::no_guest(
    "guest: 192.0.2.100/24\n",
    "",
    "guest: a real lab gives the guest's address"
)]
#[case::no_mtu(
    "link_mtu: 1500\n",
    "",
    "link_mtu: a real lab gives its migration network's MTU"
)]
#[case::no_agent(
    "    agent: 203.0.113.2\n",
    "",
    "hosts[1].agent: a real lab gives each host's"
)]
#[case::guest_without_prefix("192.0.2.100/24", "192.0.2.100", "prefix length from 8 to 30")]
#[case::observer_elsewhere(
    "observer: 192.0.2.254",
    "observer: 198.51.100.254",
    "observer: `198.51.100.254` is not on the guest's network (192.0.2.100/24)"
)]
#[case::observer_is_guest("observer: 192.0.2.254", "observer: 192.0.2.100", "the guest's own")]
#[case::monitor_v6(
    "monitor: 203.0.113.254",
    "monitor: 'fd00::fe'",
    "heartbeat.monitor: `fd00::fe` is IPv6"
)]
#[case::relative_key("key: /etc/migsuite/lab.key", "key: lab.key", "not an absolute path")]
fn a_real_lab_says_where_its_guest_and_agents_are(
    #[case] old: &str,
    #[case] new: &str,
    #[case] expected: &str,
) {
    let err = parse(&rack_with(old, new)).unwrap_err().to_string();
    assert!(err.contains(expected), "{err}");
}

#[test]
fn a_simulated_lab_gives_no_real_lab_places() {
    let local = std::fs::read_to_string(root().join("suites/labs/local.yaml")).unwrap();
    let agent = local.replacen(
        "    bridge: br0",
        "    agent: 10.249.0.1\n    bridge: br0",
        1,
    );
    let err = parse(&agent).unwrap_err().to_string();
    assert!(
        err.contains("hosts[0].agent: `hosts[0].agent` is a real lab's"),
        "{err}"
    );
}

#[rstest::rstest]
#[case::this_machine("qemu:///system")]
#[case::tls("qemu+tls://lab-a.example/system")]
#[case::ssh_with_options("qemu+ssh://root@lab-a:2222/system?keyfile=/root/.ssh/lab")]
#[case::tcp_to_loopback("qemu+tcp://127.0.0.1/system")]
#[case::tcp_to_localhost("qemu+tcp://localhost:16509/system")]
#[case::tcp_to_ipv6_loopback("qemu+tcp://[::1]/system")]
#[case::tcp_with_insecure("qemu+tcp://192.0.2.1/system\n    insecure: true")]
#[case::upper_case_scheme("QEMU+SSH://root@192.0.2.1/system")]
fn uris_a_lab_may_use(#[case] uri: &str) {
    let text = rack_with("qemu+ssh://root@192.0.2.1/system", uri);
    let lab = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(lab.hosts[0].uri.contains("/system"), "{}", lab.hosts[0].uri);
}

#[test]
fn tcp_is_fine_in_a_simulated_lab_and_insecure_is_not_wanted() {
    // local.yaml's hosts are reached by qemu+tcp:// (it loads: see above).
    let local = std::fs::read_to_string(root().join("suites/labs/local.yaml")).unwrap();
    let needless = local.replacen(
        "    pool: migsuite",
        "    insecure: true\n    pool: migsuite",
        1,
    );
    let err = parse(&needless).unwrap_err().to_string();
    assert!(
        err.contains("hosts[0].insecure: `insecure: true` allows qemu+tcp://"),
        "{err}"
    );
}

#[test]
fn addresses_may_be_ipv6() {
    // Not the observer's nor the monitor's: the guest's agent speaks IPv4.
    // A pair's migration addresses are of one family.
    let text = rack_with("198.51.100.1", "fd00::1")
        .replacen("198.51.100.2", "'fd00::3'", 1)
        .replacen("203.0.113.2\n", "'fd00::2'\n", 1);
    let lab = parse(&text).unwrap();
    assert_eq!(
        lab.hosts[0].migration_address,
        "fd00::1".parse::<IpAddr>().unwrap()
    );
    assert_eq!(lab.hosts[1].agent, "fd00::2".parse::<IpAddr>().unwrap());
}

/// The shipped suites, as `cargo test` loads them.
fn shipped_suites() -> Vec<Case> {
    crate::suite::load_dir(&root().join("suites")).unwrap()
}

/// RACK with `gate`, read from a file of `dir` so that messages name it.
fn rack_gated(dir: &Path, gate: &str) -> Inventory {
    let file = dir.join("rack.yaml");
    std::fs::write(&file, format!("{RACK}{gate}")).unwrap();
    Inventory::load(&file).unwrap()
}

#[test]
fn a_lab_names_the_suites_that_gate_it() {
    let lab = parse(&format!("{RACK}gate: [real-lab, study]\n")).unwrap();
    assert_eq!(lab.gate, ["real-lab", "study"]);
    assert!(parse(RACK).unwrap().gate.is_empty(), "no gate unless named");
    let twice = parse(&format!("{RACK}gate:\n  - real-lab\n  - real-lab\n"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        twice,
        "t.yaml:28:5: gate[1]: `real-lab` is listed twice (also as gate[0]); name each suite once"
    );
}

#[test]
fn a_gate_names_suites_that_were_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let lab = rack_gated(dir.path(), "gate: [real-lab, real-lb]\n");
    let err = lab.check_gate(&shipped_suites()).unwrap_err().to_string();
    let file = dir.path().join("rack.yaml");
    assert_eq!(
        err,
        format!(
            "{}:26:18: gate[1]: no suite is named `real-lb` (did you mean `real-lab`?); the \
             suites are ab-self, ci-no-convergence, ci-postcopy, ci, fail-destination-killed, \
             fail-openvz-destination-killed, fail-openvz-postcopy-killed, fail-small-mtu, \
             real-lab, standin-postcopy, standin-xen, standin, strategies, study, tls",
            file.display()
        )
    );
    let lab = rack_gated(dir.path(), "gate: [real-lab]\n");
    lab.check_gate(&shipped_suites()).unwrap();
}

/// On a real lab every case of the gate-tier suites is refused (other
/// MTUs, offloads off, shaped links): it runs what its inventory's gate
/// names.
#[test]
fn a_real_lab_runs_its_gate_suites_cases_that_fit_it() {
    use crate::runner::{left_out, measures_nothing};
    let suites = shipped_suites();
    let dir = tempfile::tempdir().unwrap();
    let gated = rack_gated(dir.path(), "gate: [real-lab]\n");
    let running: Vec<String> = suites
        .iter()
        .filter(|c| left_out(c, &gated).is_none())
        .map(Case::name)
        .collect();
    // Host b runs no kvm-fv: the gate's case of it is refused all the same.
    assert_eq!(running, ["real-lab::kvm-pv::mtu1500::game"]);
    let fv = suites
        .iter()
        .find(|c| c.name() == "real-lab::kvm-fv::mtu1500::game")
        .unwrap();
    let why = left_out(fv, &gated).unwrap();
    assert!(
        why.starts_with("refused: no pair of lab rack offers kvm-fv"),
        "{why}"
    );
    assert_eq!(measures_nothing(&suites, &gated), None);

    let ungated = rack_gated(dir.path(), "");
    let why = measures_nothing(&suites, &ungated).unwrap();
    let expected = [
        format!(
            "`cargo test` would measure nothing on lab: rack (inventory {}), real hosts: it \
             leaves out every case",
            dir.path().join("rack.yaml").display()
        ),
        "\n  suite ci, 12 case(s):\n    4 × refused: the case turns the link's offloads off".into(),
        "\n  suite real-lab, 5 case(s):\n    \
         1 × refused: no pair of lab rack offers kvm-fv (the `backends` both hosts of a pair \
         list)\n    \
         1 × on demand: suite real-lab is `tier: lab`, and not in lab rack's `gate`\n    \
         1 × refused: no pair of lab rack offers xen-pv (the `backends` both hosts of a pair \
         list)\n"
            .into(),
        "\nName the suites that gate this lab in its inventory, e.g. `gate: [real-lab]`".into(),
    ];
    for part in expected {
        assert!(why.contains(&part), "{part}\nnot in:\n{why}");
    }
}

/// Without a gate, a lab leaves out what `cargo test` always did: the
/// cases of `tier: lab` suites, and those it refuses.
#[test]
fn without_a_gate_lab_tier_and_refused_cases_are_left_out() {
    let suites = shipped_suites();
    let dir = tempfile::tempdir().unwrap();
    for lab in [
        Inventory::simulated(BUILT_IN, Storage::Shared, &crate::backend::rows()),
        rack_gated(dir.path(), ""),
    ] {
        for case in &suites {
            let before =
                case.tier == crate::case::Tier::Lab || crate::runner::refusal(case, &lab).is_some();
            assert_eq!(crate::runner::left_out(case, &lab).is_some(), before);
        }
    }
    let built_in = Inventory::simulated(BUILT_IN, Storage::Shared, &crate::backend::rows());
    assert_eq!(crate::runner::measures_nothing(&suites, &built_in), None);
}

/// Each fixture's second line is the refusal it must get, whole, from the
/// file's name on (`# expected: name.yaml:line:col: field: message`);
/// `{rows}` stands for the rows this build's backends run.
#[test]
fn bad_labs_say_where_and_why() {
    let dir = root().join("tests/fixtures/bad-labs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 30, "{} fixtures", files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expected = text
            .lines()
            .nth(1)
            .and_then(|l| l.strip_prefix("# expected: "))
            .unwrap_or_else(|| panic!("{}: no `# expected: ` line", file.display()))
            .replace("{rows}", &list(crate::backend::rows()));
        let message = Inventory::load(&file)
            .and_then(|lab| lab.checked(&crate::backend::catalog()))
            .unwrap_err()
            .to_string();
        let relative = message
            .strip_prefix(&format!("{}/", dir.display()))
            .unwrap_or_else(|| panic!("{message}\ndoes not start with the path"));
        assert_eq!(relative, expected);
        assert!(!message.contains('\n'), "one line: {message}");
    }
}

#[test]
fn missing_files_name_the_path() {
    let err = Inventory::load(Path::new("/nonexistent/lab.yaml")).unwrap_err();
    assert!(matches!(err, FileError::Io { .. }));
    assert!(
        err.to_string().starts_with("/nonexistent/lab.yaml: "),
        "{err}"
    );
}
