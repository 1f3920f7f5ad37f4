//! `Stream`: the TCP stream a handler gets. For a source that must not send a PROXY header (an
//! untrusted one, on a listener that takes headers from trusted proxies) it watches the first
//! bytes the peer ever sends: if they are a PROXY signature, every read fails and the handler
//! ends the session; anything else is handed on unchanged. This catches such a header whenever
//! it arrives, with no delay before the greeting for clients that (as POP3 and LMTP clients must)
//! wait for it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::proxy::{self, Sniff};

/// A connection as handed to a handler: reads and writes go to the TCP stream.
#[derive(Debug)]
pub struct Stream {
    inner: TcpStream,
    first: First,
}

/// Where we are in looking at the peer's first bytes.
#[derive(Debug)]
enum First {
    /// Nothing to look at: bytes pass straight through.
    Direct,
    /// Reading the first bytes (up to the longest signature) to tell what they are.
    Checking {
        buf: [u8; proxy::V2_SIGNATURE.len()],
        len: usize,
        listener: &'static str,
        tcp_peer: SocketAddr,
    },
    /// The first bytes were not a signature: handing them out before reading more.
    Replaying {
        buf: [u8; proxy::V2_SIGNATURE.len()],
        pos: usize,
        len: usize,
    },
    /// The peer sent a PROXY header it may not send.
    Refused,
}

/// The error every read returns once a forbidden PROXY header was seen.
fn refused() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "PROXY header from an untrusted address",
    )
}

impl Stream {
    pub(crate) fn direct(inner: TcpStream) -> Stream {
        Stream {
            inner,
            first: First::Direct,
        }
    }

    /// A stream whose first bytes must not be a PROXY header (logged for `listener`).
    pub(crate) fn refusing_proxy(
        inner: TcpStream,
        listener: &'static str,
        tcp_peer: SocketAddr,
    ) -> Stream {
        Stream {
            inner,
            first: First::Checking {
                buf: [0; proxy::V2_SIGNATURE.len()],
                len: 0,
                listener,
                tcp_peer,
            },
        }
    }

    /// The TCP stream, e.g. for socket options.
    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.first {
                First::Direct => return Pin::new(&mut this.inner).poll_read(cx, out),
                First::Refused => return Poll::Ready(Err(refused())),
                First::Replaying { buf, pos, len } => {
                    let n = out.remaining().min(*len - *pos);
                    out.put_slice(&buf[*pos..*pos + n]);
                    *pos += n;
                    if *pos == *len {
                        this.first = First::Direct;
                    }
                    return Poll::Ready(Ok(()));
                }
                First::Checking {
                    buf,
                    len,
                    listener,
                    tcp_peer,
                } => {
                    let mut rb = ReadBuf::new(&mut buf[*len..]);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
                    let n = rb.filled().len();
                    *len += n;
                    let verdict = match proxy::sniff(&buf[..*len]) {
                        // The peer closed after a proper beginning of a signature: the handler
                        // gets those bytes, then the end of the stream.
                        Sniff::Undecided if n == 0 => Sniff::NotHeader,
                        verdict => verdict,
                    };
                    match verdict {
                        Sniff::Undecided => {}
                        Sniff::Header => {
                            tracing::info!(
                                listener = *listener,
                                tcp_peer = %tcp_peer,
                                "closing connection: PROXY header from an untrusted address"
                            );
                            this.first = First::Refused;
                        }
                        Sniff::NotHeader if *len == 0 => this.first = First::Direct,
                        Sniff::NotHeader => {
                            this.first = First::Replaying {
                                buf: *buf,
                                pos: 0,
                                len: *len,
                            };
                        }
                    }
                }
            }
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
