//! [`SendStream`] and [`RecvStream`]: the two sides of an application
//! stream, as `futures::io::AsyncWrite` / `AsyncRead` (and tokio's, with
//! the `tokio` feature). Each call goes straight to the node under the
//! shared lock; a call that cannot proceed leaves its waker and returns
//! `Pending`, and the node's readiness event wakes it (quinn's model, see
//! `quinn/src/send_stream.rs` and `recv_stream.rs`).
//!
//! Backpressure: a write takes only what the stream's and connection's
//! flow-control windows allow, so a slow reader makes the writer pending;
//! neither side buffers more than the QUIC windows.
//!
//! Dropping a `SendStream` finishes it (what was written is delivered);
//! dropping a `RecvStream` before its end stops it with code 0. Either way
//! the stream leaves every table once both sides are done.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use keynode_core::NodeId;
use keynode_core::net::{StreamError, StreamHandle};

use crate::now;
use crate::shared::Shared;

/// The sending side of a stream.
///
/// Besides its own methods (with typed [`StreamError`]s), it is a
/// `futures::io::AsyncWrite` (and tokio's, with the `tokio` feature), whose
/// errors are [`io_error`]s.
///
/// ```no_run
/// # async fn f(mut send: keynode_agent::SendStream) -> std::io::Result<()> {
/// use futures::io::AsyncWriteExt;
///
/// futures::io::copy(&b"hello"[..], &mut send).await?;
/// send.close().await?; // finishes the stream
/// # Ok(())
/// # }
/// ```
pub struct SendStream {
    shared: Shared,
    stream: StreamHandle,
    peer: NodeId,
    /// Finished or reset by us, or stopped by the peer: nothing more to do.
    done: bool,
}

/// The receiving side of a stream.
///
/// Besides its own methods (with typed [`StreamError`]s), it is a
/// `futures::io::AsyncRead` (and tokio's, with the `tokio` feature), whose
/// errors are [`io_error`]s.
///
/// ```no_run
/// # async fn f(mut recv: keynode_agent::RecvStream) -> std::io::Result<()> {
/// use futures::io::AsyncReadExt;
///
/// let mut magic = [0u8; 4];
/// recv.read_exact(&mut magic).await?;
/// let mut rest = String::new();
/// (&mut recv).take(1024).read_to_string(&mut rest).await?; // 1 KiB at most
/// # Ok(())
/// # }
/// ```
pub struct RecvStream {
    shared: Shared,
    stream: StreamHandle,
    peer: NodeId,
    /// Read to its end, reset by the peer, or stopped by us.
    done: bool,
}

impl SendStream {
    pub(crate) fn new(shared: Shared, stream: StreamHandle, peer: NodeId) -> Self {
        Self {
            shared,
            stream,
            peer,
            done: false,
        }
    }

    /// The stream.
    ///
    /// ```no_run
    /// # fn f(send: keynode_agent::SendStream) {
    /// let stream = send.handle();
    /// println!("{stream:?} on connection {:?}", stream.conn());
    /// # }
    /// ```
    pub fn handle(&self) -> StreamHandle {
        self.stream
    }

    /// The peer at the other end.
    ///
    /// ```no_run
    /// # fn f(send: keynode_agent::SendStream) {
    /// println!("writing to {}", send.peer());
    /// # }
    /// ```
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// Writes what flow control allows of `buf` (at least one byte), or
    /// waits until something fits.
    ///
    /// ```no_run
    /// # async fn f(mut send: keynode_agent::SendStream) -> Result<(), keynode_agent::AgentError> {
    /// // What `write` does: poll until flow control lets something in.
    /// let n = std::future::poll_fn(|cx| send.poll_write(cx, b"hello")).await?;
    /// assert!(n >= 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<Result<usize, StreamError>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut state = self.shared.lock();
        match state.node.write(now, self.stream, buf) {
            Ok(n) => {
                state.wake_loop();
                Poll::Ready(Ok(n))
            }
            Err(StreamError::Blocked) => {
                state.ready.wait_write(self.stream, cx.waker());
                Poll::Pending
            }
            Err(e) => {
                self.done = true;
                Poll::Ready(Err(e))
            }
        }
    }

    /// Writes what flow control allows of `buf`, waiting until something fits.
    ///
    /// ```no_run
    /// # async fn f(mut send: keynode_agent::SendStream) -> Result<(), keynode_agent::AgentError> {
    /// let mut buf: &[u8] = b"a message longer than the window";
    /// while !buf.is_empty() {
    ///     let n = send.write(buf).await?; // what fits now
    ///     buf = &buf[n..];
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn write(&mut self, buf: &[u8]) -> Result<usize, StreamError> {
        std::future::poll_fn(|cx| self.poll_write(cx, buf)).await
    }

    /// Writes all of `buf`.
    ///
    /// ```no_run
    /// # async fn f(mut send: keynode_agent::SendStream) -> Result<(), keynode_agent::AgentError> {
    /// send.write_all(b"hello").await?;
    /// send.finish()?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn write_all(&mut self, mut buf: &[u8]) -> Result<(), StreamError> {
        while !buf.is_empty() {
            let n = self.write(buf).await?;
            buf = buf.get(n..).unwrap_or_default();
        }
        Ok(())
    }

    /// Finishes the stream: the peer reads what was written, then its end.
    ///
    /// ```no_run
    /// # async fn f(mut send: keynode_agent::SendStream) -> Result<(), keynode_agent::AgentError> {
    /// send.write_all(b"request").await?;
    /// send.finish()?; // the peer reads "request", then the end
    /// assert!(send.finish().is_err()); // done already
    /// # Ok(())
    /// # }
    /// ```
    pub fn finish(&mut self) -> Result<(), StreamError> {
        if self.done {
            return Err(StreamError::Closed(self.stream));
        }
        self.done = true;
        let mut state = self.shared.lock();
        let result = state.node.finish(now(), self.stream);
        state.ready.forget_stream_writer(self.stream);
        state.wake_loop();
        result
    }

    /// Abandons the stream with an application error `code`: the peer's
    /// reads fail with [`StreamError::Reset`].
    ///
    /// ```no_run
    /// # async fn f(mut send: keynode_agent::SendStream) -> Result<(), keynode_agent::AgentError> {
    /// const CANCELLED: u32 = 1;
    /// send.reset(CANCELLED)?; // the peer's reads fail with `StreamError::Reset(1)`
    /// # Ok(())
    /// # }
    /// ```
    pub fn reset(&mut self, code: u32) -> Result<(), StreamError> {
        if self.done {
            return Err(StreamError::Closed(self.stream));
        }
        self.done = true;
        let mut state = self.shared.lock();
        let result = state.node.reset(now(), self.stream, code);
        state.ready.forget_stream_writer(self.stream);
        state.wake_loop();
        result
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.finish();
        }
        self.shared.lock().ready.forget_stream_writer(self.stream);
    }
}

impl RecvStream {
    pub(crate) fn new(shared: Shared, stream: StreamHandle, peer: NodeId) -> Self {
        Self {
            shared,
            stream,
            peer,
            done: false,
        }
    }

    /// The stream.
    ///
    /// ```no_run
    /// # fn f(recv: keynode_agent::RecvStream) {
    /// let stream = recv.handle();
    /// println!("{stream:?} on connection {:?}", stream.conn());
    /// # }
    /// ```
    pub fn handle(&self) -> StreamHandle {
        self.stream
    }

    /// The peer at the other end.
    ///
    /// ```no_run
    /// # fn f(recv: keynode_agent::RecvStream) {
    /// println!("reading from {}", recv.peer());
    /// # }
    /// ```
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// The next chunk of up to `max` bytes in order, `None` at the end, or
    /// waits for data.
    ///
    /// ```no_run
    /// # async fn f(mut recv: keynode_agent::RecvStream) -> Result<(), keynode_agent::AgentError> {
    /// // What `read_chunk` does: poll until data or the end arrives.
    /// let chunk = std::future::poll_fn(|cx| recv.poll_read_chunk(cx, 1024)).await?;
    /// if chunk.is_none() {
    ///     println!("the peer finished the stream");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, StreamError>> {
        if self.done {
            return Poll::Ready(Ok(None));
        }
        let mut state = self.shared.lock();
        match state.node.read(now, self.stream, max) {
            Ok(Some(bytes)) => {
                // Reading gives the peer credit: the loop sends it when
                // enough has been read to be worth a packet.
                if state.node.take_credit_due() {
                    state.wake_loop();
                }
                Poll::Ready(Ok(Some(bytes)))
            }
            // The stream's end frees it: the peer may open another, and
            // the connection's lease may go. Once per stream.
            Ok(None) => {
                self.done = true;
                state.ready.forget_stream_reader(self.stream);
                state.wake_loop();
                Poll::Ready(Ok(None))
            }
            Err(StreamError::Blocked) => {
                state.ready.wait_read(self.stream, cx.waker());
                Poll::Pending
            }
            Err(e) => {
                self.done = true;
                state.ready.forget_stream_reader(self.stream);
                state.wake_loop();
                Poll::Ready(Err(e))
            }
        }
    }

    /// The next chunk of up to `max` bytes, `None` at the end.
    ///
    /// ```no_run
    /// # async fn f(mut recv: keynode_agent::RecvStream) -> Result<(), keynode_agent::AgentError> {
    /// while let Some(chunk) = recv.read_chunk(64 * 1024).await? {
    ///     println!("{} bytes", chunk.len());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, StreamError> {
        std::future::poll_fn(|cx| self.poll_read_chunk(cx, max)).await
    }

    /// Reads into `buf`: the bytes read, 0 at the end.
    ///
    /// ```no_run
    /// # async fn f(mut recv: keynode_agent::RecvStream) -> Result<(), keynode_agent::AgentError> {
    /// let mut buf = [0u8; 1024];
    /// let n = recv.read(&mut buf).await?;
    /// println!("{:?}", &buf[..n]); // n == 0: the end
    /// # Ok(())
    /// # }
    /// ```
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize, StreamError> {
        std::future::poll_fn(|cx| poll_read_into(self, cx, buf)).await
    }

    /// Reads to the end, at most `limit` bytes (more is an error).
    ///
    /// ```no_run
    /// # async fn f(mut recv: keynode_agent::RecvStream) -> Result<(), keynode_agent::AgentError> {
    /// use keynode_agent::ReadToEndError;
    ///
    /// match recv.read_to_end(64 * 1024).await {
    ///     Ok(bytes) => println!("{} bytes", bytes.len()),
    ///     Err(ReadToEndError::TooLong { limit }) => eprintln!("over {limit} bytes: stopped"),
    ///     Err(ReadToEndError::Stream(e)) => return Err(e.into()),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, ReadToEndError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.read_chunk(64 * 1024).await? {
            if out.len() + chunk.len() > limit {
                let _ = self.stop(0);
                return Err(ReadToEndError::TooLong { limit });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Stops reading: the peer's writes fail with [`StreamError::Stopped`].
    ///
    /// ```no_run
    /// # async fn f(mut recv: keynode_agent::RecvStream) -> Result<(), keynode_agent::AgentError> {
    /// const NOT_INTERESTED: u32 = 1;
    /// recv.stop(NOT_INTERESTED)?; // the peer's writes fail with `StreamError::Stopped(1)`
    /// # Ok(())
    /// # }
    /// ```
    pub fn stop(&mut self, code: u32) -> Result<(), StreamError> {
        if self.done {
            return Err(StreamError::Closed(self.stream));
        }
        self.done = true;
        let mut state = self.shared.lock();
        let result = state.node.stop(now(), self.stream, code);
        state.ready.forget_stream_reader(self.stream);
        state.wake_loop();
        result
    }
}

/// Why [`RecvStream::read_to_end`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadToEndError {
    /// The stream failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The stream is longer than allowed (it was stopped).
    #[error("the stream is longer than {limit} bytes")]
    TooLong {
        /// The limit.
        limit: usize,
    },
}

fn poll_read_into(
    recv: &mut RecvStream,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<Result<usize, StreamError>> {
    if buf.is_empty() {
        return Poll::Ready(Ok(0));
    }
    match recv.poll_read_chunk(cx, buf.len()) {
        Poll::Ready(Ok(Some(chunk))) => {
            let n = chunk.len().min(buf.len());
            if let (Some(dst), Some(src)) = (buf.get_mut(..n), chunk.get(..n)) {
                dst.copy_from_slice(src);
            }
            Poll::Ready(Ok(n))
        }
        Poll::Ready(Ok(None)) => Poll::Ready(Ok(0)),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.stop(0);
        }
        self.shared.lock().ready.forget_stream_reader(self.stream);
    }
}

/// A stream failure as an I/O error of a fitting kind, the
/// [`StreamError`] as its source.
///
/// ```
/// use std::io::ErrorKind;
/// use keynode_agent::{StreamError, io_error};
///
/// let e = io_error(StreamError::Reset(7));
/// assert_eq!(e.kind(), ErrorKind::ConnectionReset);
/// let source = e.get_ref().and_then(|s| s.downcast_ref::<StreamError>());
/// assert!(matches!(source, Some(StreamError::Reset(7))));
/// ```
pub fn io_error(e: StreamError) -> io::Error {
    let kind = match e {
        StreamError::Blocked => io::ErrorKind::WouldBlock,
        StreamError::Reset(_) | StreamError::Refused(_) => io::ErrorKind::ConnectionReset,
        StreamError::Stopped(_) => io::ErrorKind::BrokenPipe,
        StreamError::Closed(_) => io::ErrorKind::NotConnected,
        StreamError::ConnectionLost(_) => io::ErrorKind::ConnectionAborted,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

impl futures::io::AsyncWrite for SendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        SendStream::poll_write(self.get_mut(), cx, buf).map_err(io_error)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are in the stream already; the loop sends them.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(Ok(()));
        }
        Poll::Ready(this.finish().map_err(io_error))
    }
}

impl futures::io::AsyncRead for RecvStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        poll_read_into(self.get_mut(), cx, buf).map_err(io_error)
    }
}

#[cfg(feature = "tokio")]
impl tokio::io::AsyncWrite for SendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        SendStream::poll_write(self.get_mut(), cx, buf).map_err(io_error)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures::io::AsyncWrite::poll_close(self, cx)
    }
}

#[cfg(feature = "tokio")]
impl tokio::io::AsyncRead for RecvStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match poll_read_into(this, cx, buf.initialize_unfilled()) {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(io_error(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}
