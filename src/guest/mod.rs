//! What every guest boots: kernel, and an initramfs around the workload agent.

pub(crate) mod cpio;
pub mod image;
