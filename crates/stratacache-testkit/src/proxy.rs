//! A TCP proxy in front of a server that can slow the link down, for tests
//! of a Redis that is slow rather than gone.
//!
//! Every chunk of bytes, in either direction, is held back for the current
//! delay before it is forwarded, so a request/response round trip costs
//! twice the delay more. The delay can be changed at any time and applies to
//! chunks read after the change; connections stay open throughout. Plain
//! threads, no async runtime: it works under any test harness.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// A delaying proxy on `127.0.0.1:<port>` to `127.0.0.1:<upstream>`.
#[derive(Debug)]
pub struct DelayProxy {
    port: u16,
    delay_us: Arc<AtomicU64>,
    stopped: Arc<AtomicBool>,
    /// While set, open connections are closed and new ones refused: the
    /// server looks down from behind the proxy.
    cut: Arc<AtomicBool>,
}

impl DelayProxy {
    /// Listen on a free loopback port and forward to `upstream_port`,
    /// without delay until [`set_delay`](Self::set_delay).
    pub fn start(upstream_port: u16) -> std::io::Result<DelayProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let delay_us = Arc::new(AtomicU64::new(0));
        let stopped = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        {
            let link = Link {
                delay_us: delay_us.clone(),
                stopped: stopped.clone(),
                cut: cut.clone(),
            };
            thread::Builder::new()
                .name(format!("delay-proxy-{port}"))
                .spawn(move || accept_loop(listener, upstream_port, link))?;
        }
        Ok(DelayProxy {
            port,
            delay_us,
            stopped,
            cut,
        })
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Close every open connection and refuse new ones (`true`), or let
    /// connections through again (`false`).
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::Release);
    }

    /// Hold every chunk back this long from now on (zero: forward at once).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_us
            .store(delay.as_micros() as u64, Ordering::Release);
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Release);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// What every connection of one proxy shares.
#[derive(Clone)]
struct Link {
    delay_us: Arc<AtomicU64>,
    stopped: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
}

impl Link {
    fn closing(&self) -> bool {
        self.stopped.load(Ordering::Acquire) || self.cut.load(Ordering::Acquire)
    }
}

fn accept_loop(listener: TcpListener, upstream_port: u16, link: Link) {
    for client in listener.incoming() {
        if link.stopped.load(Ordering::Acquire) {
            return;
        }
        let Ok(client) = client else { continue };
        if link.cut.load(Ordering::Acquire) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let pairs = [
            (client.try_clone(), upstream.try_clone()),
            (upstream.try_clone(), client.try_clone()),
        ];
        for pair in pairs {
            if let (Ok(from), Ok(to)) = pair {
                let link = link.clone();
                let _ = thread::Builder::new()
                    .name("delay-proxy-pipe".into())
                    .spawn(move || pipe(from, to, &link));
            }
        }
    }
}

/// Copy `from` to `to`, holding each chunk back for the current delay; the
/// read times out now and then so a cut is noticed on idle connections.
fn pipe(mut from: TcpStream, mut to: TcpStream, link: &Link) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if link.closing() {
            break;
        }
        let n = match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        let delay = link.delay_us.load(Ordering::Acquire);
        if delay > 0 {
            thread::sleep(Duration::from_micros(delay));
        }
        if link.closing() || to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn forwards_both_ways_and_delays_when_asked() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let echo_port = echo.local_addr().unwrap().port();
        thread::spawn(move || {
            for stream in echo.incoming() {
                let mut stream = stream.unwrap();
                thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = DelayProxy::start(echo_port).unwrap();
        let mut conn = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        let round_trip = |conn: &mut TcpStream| {
            let started = Instant::now();
            conn.write_all(b"ping").unwrap();
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"ping");
            started.elapsed()
        };
        round_trip(&mut conn);
        proxy.set_delay(Duration::from_millis(100));
        assert!(round_trip(&mut conn) >= Duration::from_millis(200));
        proxy.set_delay(Duration::ZERO);
        round_trip(&mut conn);
        proxy.set_cut(true);
        let mut buf = [0u8; 4];
        let _ = conn.write_all(b"ping");
        assert!(
            matches!(conn.read(&mut buf), Ok(0) | Err(_)),
            "cut closes open connections"
        );
        proxy.set_cut(false);
        let mut again = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        round_trip(&mut again);
    }
}
