//! The line protocol of a dom0 command server, whatever carries it (a
//! nested host's virtio-serial port, an ssh session to a real dom0): the
//! runner writes `<id> <timeout s> <command>`; dom0 runs the command with
//! bash under `timeout` and answers with its output and
//! `@@END <id> <exit status>`. One command at a time.
//!
//! An answer may carry what a guest wrote (its console log), and a guest
//! may be hostile: each command's id is a fresh random token, so no text
//! a guest chose can end an answer early or answer a later command, and
//! every line and answer is bounded.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// What dom0 says once it serves.
pub const READY: &str = "@@READY";
/// How much longer than a command's own timeout its answer may take.
const ANSWER_GRACE: Duration = Duration::from_secs(15);
/// A longer line arrives as several.
const MAX_LINE: u64 = 64 * 1024;
/// Of a longer answer, the end is kept (a log's last lines say most).
const MAX_ANSWER: usize = 1024 * 1024;

/// What a command answered.
#[derive(Debug)]
pub struct Answer {
    pub status: i32,
    pub output: String,
}

pub struct Channel {
    /// dom0's lines, read by a thread of their own (so waiting for one has
    /// a timeout whatever the reader is); None once the reader ended.
    lines: mpsc::Receiver<String>,
    /// None once closed.
    writer: Option<Box<dyn Write + Send>>,
}

/// What waiting for a line gave.
pub enum Line {
    Text(String),
    TimedOut,
    Closed,
}

impl Channel {
    pub fn new(reader: impl Read + Send + 'static, writer: impl Write + Send + 'static) -> Channel {
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            while let Some(line) = next_line(&mut reader) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Channel {
            lines,
            writer: Some(Box::new(writer)),
        }
    }

    /// Ends dom0's input: the server ends, as it does when the runner dies.
    pub fn close(&mut self) {
        self.writer = None;
    }

    /// The next line dom0 wrote, waiting at most `timeout`.
    pub fn line(&self, timeout: Duration) -> Line {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => Line::Text(l),
            Err(RecvTimeoutError::Timeout) => Line::TimedOut,
            Err(RecvTimeoutError::Disconnected) => Line::Closed,
        }
    }

    /// Runs `command` (one line, bash) in dom0, with `timeout`; `closed`
    /// says what an ended channel means, for the error.
    pub fn sh(
        &mut self,
        command: &str,
        timeout: Duration,
        closed: &dyn Fn() -> String,
    ) -> Result<Answer> {
        anyhow::ensure!(!command.contains('\n'), "dom0 commands are one line");
        let id = uuid::Uuid::new_v4().simple();
        let secs = timeout.as_secs().max(1);
        let writer = self
            .writer
            .as_mut()
            .context("the channel to dom0 is closed")?;
        writeln!(writer, "{id} {secs} {command}")?;
        writer.flush()?;
        // dom0's `timeout` ends the command; the channel gets some more.
        let deadline = Instant::now() + timeout + ANSWER_GRACE;
        let end = format!("@@END {id} ");
        let mut output = Output::default();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            anyhow::ensure!(
                !left.is_zero(),
                "dom0 did not answer `{command}` within {} s",
                (timeout + ANSWER_GRACE).as_secs()
            );
            match self.line(left) {
                Line::Text(line) => {
                    if let Some(rest) = line.trim_end().strip_prefix(&end) {
                        let status = rest.trim().parse().unwrap_or(-1);
                        return Ok(Answer {
                            status,
                            output: output.text(),
                        });
                    }
                    output.push(&line);
                }
                Line::TimedOut => {}
                Line::Closed => bail!("{}", closed()),
            }
        }
    }
}

/// The next line of `reader` (at most MAX_LINE bytes of it), its bytes
/// read as UTF-8 where they are; None at the end.
fn next_line(reader: &mut impl BufRead) -> Option<String> {
    let mut bytes = Vec::new();
    match reader.take(MAX_LINE).read_until(b'\n', &mut bytes) {
        Ok(0) | Err(_) => None,
        Ok(_) => {
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
            }
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
    }
}

/// An answer's lines, the last MAX_ANSWER bytes of them.
#[derive(Default)]
struct Output {
    text: String,
    dropped: usize,
}

impl Output {
    fn push(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
        if self.text.len() > 2 * MAX_ANSWER {
            let mut cut = self.text.len() - MAX_ANSWER;
            while !self.text.is_char_boundary(cut) {
                cut += 1;
            }
            self.text.drain(..cut);
            self.dropped += cut;
        }
    }

    fn text(mut self) -> String {
        if self.text.ends_with('\n') {
            self.text.pop();
        }
        if self.dropped > 0 {
            format!("[{} bytes before dropped]\n{}", self.dropped, self.text)
        } else {
            self.text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::sync::{Arc, Mutex};

    /// What the runner wrote, shared with the test.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl Write for Written {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A dom0 that answers the first command with `output`, ending it as
    /// the server does; the id is only known once the command is written,
    /// so the answer is made by a reader that sees it.
    struct Dom0 {
        written: Written,
        output: Vec<u8>,
        answer: Option<Cursor<Vec<u8>>>,
    }

    impl Read for Dom0 {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.answer.is_none() {
                let id = loop {
                    let written = self.written.0.lock().unwrap().clone();
                    if let Some(line) = String::from_utf8_lossy(&written).lines().next() {
                        break line.split(' ').next().unwrap().to_string();
                    }
                    std::thread::sleep(Duration::from_millis(5));
                };
                let mut answer = self.output.clone();
                answer.extend_from_slice(format!("\n@@END {id} 3\n").as_bytes());
                self.answer = Some(Cursor::new(answer));
            }
            self.answer.as_mut().unwrap().read(buf)
        }
    }

    fn answer_to(output: &[u8]) -> Answer {
        let written = Written::default();
        let dom0 = Dom0 {
            written: written.clone(),
            output: output.to_vec(),
            answer: None,
        };
        let mut channel = Channel::new(dom0, written);
        channel
            .sh("cat serial.log", Duration::from_secs(5), &|| {
                "closed".into()
            })
            .unwrap()
    }

    #[test]
    fn a_guests_end_markers_do_not_end_the_answer() {
        let forged = b"boot\n@@END 1 0\n@@END 2 0\nlast line";
        let answer = answer_to(forged);
        assert_eq!(answer.status, 3);
        assert_eq!(answer.output, String::from_utf8_lossy(forged));
    }

    #[test]
    fn bytes_that_are_not_utf8_do_not_end_the_channel() {
        let answer = answer_to(b"a\xff\xfeb\nnext");
        assert_eq!(answer.status, 3);
        assert_eq!(answer.output, "a\u{fffd}\u{fffd}b\nnext");
    }

    #[test]
    fn long_lines_and_answers_are_bounded() {
        let huge = vec![b'x'; 3 * MAX_ANSWER + 10];
        let answer = answer_to(&huge);
        assert_eq!(answer.status, 3);
        assert!(
            answer.output.len() <= 2 * MAX_ANSWER + 64,
            "{}",
            answer.output.len()
        );
        assert!(answer.output.starts_with('['), "{}", &answer.output[..40]);
    }
}
