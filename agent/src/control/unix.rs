//! The control socket's listener and connections over a [`Runtime`]'s
//! readiness: std's Unix sockets, non-blocking, read and written here, so
//! that the server and the client are the same on every runtime.

use std::io::{self, Read, Write};
use std::os::unix::net;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};

use crate::runtime::{Interest, Runtime, io, poll_io};

/// A listening Unix socket.
pub(super) struct UnixListener<R: Runtime>(R::Io<net::UnixListener>);

impl<R: Runtime> UnixListener<R> {
    /// Registers `listener` (non-blocking) with the runtime.
    pub(super) fn new(listener: net::UnixListener) -> io::Result<Self> {
        R::register(listener).map(Self)
    }

    /// The next connection.
    pub(super) async fn accept(&self) -> io::Result<UnixStream<R>> {
        let (stream, _) = io::<R, _, _>(&self.0, Interest::Readable, |l| l.accept()).await?;
        UnixStream::new(stream)
    }
}

/// One end of a Unix stream connection. Clones are handles to the same
/// connection: one reads while another writes.
pub struct UnixStream<R: Runtime>(Arc<R::Io<net::UnixStream>>);

impl<R: Runtime> Clone for UnixStream<R> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<R: Runtime> UnixStream<R> {
    /// Registers `stream` with the runtime (it is made non-blocking).
    pub(super) fn new(stream: net::UnixStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        R::register(stream).map(|s| Self(Arc::new(s)))
    }

    /// Connects to the socket at `path`. A Unix socket's connect does not
    /// wait for the peer, only (briefly) for room in its backlog: that
    /// wait is on a blocking thread.
    pub(super) async fn connect(path: std::path::PathBuf) -> io::Result<Self> {
        let stream = R::spawn_blocking(move || net::UnixStream::connect(path)).await?;
        Self::new(stream)
    }
}

impl<R: Runtime> AsyncRead for UnixStream<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        poll_io::<R, _, _>(&self.0, cx, Interest::Readable, |s| (&*s).read(buf))
    }
}

impl<R: Runtime> AsyncWrite for UnixStream<R> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        poll_io::<R, _, _>(&self.0, cx, Interest::Writable, |s| (&*s).write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is buffered here: every write is a system call.
        Poll::Ready(Ok(()))
    }

    /// Shuts down the writing half: the peer reads the end of the stream.
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(R::get_ref(&self.0).shutdown(std::net::Shutdown::Write))
    }
}
