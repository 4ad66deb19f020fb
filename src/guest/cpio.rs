//! A minimal writer of the newc cpio format the kernel unpacks as initramfs.

use std::io::{self, Write};

pub struct Newc<W: Write> {
    out: W,
    ino: u32,
}

impl<W: Write> Newc<W> {
    pub fn new(out: W) -> Self {
        Newc { out, ino: 1 }
    }

    pub fn dir(&mut self, path: &str) -> io::Result<()> {
        self.entry(path, 0o040755, &[], (0, 0))
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, 0o100000 | mode, data, (0, 0))
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.entry(path, 0o120777, target.as_bytes(), (0, 0))
    }

    pub fn char_device(&mut self, path: &str, major: u32, minor: u32) -> io::Result<()> {
        self.entry(path, 0o020600, &[], (major, minor))
    }

    /// Writes the trailer and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, &[], (0, 0))?;
        Ok(self.out)
    }

    fn entry(&mut self, path: &str, mode: u32, data: &[u8], rdev: (u32, u32)) -> io::Result<()> {
        let name_len = path.len() + 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name_len as u32,
            0,
        ];
        self.ino += 1;
        let mut header = String::from("070701");
        for f in fields {
            header.push_str(&format!("{f:08x}"));
        }
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(path.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + name_len)?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    fn pad(&mut self, written: usize) -> io::Result<()> {
        let n = (4 - written % 4) % 4;
        self.out.write_all(&[0u8; 3][..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_four_byte_aligned_and_end_with_trailer() {
        let mut w = Newc::new(Vec::new());
        w.dir("bin").unwrap();
        w.file("bin/x", 0o755, b"hello").unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("bin/x\0"));
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!"));
    }
}
