//! What every guest boots: kernel, and an initramfs around the workload agent.

mod cpio;
pub mod image;
