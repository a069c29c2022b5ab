//! The PROXY protocol (versions 1 and 2), with which a TCP load balancer in front of several
//! nodes tells each node the address a router really connects from. Without it every router would
//! appear to come from the balancer, which would blind connection history and clone detection.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use ppp::{HeaderResult, PartialResult, v1, v2};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The longest header accepted: a version 2 header with its addresses and a few TLVs. Anything
/// longer is not what a load balancer sends.
const MAX_HEADER_BYTES: usize = 1024;

/// Reads the PROXY header the load balancer sends first, and answers the stream positioned at the
/// first byte after it with the router's address. A connection without a valid header is refused:
/// with the protocol enabled, only the balancer may connect. A `LOCAL` header (the balancer's own
/// health check) keeps the balancer's address.
pub async fn accept(
    mut tcp: TcpStream,
    peer: SocketAddr,
) -> io::Result<(Rewind<TcpStream>, SocketAddr)> {
    let mut received = Vec::with_capacity(256);
    loop {
        let mut chunk = [0u8; 512];
        let read = tcp.read(&mut chunk).await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        received.extend_from_slice(&chunk[..read]);
        let parsed = HeaderResult::parse(&received);
        if parsed.is_incomplete() {
            if received.len() > MAX_HEADER_BYTES {
                return Err(invalid("the PROXY header is too long"));
            }
            continue;
        }
        let (length, source) = match parsed {
            HeaderResult::V1(Ok(header)) => (header.header.len(), v1_source(&header.addresses)),
            HeaderResult::V2(Ok(header)) => (header.len(), v2_source(&header)),
            _ => return Err(invalid("the connection did not start with a PROXY header")),
        };
        let rest = received.split_off(length);
        return Ok((Rewind::new(rest, tcp), source.unwrap_or(peer)));
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

fn v1_source(addresses: &v1::Addresses) -> Option<SocketAddr> {
    match addresses {
        v1::Addresses::Tcp4(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        v1::Addresses::Tcp6(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        v1::Addresses::Unknown => None,
    }
}

fn v2_source(header: &v2::Header<'_>) -> Option<SocketAddr> {
    if header.command == v2::Command::Local {
        return None;
    }
    match header.addresses {
        v2::Addresses::IPv4(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        v2::Addresses::IPv6(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        v2::Addresses::Unix(_) | v2::Addresses::Unspecified => None,
    }
}

/// A stream that first yields bytes already read from it.
pub struct Rewind<S> {
    pending: Vec<u8>,
    position: usize,
    inner: S,
}

impl<S> Rewind<S> {
    /// A stream with nothing read ahead.
    pub fn plain(inner: S) -> Self {
        Self::new(Vec::new(), inner)
    }

    fn new(pending: Vec<u8>, inner: S) -> Self {
        Self {
            pending,
            position: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.position < self.pending.len() {
            let available = &self.pending[self.position..];
            let taken = available.len().min(buf.remaining());
            buf.put_slice(&available[..taken]);
            self.position += taken;
            if self.position == self.pending.len() {
                self.pending = Vec::new();
                self.position = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// Sends `bytes` to a fresh connection and runs `accept` on the other end.
    async fn accepted(bytes: Vec<u8>) -> io::Result<(SocketAddr, Vec<u8>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let sender = tokio::spawn(async move {
            let mut client = TcpStream::connect(address).await.unwrap();
            client.write_all(&bytes).await.unwrap();
            client.shutdown().await.unwrap();
        });
        let (tcp, peer) = listener.accept().await.unwrap();
        let (mut stream, source) = accept(tcp, peer).await?;
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await?;
        sender.await.unwrap();
        Ok((source, rest))
    }

    #[tokio::test]
    async fn a_version_1_header_gives_the_routers_address_and_keeps_what_follows() {
        let (source, rest) =
            accepted(b"PROXY TCP4 198.51.100.7 10.0.0.1 40001 8443\r\n\x16\x03\x01hello".to_vec())
                .await
                .unwrap();
        assert_eq!(source, "198.51.100.7:40001".parse().unwrap());
        assert_eq!(rest, b"\x16\x03\x01hello");
    }

    #[tokio::test]
    async fn a_version_2_header_gives_the_routers_address() {
        let source: SocketAddr = "[2001:db8::7]:40002".parse().unwrap();
        let destination: SocketAddr = "[2001:db8::1]:8443".parse().unwrap();
        let mut bytes = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (source, destination),
        )
        .build()
        .unwrap();
        bytes.extend_from_slice(b"tls");
        let (seen, rest) = accepted(bytes).await.unwrap();
        assert_eq!(seen, source);
        assert_eq!(rest, b"tls");
    }

    #[tokio::test]
    async fn a_local_header_keeps_the_balancers_address() {
        let bytes = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Unspecified,
            v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        let (seen, rest) = accepted(bytes).await.unwrap();
        assert!(seen.ip().is_loopback());
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn a_connection_without_a_header_is_refused() {
        let error =
            accepted(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 a TLS ClientHello".to_vec())
                .await
                .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let error = accepted(b"PROXY".to_vec()).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
