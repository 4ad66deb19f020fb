//! The guest image: the Debian kernel that ci/setup.sh unpacked, and an
//! initramfs whose init is the workload agent, with busybox for module
//! loading and network set-up and the kernel modules of every device model.

use super::cpio::Newc;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The agent binary, built by build.rs.
pub(crate) const AGENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/migsuite-agent"));
const BUSYBOX: &str = "/bin/busybox";

/// Drivers of both device models: e1000 and IDE (kvm-fv), virtio (kvm-pv).
/// Dependencies are resolved from modules.dep.
const MODULES: [&str; 6] = [
    "e1000",
    "ata_piix",
    "sd_mod",
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
];

/// Where ci/setup.sh puts what guests boot from.
pub fn artifacts_dir() -> PathBuf {
    std::env::var_os("MIGSUITE_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/lib/migsuite".into())
}

#[derive(Clone, Debug)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Release of the guest kernel, e.g. "6.1.0-56-amd64".
    pub kernel_release: String,
}

impl GuestImage {
    /// The image for this build of the agent, made once and cached.
    pub fn prepare() -> Result<GuestImage> {
        Self::prepare_with(&[])
    }

    /// Like `prepare`, with `extra_modules` loaded after those of MODULES
    /// (e.g. xen_netfront for Xen guests).
    pub fn prepare_with(extra_modules: &[&str]) -> Result<GuestImage> {
        let dir = artifacts_dir().join("kernel");
        let kernel = dir.join("vmlinuz");
        let release = fs::read_to_string(dir.join("RELEASE"))
            .with_context(|| format!("no guest kernel in {} (run ci/setup.sh)", dir.display()))?
            .trim()
            .to_string();
        let modules_dir = dir.join("lib/modules").join(&release);
        let names: Vec<&str> = MODULES.iter().chain(extra_modules).copied().collect();
        let modules = load_order(&modules_dir, &names)?;
        let busybox = fs::read(BUSYBOX)
            .with_context(|| format!("{BUSYBOX} missing (install busybox-static)"))?;

        let mut hash = Sha256::new();
        hash.update(AGENT);
        hash.update(&busybox);
        hash.update(release.as_bytes());
        if !extra_modules.is_empty() {
            hash.update(extra_modules.join(",").as_bytes());
        }
        let initrd = cached("initrd", hash);
        if !initrd.exists() {
            fs::create_dir_all(initrd.parent().unwrap())?;
            let tmp = temp_beside(&initrd);
            write_initramfs(&tmp, &busybox, &modules_dir, &modules)?;
            fs::rename(&tmp, &initrd)?;
        }
        Ok(GuestImage {
            kernel,
            initrd,
            kernel_release: release,
        })
    }
}

/// Module files (relative to `modules_dir`) in an order that loads every
/// dependency first.
pub(crate) fn load_order(modules_dir: &Path, names: &[&str]) -> Result<Vec<String>> {
    let dep_file = modules_dir.join("modules.dep");
    let text =
        fs::read_to_string(&dep_file).with_context(|| format!("reading {}", dep_file.display()))?;
    let deps: BTreeMap<&str, Vec<&str>> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| (m, d.split_whitespace().collect()))
        .collect();
    let by_name = |name: &str| {
        deps.keys().copied().find(|path| {
            let file = path.rsplit('/').next().unwrap_or(path);
            file.strip_suffix(".ko").map(|f| f.replace('-', "_")) == Some(name.to_string())
        })
    };
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    fn visit<'a>(
        m: &'a str,
        deps: &BTreeMap<&'a str, Vec<&'a str>>,
        seen: &mut HashSet<&'a str>,
        order: &mut Vec<String>,
    ) {
        if !seen.insert(m) {
            return;
        }
        for d in deps.get(m).into_iter().flatten() {
            visit(d, deps, seen, order);
        }
        order.push(m.to_string());
    }
    for &name in names {
        match by_name(name) {
            Some(path) => visit(path, &deps, &mut seen, &mut order),
            None => bail!(
                "module {name} not in {} (built in? then drop it from MODULES)",
                dep_file.display()
            ),
        }
    }
    Ok(order)
}

fn write_initramfs(
    out: &Path,
    busybox: &[u8],
    modules_dir: &Path,
    modules: &[String],
) -> Result<()> {
    let gz = flate2::write::GzEncoder::new(fs::File::create(out)?, flate2::Compression::fast());
    let mut cpio = Newc::new(gz);
    for d in ["bin", "dev", "etc", "proc", "sys", "lib", "lib/modules"] {
        cpio.dir(d)?;
    }
    // The kernel opens /dev/console for init before anything is mounted.
    cpio.char_device("dev/console", 5, 1)?;
    cpio.file("init", 0o755, AGENT)?;
    cpio.file("bin/busybox", 0o755, busybox)?;
    let mut order = String::new();
    for m in modules {
        let name = m.rsplit('/').next().unwrap();
        cpio.file(
            &format!("lib/modules/{name}"),
            0o644,
            &fs::read(modules_dir.join(m))?,
        )?;
        order.push_str(&format!("/lib/modules/{name}\n"));
    }
    cpio.file("etc/modules.order", 0o644, order.as_bytes())?;
    cpio.finish()?.finish()?.flush()?;
    Ok(())
}

/// A temporary file beside `path`, to be renamed onto it: a name of its
/// own, since labs of several pairs may build one cached image at once.
pub fn temp_beside(path: &Path) -> PathBuf {
    path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()))
}

/// What names a file by its content: the first 8 bytes of `hash`, hex.
pub fn content_key(hash: Sha256) -> String {
    hash.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where an image built from what `hash` has seen is kept:
/// `<artifacts>/cache/<name>-<first 8 bytes of the hash, hex>.cpio.gz`.
pub fn cached(name: &str, hash: Sha256) -> PathBuf {
    let key = content_key(hash);
    artifacts_dir()
        .join("cache")
        .join(format!("{name}-{key}.cpio.gz"))
}
