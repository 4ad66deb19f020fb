//! The real-lab path end to end: `migsuite run --lab` on a lab whose hosts
//! migsuite did not build. `ci/standin-real-lab.sh` stands them in on this
//! machine (namespaces with a libvirtd, a storage pool and a `migsuite
//! host-agent` each, and a runner namespace), and migsuite reaches them
//! only as a real lab's: by their URIs, their agents and the addresses of
//! the inventory the script writes. The case holds the machine's pair lock
//! like any other, so it is never measured beside another.

use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const STANDIN: &str = "ci/standin-real-lab.sh";
const INVENTORY: &str = "/run/migsuite-standin/lab.yaml";
const RUNNER_NAMESPACE: &str = "msr-run";
const RUNS: &str = "2";

/// The stand-in lab, taken down when dropped (also when the test panics).
struct Standin;

impl Standin {
    fn up(migsuite: &str) -> Standin {
        // A stand-in left by a killed test goes first.
        down();
        duct::cmd!("bash", STANDIN, "up", "--migsuite", migsuite)
            .dir(root())
            .run()
            .expect("the stand-in lab comes up");
        Standin
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        down();
    }
}

fn down() {
    let _ = duct::cmd!("bash", STANDIN, "down")
        .dir(root())
        .stdout_null()
        .unchecked()
        .run();
}

/// suites/real-lab.yaml under TCG: the stand-in's hosts are this machine,
/// whose /dev/kvm (where there is one) runs no stock guest kernel, though
/// libvirt offers it (lab-notes: kvm_pvm).
fn suite_under_tcg(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join("suites/real-lab.yaml")).unwrap();
    assert!(text.contains("  accel: auto\n"));
    let path = dir.join("real-lab.yaml");
    std::fs::write(&path, text.replace("  accel: auto\n", "  accel: tcg\n")).unwrap();
    path
}

fn domains(host: u8) -> String {
    duct::cmd!(
        "ip",
        "netns",
        "exec",
        RUNNER_NAMESPACE,
        "virsh",
        "-c",
        format!("qemu+tcp://10.248.0.{host}/system"),
        "list",
        "--all",
        "--name"
    )
    .read()
    .unwrap()
}

#[test]
fn the_kvm_rows_run_on_hosts_migsuite_did_not_build() {
    let migsuite = env!("CARGO_BIN_EXE_migsuite");
    let dir = tempfile::tempdir().unwrap();
    let suite = suite_under_tcg(dir.path());
    let reports = dir.path().join("reports");
    let _lab = Standin::up(migsuite);
    let run = duct::cmd!(
        "ip",
        "netns",
        "exec",
        RUNNER_NAMESPACE,
        migsuite,
        "run",
        "--lab",
        INVENTORY,
        "--repeat",
        RUNS,
        "--report-dir",
        &reports,
        &suite
    )
    .dir(root())
    .stderr_to_stdout()
    .unchecked()
    .run()
    .unwrap();
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "migsuite run failed:\n{said}");

    let report = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a JSON report");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    let cases = report["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2, "kvm-fv and kvm-pv");
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let provenance = &case["provenance"];
        assert!(
            provenance["lab"].as_str().unwrap().contains("real hosts"),
            "{name}: {provenance}"
        );
        assert!(provenance["storage"]
            .as_str()
            .unwrap()
            .contains("copied with the guest"));
        // Nothing of the link measured: migsuite has no hand in it.
        assert!(case["calibration"]["goodput_mbit"].is_null());
        let runs = case["runs"].as_array().unwrap();
        let directions: Vec<&str> = runs
            .iter()
            .map(|r| r["direction"].as_str().unwrap())
            .collect();
        assert_eq!(directions, ["a->b", "b->a"], "{name}");
        for r in runs {
            assert_eq!(
                r["outcome"]["kind"], "completed",
                "{name}: {}",
                r["outcome"]
            );
            assert!(r["throughput_mbit"].as_f64().unwrap() > 0.0, "{name}");
            assert!(r["reported_downtime_ms"].as_f64().unwrap() > 0.0, "{name}");
            // The source's QEMU, as its libvirt tells, before the warning.
            let cpu = r["timelines"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == "cpu.source.hypervisor")
                .expect("the source's CPU timeline");
            assert!(
                cpu["points"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p[1].as_f64().unwrap() > 0.0),
                "{name}: {cpu}"
            );
        }
    }
    // Each case destroyed its guest, wherever it went.
    for host in [1, 2] {
        assert_eq!(domains(host).trim(), "", "host {host}");
    }
}
