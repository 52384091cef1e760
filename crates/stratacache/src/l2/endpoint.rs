//! Where the single-node connection connects, and the handshake that
//! introduces it (AUTH with a password or an ACL user, SELECT of a database)
//! before any caller's command is written — kept apart from the pipelining
//! in `pipelined`, which only moves bytes once a connection is made.

use std::io;

use redis::RedisResult;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::resp;

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
    let mut stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
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
