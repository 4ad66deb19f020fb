//! TCP goodput between a built-in sender and a counting receiver, so that
//! what a path carries depends on nothing but the path: a simulated lab's
//! calibration of its link, and the host agents' measurement of a real
//! lab's migration network (`crate::host_agent::probe`).

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Bytes received before this much time has passed are not counted: TCP's
/// slow start and a token bucket's initial burst.
pub const WARM_UP: Duration = Duration::from_millis(100);
pub const MEASURE: Duration = Duration::from_millis(1000);
/// How long a receiver waits for the next bytes before it takes the path
/// as stalled.
const STALL: Duration = Duration::from_secs(2);
/// The most a sender sends for: its receiver closes after its window, and
/// a sender whose receiver went away stops.
pub const SEND_AT_MOST: Duration = WARM_UP
    .saturating_add(MEASURE)
    .saturating_add(Duration::from_secs(5));

/// Mbit/s of `bytes` over `elapsed`.
pub fn mbit(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e6
}

/// Writes until the receiver closes, or for at most `SEND_AT_MOST`.
pub fn send(mut stream: TcpStream) {
    let chunk = vec![0x5au8; 64 << 10];
    let deadline = Instant::now() + SEND_AT_MOST;
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    while Instant::now() < deadline && stream.write_all(&chunk).is_ok() {}
}

/// What a receiver counted over its window: the payload, the time it took,
/// and a counter of the path (the bytes on a link) read when the window
/// opened and when it closed.
#[derive(Debug)]
pub struct Window<C> {
    pub bytes: u64,
    pub elapsed: Duration,
    pub opened: C,
    pub closed: C,
}

impl<C> Window<C> {
    pub fn goodput_mbit(&self) -> f64 {
        mbit(self.bytes, self.elapsed)
    }
}

/// Counts what `stream` carries for `MEASURE` after `WARM_UP`, reading
/// `counter` as the window opens and closes.
pub fn receive<C>(
    stream: &mut TcpStream,
    mut counter: impl FnMut() -> Result<C>,
) -> Result<Window<C>> {
    stream.set_read_timeout(Some(STALL))?;
    let mut buf = vec![0u8; 256 << 10];
    let mut first: Option<Instant> = None;
    let (mut counted, mut window_start) = (0u64, None);
    let began = Instant::now();
    let mut opened = counter()?;
    loop {
        let n = match stream.read(&mut buf) {
            // A path that stalls (MTU 68: the sender's minimum MSS does not
            // fit) carries next to nothing: that is its goodput.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                let since = window_start.unwrap_or(began);
                return window(counted, since, opened, &mut counter);
            }
            r => r.context("reading the measurement's stream")?,
        };
        if n == 0 {
            bail!("the sender closed the connection early");
        }
        let now = Instant::now();
        let since = now - *first.get_or_insert(now);
        if since < WARM_UP {
            continue;
        }
        // The read that opens the window carries bytes from before it.
        let Some(start) = window_start else {
            opened = counter()?;
            window_start = Some(Instant::now());
            continue;
        };
        counted += n as u64;
        if now - start >= MEASURE {
            return window(counted, start, opened, &mut counter);
        }
    }
}

fn window<C>(
    bytes: u64,
    since: Instant,
    opened: C,
    counter: &mut impl FnMut() -> Result<C>,
) -> Result<Window<C>> {
    let elapsed = since.elapsed();
    Ok(Window {
        bytes,
        elapsed,
        opened,
        closed: counter()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_receiver_counts_its_window_and_reads_the_counter_at_both_ends() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        let sender = std::thread::spawn(move || send(TcpStream::connect(to).unwrap()));
        let (mut stream, _) = listener.accept().unwrap();
        let mut reads = 0;
        let window = receive(&mut stream, || {
            reads += 1;
            Ok(reads)
        })
        .unwrap();
        drop(stream);
        sender.join().unwrap();
        assert!(window.bytes > 0 && window.goodput_mbit() > 0.0);
        assert!(window.elapsed >= MEASURE, "{window:?}");
        // One before the warm-up, one as the window opens, one as it closes.
        assert_eq!((window.opened, window.closed), (2, 3));
    }

    #[test]
    fn a_stalled_path_carries_what_it_carried() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        // Connected, and sends nothing until the receiver gives up.
        let idle = TcpStream::connect(to).unwrap();
        let (mut stream, _) = listener.accept().unwrap();
        let window = receive(&mut stream, || Ok(())).unwrap();
        assert_eq!(window.bytes, 0);
        assert!(window.elapsed >= STALL);
        drop(idle);
    }
}
