//! Where the single-node connection connects, and the handshake that
//! introduces it (AUTH with a password or an ACL user, SELECT of a database)
//! before any caller's command is written — kept apart from the pipelining
//! in `pipelined`, which only moves bytes once a connection is made.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use redis::RedisResult;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::resp;

/// How long one address may take to connect before the next one is tried
/// beside it (RFC 8305's recommended delay).
const NEXT_ADDRESS_AFTER: Duration = Duration::from_millis(250);

/// Where to connect and how to introduce ourselves.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) db: i64,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

impl Endpoint {
    /// The endpoint of `client`, when this connection can serve it: plain
    /// TCP and RESP2 (TLS, Unix sockets and RESP3 stay with redis-rs).
    pub(crate) fn of(client: &redis::Client) -> Option<Self> {
        let info = client.get_connection_info();
        let redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
            return None;
        };
        let settings = info.redis_settings();
        if settings.protocol() != redis::ProtocolVersion::RESP2 {
            return None;
        }
        Some(Self {
            host: host.clone(),
            port: *port,
            db: settings.db(),
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
        })
    }
}

/// Open a TCP connection and introduce ourselves (AUTH, SELECT).
pub(super) async fn open(endpoint: &Endpoint) -> RedisResult<(OwnedReadHalf, OwnedWriteHalf)> {
    let addresses: Vec<SocketAddr> =
        tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
            .await?
            .collect();
    let mut stream = connect_first(&addresses, NEXT_ADDRESS_AFTER).await?;
    stream.set_nodelay(true)?;
    let mut hello = Vec::new();
    let mut expect = 0;
    if let Some(password) = &endpoint.password {
        let mut auth = redis::cmd("AUTH");
        if let Some(user) = &endpoint.username {
            auth.arg(user);
        }
        auth.arg(password).write_packed_command(&mut hello);
        expect += 1;
    }
    if endpoint.db != 0 {
        redis::cmd("SELECT")
            .arg(endpoint.db)
            .write_packed_command(&mut hello);
        expect += 1;
    }
    if expect > 0 {
        stream.write_all(&hello).await?;
        let mut buf = Vec::with_capacity(256);
        while expect > 0 {
            match resp::parse(&buf)? {
                Some((value, used)) => {
                    buf.drain(..used);
                    // The server's own error (WRONGPASS, NOAUTH, a refused SELECT).
                    value.extract_error()?;
                    expect -= 1;
                }
                None => {
                    if stream.read_buf(&mut buf).await? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "redis closed the connection while it was being made",
                        )
                        .into());
                    }
                }
            }
        }
    }
    Ok(stream.into_split())
}

/// Connect to the first of `addresses` that accepts. They are tried in
/// order, but one that has not connected within `stagger` does not hold up
/// the next: it is tried beside it (Happy Eyeballs, RFC 8305). A name that
/// resolves to an address nothing answers at — an IPv6 address the network
/// drops, a host gone — then costs `stagger`, not the whole connect timeout
/// on every attempt (which is what trying them one after another costs).
async fn connect_first(addresses: &[SocketAddr], stagger: Duration) -> io::Result<TcpStream> {
    let mut untried = addresses.iter().copied();
    let mut attempts = FuturesUnordered::new();
    let Some(first) = untried.next() else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the redis host name resolved to no address",
        ));
    };
    attempts.push(TcpStream::connect(first));
    loop {
        tokio::select! {
            Some(attempt) = attempts.next() => match attempt {
                Ok(stream) => return Ok(stream),
                Err(err) => match untried.next() {
                    Some(next) => attempts.push(TcpStream::connect(next)),
                    None if attempts.is_empty() => return Err(err),
                    None => {}
                },
            },
            () = tokio::time::sleep(stagger), if untried.len() > 0 => {
                if let Some(next) = untried.next() {
                    attempts.push(TcpStream::connect(next));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use tokio::net::{TcpListener, TcpSocket, TcpStream};

    use super::connect_first;

    /// A loopback address that takes no connection and refuses none, as a
    /// host gone or a filtered address does: a listener with a zero backlog
    /// whose one queue place is taken drops further SYNs. Both are kept
    /// alive by the caller.
    async fn unanswering() -> (TcpListener, TcpStream, SocketAddr) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = socket.local_addr().unwrap();
        let listener = socket.listen(0).unwrap();
        let queued = TcpStream::connect(address).await.unwrap();
        (listener, queued, address)
    }

    #[tokio::test]
    async fn an_address_that_never_answers_does_not_hold_up_the_next() {
        let (_listener, _queued, dead) = unanswering().await;
        // The blackhole holds: a connection to it alone is still waiting.
        let alone =
            tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(dead)).await;
        assert!(
            alone.is_err(),
            "the unanswering address answered: {alone:?}"
        );

        let live = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_address = live.local_addr().unwrap();
        let started = Instant::now();
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            connect_first(&[dead, live_address], Duration::from_millis(50)),
        )
        .await
        .expect("connected within 5 s")
        .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), live_address);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn refused_addresses_are_passed_over_at_once_and_the_last_error_returned() {
        // A port bound and closed again: connections to it are refused.
        let refused = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let live = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_address = live.local_addr().unwrap();
        let stream = connect_first(&[refused, live_address], Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), live_address);

        let err = connect_first(&[refused], Duration::from_secs(60))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        let err = connect_first(&[], Duration::from_secs(60))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
